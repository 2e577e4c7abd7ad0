"""MTAN's NYUv2-13 SegNets (Liu et al., CVPR 2019): split, dense, STAN and MTAN-SegNet.

Written from the architectures MTAN's ``im2im_pred`` scripts define, layer for layer, so that the
parameter counts (and state layouts, up to names) match: a SegNet encoder-decoder with filters
64-128-256-512-512 (``wide``: 1024 last; ``deep``: two convolutions per block), max-pooling with
indices and unpooling, and per task a prediction block (3×3 then 1×1 convolution, no norm).

- ``segnet``: the shared SegNet with one prediction block per task (MTAN's "split, standard").
  With one task it is MTAN's single-task SegNet; ``stl`` with ``model.options.per_task=segnet``
  gives the single-task references.
- ``mtan``: MTAN-SegNet, the shared SegNet plus per-task soft-attention modules on every
  encoder and decoder level (1×1 conv-BN-ReLU-1×1 conv-BN-sigmoid masks applied to the shared
  features), with the 3×3 blocks between attention levels (``encoder_block_att`` /
  ``decoder_block_att``) shared by the tasks.
- ``stan``: MTAN's single-task attention network (``model_segnet_stan.py``): MTAN-SegNet for one
  task (the shared SegNet, one attention branch, one prediction block), 38,185,805 parameters for
  13-class segmentation. It takes one task (``max_tasks=1``); ``stl`` with
  ``model.options.per_task=stan`` gives one per task, the STAN row of MTAN's table.
- ``segnet_dense``: MTAN's "dense" soft sharing (``model_segnet_dense.py``): a shared SegNet plus
  a full SegNet per task. Each task's encoder level i > 0 reads its own pooled map of level i − 1
  concatenated with the shared one, each decoder level its own unpooled map (unpooled with its own
  indices) concatenated with the shared decoder's unpooled map of that level. That script builds
  its SegNets differently from the others: VGG-16's blocks (two 3×3 conv-BN-ReLU at the first two
  levels, three at the others; no ``conv_block_enc`` / ``conv_block_dec``), and Xavier-uniform
  initialisation. The shared decoder's last block (64 → 64 → 13 channels, MTAN's class count)
  feeds nothing — the tasks read the shared decoder's unpooled maps, not its outputs — but is
  kept so that the count is the script's (123,743,992 for 13-class segmentation, depth and
  normals; the script prints 123,743,995 = 4.95 × the single-task SegNet, with ``logsigma``); it
  is not run, and its parameters do not require gradients (so optimisers and DDP skip them;
  ``scenemtl info`` lists them as reached by no task).

Checked against the scripts' classes with their weights copied in (state dicts align key for key,
up to task names): the same outputs after log-softmax / L2 normalisation, for ``stan`` (each
``--task``) and ``segnet_dense``.

Differences from the scripts, none of which changes a parameter: the task heads output logits
(the tasks apply log-softmax / L2 normalisation in their losses and predictions); unpooling and
the decoder attention's upsampling take the encoder's sizes, so inputs need not be multiples of
32 (identical results when they are, e.g. 288×384); ``uncertainty`` weighting lives in the
balancer, not in the model (MTAN's ``logsigma``: the multi-task scripts print 3 more parameters);
``segnet_dense`` takes any number of tasks (the script hard-codes three) and does not compute the
unused block (the script does, and discards it); a prediction block whose 1×1 narrows the channels
runs as one convolution with the two layers' composed weights (``layers.ConvPointwise``: the same
function and gradients up to float rounding, a fifth of the head's work for 13 classes; the same
parameters); on a CPU the 3×3 convolutions with 128 channels or more in and out run by
Winograd's F(4×4, 3×3), F(2×2, 3×3) on small maps (``layers.winograd.Conv3x3``, also the same function up to
float rounding). ``filters`` (five channel counts) narrows the networks for tests and CPU trials; it is
not a paper setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError, ScenemtlError
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import ConvPointwise, conv_norm_act, mtan_attention
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task

Variant = Literal["standard", "wide", "deep"]
#: MTAN's other SegNet baselines, registered as architectures of their own: ``segnet``'s
#: ``variant`` accepts their names only to say so
ELSEWHERE = {"dense": "segnet_dense", "stan": "stan", "mtan": "mtan"}

#: the channels of the dense script's unused last shared decoder block (its ``class_nb``)
DENSE_UNUSED_CHANNELS = 13


def _filters(variant: Variant, filters: Sequence[int] | None = None) -> list[int]:
    if filters is not None:
        if len(filters) != 5 or any(int(c) < 1 for c in filters):
            raise ConfigError(f"model.options.filters must be five positive channel counts, got {list(filters)}")
        return [int(c) for c in filters]
    return [64, 128, 256, 512, 1024] if variant == "wide" else [64, 128, 256, 512, 512]


def conv_block(cin: int, cout: int, deep: bool = False) -> nn.Sequential:
    """3×3 conv (with bias)-BN-ReLU (twice when ``deep``), one flat Sequential."""
    if not deep:
        return conv_norm_act(cin, cout, 3, bias=True)
    return nn.Sequential(*conv_norm_act(cin, cout, 3, bias=True), *conv_norm_act(cout, cout, 3, bias=True))


def conv_stack(channels: Sequence[int]) -> nn.Sequential:
    """3×3 conv (with bias)-BN-ReLU from ``channels[0]`` through each following count, one flat
    Sequential: the dense script's two- and three-convolution blocks (VGG-16's)."""
    return nn.Sequential(*(layer for cin, cout in zip(channels, channels[1:]) for layer in conv_norm_act(cin, cout, 3, bias=True)))


def unpool(x: torch.Tensor, indices: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Max-unpooling by 2 to ``size`` (the size before pooling, so odd sizes come back exactly)."""
    if torch.jit.is_tracing():  # export: unpooling checks its size as Python ints (so the error names the operator)
        size = torch.Size(int(s) for s in size)
    return F.max_unpool2d(x, indices, 2, 2, output_size=size)


def check_input_size(x: torch.Tensor) -> None:
    """ScenemtlError unless both sides survive SegNet's five poolings."""
    if min(x.shape[-2:]) < 32:
        raise ScenemtlError(f"SegNet pools five times by 2: inputs must be at least 32×32 pixels, got {tuple(x.shape[-2:])}")


def prediction_block(channels: int, out_channels: int) -> nn.Sequential:
    """MTAN's task head: 3×3 conv then 1×1 conv to the task's outputs (run as one composed convolution where that is
    cheaper: ``layers.ConvPointwise``)."""
    return ConvPointwise(nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, out_channels, 1))


def init_like_mtan(module: nn.Module, uniform: bool = False) -> None:
    """Xavier-normal convolutions with zero bias; BN weight 1, bias 0 (MTAN's initialisation).

    ``uniform``: Xavier-uniform instead, as MTAN's cross-stitch script (``model_segnet_cross.py``).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            (nn.init.xavier_uniform_ if uniform else nn.init.xavier_normal_)(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SegNetTrunk(nn.Module):
    """The SegNet encoder-decoder; ``forward`` returns every level's features for attention modules."""

    def __init__(self, variant: Variant = "standard", filters: Sequence[int] | None = None) -> None:
        super().__init__()
        f, deep = _filters(variant, filters), variant == "deep"
        self.filters = f
        self.encoder_block = nn.ModuleList([conv_block(3, f[0], deep)] + [conv_block(f[i], f[i + 1], deep) for i in range(4)])
        self.decoder_block = nn.ModuleList([conv_block(f[0], f[0], deep)] + [conv_block(f[i + 1], f[i], deep) for i in range(4)])
        self.conv_block_enc = nn.ModuleList([conv_block(f[0], f[0], deep), conv_block(f[1], f[1], deep)])
        self.conv_block_dec = nn.ModuleList([conv_block(f[0], f[0], deep), conv_block(f[0], f[0], deep)])
        for i in range(1, 4):
            self.conv_block_enc.append(nn.Sequential(conv_block(f[i + 1], f[i + 1], deep), conv_block(f[i + 1], f[i + 1], deep)))
            self.conv_block_dec.append(nn.Sequential(conv_block(f[i], f[i], deep), conv_block(f[i], f[i], deep)))

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Encoder features before/after each level's second block, unpooled maps and decoder outputs."""
        check_input_size(x)
        first, second, sizes, indices = [], [], [], []
        for i in range(5):
            first.append(self.encoder_block[i](x))
            second.append(self.conv_block_enc[i](first[-1]))
            sizes.append(second[-1].shape[-2:])
            x, index = F.max_pool2d(second[-1], 2, 2, return_indices=True)
            indices.append(index)
        upsampled, decoded = [], []
        for i in range(5):
            level = 4 - i
            x = unpool(x, indices[level], sizes[level])
            upsampled.append(x)
            x = self.conv_block_dec[level](self.decoder_block[level](x))
            decoded.append(x)
        return {"first": first, "second": second, "upsampled": upsampled, "decoded": decoded}


class _SegNetModel(MultiTaskModel):
    """What both SegNet models share: ``heads`` of prediction blocks whose last convolution gives the logits."""

    heads: nn.ModuleDict

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """The last convolution of each task's prediction block."""
        return {name: [head[-1]] for name, head in self.heads.items()}


class SegNetSplit(_SegNetModel):
    """Shared SegNet, one prediction block per task (MTAN's "split, standard"; one task: single-task SegNet)."""

    def __init__(
        self, config: ModelConfig, tasks: Mapping[str, Task], variant: Variant = "standard", filters: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.trunk = SegNetTrunk(variant, filters)
        self.heads = nn.ModuleDict({name: prediction_block(self.trunk.filters[0], task.out_channels) for name, task in tasks.items()})
        init_like_mtan(self)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The trunk's last decoded map (at the input size)."""
        return (self.trunk(image)["decoded"][-1],)

    def decode(self, shared: Sequence[torch.Tensor], size: Sequence[int]) -> ModelOutput:
        """Every task's logits (the trunk decodes to the input size)."""
        return ModelOutput(final={name: head(shared[0]) for name, head in self.heads.items()})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The SegNet trunk."""
        return list(self.trunk.parameters())


class MTANSegNet(_SegNetModel):
    """MTAN-SegNet: the shared SegNet and per-task attention masks on all ten levels."""

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], filters: Sequence[int] | None = None) -> None:
        super().__init__()
        self.trunk = SegNetTrunk("standard", filters)
        f = self.trunk.filters
        # shared by the tasks: the 3×3 blocks between attention levels
        self.encoder_block_att = nn.ModuleList([conv_block(f[i], f[i + 1]) for i in range(4)] + [conv_block(f[4], f[4])])
        self.decoder_block_att = nn.ModuleList(
            [conv_block(f[0], f[0])] + [conv_block(f[i + 1], f[i]) for i in range(3)] + [conv_block(f[4], f[4])]
        )
        self.encoder_att = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    [mtan_attention(f[0], f[0], f[0])] + [mtan_attention(2 * f[i + 1], f[i + 1], f[i + 1]) for i in range(4)]
                )
                for name in tasks
            }
        )
        self.decoder_att = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    [mtan_attention(2 * f[0], f[0], f[0])] + [mtan_attention(f[i + 1] + f[i], f[i], f[i]) for i in range(4)]
                )
                for name in tasks
            }
        )
        self.heads = nn.ModuleDict({name: prediction_block(f[0], task.out_channels) for name, task in tasks.items()})
        init_like_mtan(self)

    def _task(self, name: str, shared: dict[str, list[torch.Tensor]]) -> torch.Tensor:
        encoder_att, decoder_att = self.encoder_att[name], self.decoder_att[name]
        x = None
        for j in range(5):
            inputs = shared["first"][j] if j == 0 else torch.cat([shared["first"][j], x], dim=1)
            attended = encoder_att[j](inputs) * shared["second"][j]
            x = F.max_pool2d(self.encoder_block_att[j](attended), 2, 2)
        for j in range(5):
            level = 4 - j
            up = shared["upsampled"][j]
            x = F.interpolate(x, size=up.shape[-2:], mode="bilinear", align_corners=True)
            x = self.decoder_block_att[level](x)
            x = decoder_att[level](torch.cat([up, x], dim=1)) * shared["decoded"][j]
        return self.heads[name](x)

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Every task's logits at the input size."""
        shared = self.trunk(image)
        return ModelOutput(final={name: self._task(name, shared) for name in self.heads})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The SegNet trunk and the attention levels' shared 3×3 blocks."""
        return [*self.trunk.parameters(), *self.encoder_block_att.parameters(), *self.decoder_block_att.parameters()]


def dense_encoder(f: Sequence[int], task: bool) -> nn.ModuleList:
    """The dense script's encoder levels: VGG-16's blocks; a task's levels > 0 read twice the channels
    (its own pooled map and the shared one)."""
    k = 2 if task else 1
    return nn.ModuleList(
        [conv_stack([3, f[0], f[0]]), conv_stack([k * f[0], f[1], f[1]])]
        + [conv_stack([k * f[i - 1], f[i], f[i], f[i]]) for i in range(2, 5)]
    )


def dense_decoder(f: Sequence[int], task: bool) -> nn.ModuleList:
    """The dense script's decoder levels (index: the level whose resolution it outputs): a task's read
    twice the channels (its own unpooled map and the shared one), and its level 0 widens to 2·f0
    before narrowing; the shared level 0 ends in the unused 13 channels."""
    k = 2 if task else 1
    last = conv_stack([2 * f[0], 2 * f[0], f[0]]) if task else conv_stack([f[0], f[0], DENSE_UNUSED_CHANNELS])
    return nn.ModuleList(
        [last, conv_stack([k * f[1], f[0], f[0]])] + [conv_stack([k * f[i], f[i - 1], f[i - 1], f[i - 1]]) for i in range(2, 5)]
    )


class DenseSegNet(_SegNetModel):
    """MTAN's dense soft sharing: a shared SegNet and a full SegNet per task that reads the shared pooled and unpooled maps."""

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], filters: Sequence[int] | None = None) -> None:
        super().__init__()
        f = _filters("standard", filters)
        self.filters = f
        # the shared SegNet; its level-0 decoder block is never run (see the module docstring)
        self.encoder_block = dense_encoder(f, task=False)
        self.decoder_block = dense_decoder(f, task=False)
        self.encoder_block_t = nn.ModuleDict({name: dense_encoder(f, task=True) for name in tasks})
        self.decoder_block_t = nn.ModuleDict({name: dense_decoder(f, task=True) for name in tasks})
        self.heads = nn.ModuleDict({name: prediction_block(f[0], task.out_channels) for name, task in tasks.items()})
        init_like_mtan(self, uniform=True)  # the dense script's Xavier-uniform
        self.decoder_block[0].requires_grad_(False)

    def _task(self, name: str, image: torch.Tensor, pooled: Sequence[torch.Tensor], upsampled: Sequence[torch.Tensor]) -> torch.Tensor:
        encoder, decoder = self.encoder_block_t[name], self.decoder_block_t[name]
        x, sizes, indices = image, [], []
        for level in range(5):
            x = encoder[level](x if level == 0 else torch.cat([x, pooled[level - 1]], dim=1))
            sizes.append(x.shape[-2:])
            x, index = F.max_pool2d(x, 2, 2, return_indices=True)
            indices.append(index)
        for level in reversed(range(5)):
            x = decoder[level](torch.cat([unpool(x, indices[level], sizes[level]), upsampled[level]], dim=1))
        return self.heads[name](x)

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Every task's logits at the input size."""
        check_input_size(image)
        x, sizes, indices, pooled = image, [], [], []
        for level in range(5):
            x = self.encoder_block[level](x)
            sizes.append(x.shape[-2:])
            x, index = F.max_pool2d(x, 2, 2, return_indices=True)
            indices.append(index)
            pooled.append(x)
        upsampled: list[torch.Tensor] = [x] * 5  # by level: the shared decoder's unpooled maps
        for level in reversed(range(5)):
            upsampled[level] = unpool(x, indices[level], sizes[level])
            if level > 0:
                x = self.decoder_block[level](upsampled[level])
        return ModelOutput(final={name: self._task(name, image, pooled, upsampled) for name in self.heads})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared SegNet but its unused last decoder block (every task reads the rest)."""
        return [*self.encoder_block.parameters(), *self.decoder_block[1:].parameters()]


@register_model("segnet", tiny={"filters": [4, 8, 8, 16, 16]}, backbone=False)
def segnet(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    variant: Variant | Literal["dense", "stan", "mtan"] = "standard",
    filters: Sequence[int] | None = None,
) -> SegNetSplit:
    """Shared SegNet with per-task prediction blocks (``variant``: standard, wide or deep; MTAN's
    dense, STAN and MTAN SegNets are the architectures ``segnet_dense``, ``stan`` and ``mtan``)."""
    if variant in ELSEWHERE:
        raise ConfigError(
            f"model.options.variant {variant!r}: MTAN's {variant} SegNet is an architecture of its own; "
            f"set model.arch: {ELSEWHERE[variant]} (segnet's variants are standard, wide and deep)"
        )
    if variant not in ("standard", "wide", "deep"):
        raise ConfigError(f"model.options.variant must be standard, wide or deep (got {variant!r})")
    return SegNetSplit(config, tasks, variant, filters)


@register_model("mtan", tiny={"filters": [4, 8, 8, 16, 16]}, backbone=False)
def mtan(config: ModelConfig, tasks: Mapping[str, Task], filters: Sequence[int] | None = None) -> MTANSegNet:
    """MTAN-SegNet (Liu et al., CVPR 2019): shared SegNet plus per-task attention."""
    return MTANSegNet(config, tasks, filters)


@register_model("stan", tiny={"filters": [4, 8, 8, 16, 16]}, backbone=False, max_tasks=1)
def stan(config: ModelConfig, tasks: Mapping[str, Task], filters: Sequence[int] | None = None) -> MTANSegNet:
    """MTAN's single-task attention network: MTAN-SegNet for one task (``stl`` with ``per_task: stan``
    builds one per task)."""
    return MTANSegNet(config, tasks, filters)


@register_model("segnet_dense", tiny={"filters": [4, 8, 8, 16, 16]}, backbone=False)
def segnet_dense(config: ModelConfig, tasks: Mapping[str, Task], filters: Sequence[int] | None = None) -> DenseSegNet:
    """MTAN's dense soft-sharing baseline: a shared SegNet and a SegNet per task reading its maps."""
    return DenseSegNet(config, tasks, filters)
