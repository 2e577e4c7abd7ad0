"""Cross-stitch networks (Misra et al., CVPR 2016: "Cross-stitch Networks for Multi-task Learning").

One network per task; after each stage a cross-stitch unit replaces every task's feature map by a
learned linear combination of all tasks' maps, so the networks learn how much to share. Two
backbones (``backbone``):

- ``timm`` (default): one timm ``features_only`` network per task, run stage by stage (the timm
  ``FeatureListNet`` is an ordered ``ModuleDict``; its returned stages are in ``feature_info``), a
  unit after every returned stage of stride ≥ 4 and one ``FPNHead`` per task on its own stitched
  features (as ``hps``). The stages are those of Vandenhende's re-implementation on ResNets
  (``SimonVandenhende/Multi-Task-Learning-PyTorch``: ``models/cross_stitch.py``,
  ``configs/nyud/resnet50/cross_stitch.yml``: stages layer1–layer4, the stem belonging to layer1).
  timm models whose features_only form is not such a sequence (EfficientNet, MobileNet, HRNet and
  ViT feature wrappers) are refused with a ConfigError.
- ``segnet``: MTAN's cross-stitch SegNet (``lorenmt/mtan``: ``im2im_pred/model_segnet_cross.py``),
  one SegNet per task built from :mod:`scenemtl.models.segnet`'s blocks, four units on the pooled
  outputs of the first four encoder levels and five on the decoder inputs (the pooled output of
  the last encoder level, then the outputs of the first four decoder levels), each task's own
  pooling indices for unpooling, MTAN's prediction block per task, Xavier-uniform convolutions
  (that script's initialisation; its other SegNets use Xavier-normal).

The unit (``unit``), with the two re-implementations' forms:

- ``channel``: ``out_i = Σ_j α[i, j] ⊙ x_j`` with a K×K matrix per channel, diagonal initialised to
  ``alpha_same`` and the rest to ``alpha_diff`` (the paper's α_S / α_D; Vandenhende:
  ``ChannelWiseMultiply`` per task pair, ``alpha: 0.9, beta: 0.1`` for NYUD's two tasks in
  ``configs/nyud/resnet50/cross_stitch.yml``, ``0.8, 0.05`` for PASCAL's five in
  ``configs/pascal/resnet18/cross_stitch.yml``: each row sums to 1). Defaults: ``alpha_same`` 0.9 and
  ``alpha_diff`` (1 − ``alpha_same``) / (K − 1), which is both of those. The default with
  ``backbone: timm``.
- ``mtan``: MTAN's script: one weight per source task and unit, shared by every target task (its
  ``cs_unit_encoder`` is a 4×3 and ``cs_unit_decoder`` a 5×3 tensor, row = unit, column = source;
  the same combination feeds all three task networks), initialised to 1 (``torch.ones``; the
  script's ``isinstance(m, nn.Parameter)`` branch never runs). The default with ``backbone:
  segnet``, so that the model is MTAN's: 3 × 24,943,296 (SegNet without head) + 111,889 (the three
  prediction blocks) + 27 (units) = 74,941,804 parameters for 13-class segmentation, depth and
  normals, 3.00 × MTAN's single-task SegNet (its script prints 74,941,807: + 3 for ``logsigma``).

``shared_parameters()``: every task's loss reaches every network before the last unit (through
the units, whose cross-task weights start non-zero), so those parameters, and the units, are what
gradient balancers must act on: all backbones and units (``timm``: the last unit follows the last
stage), the SegNets except their last decoder level (``segnet``). Declaring only the units would
hand the networks the plain sum of all tasks' gradients, which is the imbalance balancers exist to
remove; LibMTL's ``Cross_stitch`` likewise counts the whole stitched encoder as shared.

Differences from the official code, and why: the heads output logits (the tasks apply
log-softmax / normalisation in their losses and predictions); any number of tasks (MTAN's script
hard-codes three); ``segnet`` unpools to the encoder's sizes, so inputs need not be multiples of 32;
the ``timm`` variant reads FPN heads on all stages instead of Vandenhende's DeepLab head on a
dilated ResNet-50 (the project's common decoder, so that it compares with ``hps``);
uncertainty weighting lives in the balancer, not in the model. ``filters`` narrows the SegNet for
tests and CPU trials; it is not a paper setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from scenemtl.config import BackboneConfig, ModelConfig
from scenemtl.errors import ConfigError, ScenemtlError
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import FPNHead, fp32_conv, resize
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.models.segnet import SegNetTrunk, init_like_mtan, prediction_block
from scenemtl.tasks import Task

Unit = Literal["channel", "mtan"]


class CrossStitchUnit(nn.Module):
    """Replaces each of K tasks' feature maps by a learned linear combination of all K.

    ``channel``: ``alpha`` is K × K × C (target, source, channel); ``mtan``: ``alpha`` is K (source),
    the one combination every target receives.
    """

    def __init__(self, tasks: int, channels: int, unit: Unit = "channel", alpha_same: float = 0.9, alpha_diff: float = 0.1) -> None:
        super().__init__()
        self.unit = unit
        if unit == "channel":
            alpha = torch.full((tasks, tasks, channels), float(alpha_diff))
            alpha[range(tasks), range(tasks)] = float(alpha_same)
        else:
            alpha = torch.ones(tasks)
        self.alpha = nn.Parameter(alpha)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The stitched maps, one per task, in the order given."""
        stacked = torch.stack(list(features))  # K, B, C, H, W
        alpha = self.alpha.to(stacked.dtype)
        if self.unit == "channel":
            return list(torch.einsum("ijc,jbchw->ibchw", alpha, stacked).unbind(0))
        return [torch.einsum("j,jbchw->bchw", alpha, stacked)] * len(features)


class CrossStitchTimm(MultiTaskModel):
    """One timm network per task, stitched after every stage of stride ≥ 4, one FPN head per task."""

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        unit: Unit,
        alpha_same: float,
        alpha_diff: float,
        head_channels: int = 64,
        decoder_stride: int = 8,
    ) -> None:
        super().__init__()
        if config.backbone.fuse != "none":
            raise ConfigError("arch cross_stitch stitches the backbone's stages one by one: model.backbone.fuse must be 'none'")
        first = Backbone(config.backbone)
        try:
            first.stages()
        except ConfigError as error:
            raise ConfigError(f"arch cross_stitch: {error}") from None
        names = list(tasks)
        self.backbones = nn.ModuleDict({name: first if i == 0 else Backbone(config.backbone) for i, name in enumerate(names)})
        strides, channels = first.strides, first.channels
        # which of the returned feature maps get a unit
        stitched = [i for i, s in enumerate(strides) if s >= 4] or [len(strides) - 1]
        self.stitch = nn.ModuleDict({str(i): CrossStitchUnit(len(tasks), channels[i], unit, alpha_same, alpha_diff) for i in stitched})
        self.heads = nn.ModuleDict(
            {name: FPNHead(channels, strides, head_channels, task.out_channels, min_stride=decoder_stride) for name, task in tasks.items()}
        )

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Each task's logits at the input size."""
        names = list(self.heads)
        x = [image] * len(names)
        features: list[list[torch.Tensor]] = [[] for _ in names]
        for stages in zip(*(self.backbones[name].stages() for name in names)):  # the same stage of every network
            x = [stage.module(value) for stage, value in zip(stages, x)]
            if stages[0].level is None:
                continue
            if not all(isinstance(value, torch.Tensor) for value in x):
                raise ScenemtlError(
                    f"arch cross_stitch: backbone stage '{stages[0].name}' returns {type(x[0]).__name__}, "
                    "not one feature map; choose another model.backbone.name"
                )
            level = str(stages[0].level)
            if level in self.stitch:
                x = self.stitch[level](x)
            for task_features, value in zip(features, x):
                task_features.append(value)
        size = image.shape[-2:]
        return ModelOutput(final={name: resize(self.heads[name](f), size) for name, f in zip(names, features)})

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every backbone and unit: each task's loss reaches them through the units (see the module docstring)."""
        return [*self.backbones.parameters(), *self.stitch.parameters()]

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's classifier."""
        return {name: [head.classifier] for name, head in self.heads.items()}


class CrossStitchSegNet(MultiTaskModel):
    """MTAN's cross-stitch SegNet: a SegNet per task, units on the four encoder and five decoder levels."""

    def __init__(self, tasks: Mapping[str, Task], unit: Unit, alpha_same: float, alpha_diff: float, filters: Sequence[int] | None) -> None:
        super().__init__()
        self.trunks = nn.ModuleDict({name: SegNetTrunk("standard", filters) for name in tasks})
        f, k = next(iter(self.trunks.values())).filters, len(tasks)
        # encoder units stitch the pooled outputs of levels 0–3; decoder unit 0 the pooled output of
        # level 4, decoder unit j the output of decoder level 5 − j (the decoder runs level 4 to 0)
        self.encoder_stitch = nn.ModuleList(CrossStitchUnit(k, f[i], unit, alpha_same, alpha_diff) for i in range(4))
        self.decoder_stitch = nn.ModuleList(CrossStitchUnit(k, c, unit, alpha_same, alpha_diff) for c in (f[4], f[3], f[2], f[1], f[0]))
        self.heads = nn.ModuleDict({name: prediction_block(f[0], task.out_channels) for name, task in tasks.items()})
        init_like_mtan(self, uniform=True)  # the cross-stitch script's Xavier-uniform

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Each task's logits at the input size."""
        if min(image.shape[-2:]) < 32:
            raise ScenemtlError(f"SegNet pools five times by 2: inputs must be at least 32×32 pixels, got {tuple(image.shape[-2:])}")
        names = list(self.heads)
        trunks = [self.trunks[name] for name in names]
        x = [image] * len(names)
        sizes: list[list[torch.Size]] = [[] for _ in names]
        indices: list[list[torch.Tensor]] = [[] for _ in names]
        for level in range(5):
            pooled = []
            for t, trunk in enumerate(trunks):
                y = trunk.conv_block_enc[level](trunk.encoder_block[level](x[t]))
                sizes[t].append(y.shape[-2:])
                y, index = F.max_pool2d(y, 2, 2, return_indices=True)
                indices[t].append(index)
                pooled.append(y)
            x = self.encoder_stitch[level](pooled) if level < 4 else self.decoder_stitch[0](pooled)
        for j in range(5):
            level = 4 - j
            x = [
                trunk.conv_block_dec[level](
                    trunk.decoder_block[level](F.max_unpool2d(x[t], indices[t][level], 2, 2, output_size=sizes[t][level]))
                )
                for t, trunk in enumerate(trunks)
            ]
            if j < 4:
                x = self.decoder_stitch[j + 1](x)
        return ModelOutput(final={name: fp32_conv(self.heads[name][-1], self.heads[name][0](x[t])) for t, name in enumerate(names)})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The SegNets up to the last unit (all but their last decoder level) and the units."""
        last = {
            id(p) for trunk in self.trunks.values() for p in [*trunk.decoder_block[0].parameters(), *trunk.conv_block_dec[0].parameters()]
        }
        trunks = [p for p in self.trunks.parameters() if id(p) not in last]
        return [*trunks, *self.encoder_stitch.parameters(), *self.decoder_stitch.parameters()]

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """The last convolution of each task's prediction block."""
        return {name: [head[-1]] for name, head in self.heads.items()}


@register_model("cross_stitch", tiny={"head_channels": 8})
def cross_stitch(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    backbone: Literal["timm", "segnet"] = "timm",
    unit: Unit | None = None,
    alpha_same: float | None = None,
    alpha_diff: float | None = None,
    filters: Sequence[PositiveInt] | None = None,
    head_channels: PositiveInt | None = None,
    decoder_stride: PositiveInt | None = None,
) -> MultiTaskModel:
    """Cross-stitch networks (Misra et al., CVPR 2016): one network per task, stitched after each stage.

    ``backbone``: ``timm`` (``model.backbone``, FPN heads) or ``segnet`` (MTAN's cross-stitch
    SegNet); ``unit``: ``channel`` (K×K per channel) or ``mtan`` (MTAN's form), by default
    ``channel`` with timm and ``mtan`` with segnet; ``alpha_same`` / ``alpha_diff``: the channel
    unit's initial same-task / cross-task weights (default 0.9 and (1 − alpha_same) / (K − 1), so
    each task starts from a convex combination); ``filters``: SegNet's five widths (``backbone:
    segnet`` only; the timm networks' widths are the timm model's); ``head_channels`` /
    ``decoder_stride``: the FPN heads' width and finest stride (``backbone: timm`` only; default 64, 8).
    An option of the other backbone is an error, as is a ``model.backbone`` with ``segnet``.
    """
    if backbone not in ("timm", "segnet"):
        raise ConfigError(f"model.options.backbone must be 'timm' or 'segnet' (got {backbone!r})")
    unit = unit or ("mtan" if backbone == "segnet" else "channel")
    if unit not in ("channel", "mtan"):
        raise ConfigError(f"model.options.unit must be 'channel' or 'mtan' (got {unit!r})")
    if unit == "mtan" and (alpha_same is not None or alpha_diff is not None):
        raise ConfigError(
            "model.options.alpha_same/alpha_diff initialise the 'channel' unit; the 'mtan' unit "
            "(one weight per source task) starts at 1 as MTAN's: remove them or set unit: channel"
        )
    same = 0.9 if alpha_same is None else float(alpha_same)
    diff = (1.0 - same) / max(len(tasks) - 1, 1) if alpha_diff is None else float(alpha_diff)
    if backbone == "segnet":
        if head_channels is not None or decoder_stride is not None:
            raise ConfigError(
                "model.options.head_channels/decoder_stride set the FPN heads of backbone: timm; the "
                "cross-stitch SegNet's decoders are SegNet's (set their widths with filters)"
            )
        if config.backbone != BackboneConfig():
            raise ConfigError(
                "model.backbone configures a timm network; cross_stitch with backbone: segnet builds "
                "its own SegNets, so remove model.backbone or set model.options.backbone: timm"
            )
        return CrossStitchSegNet(tasks, unit, same, diff, filters)
    if filters is not None:
        raise ConfigError(
            "model.options.filters sets the widths of backbone: segnet; with backbone: timm the widths "
            "are the timm model's (model.backbone.name): remove filters"
        )
    return CrossStitchTimm(config, tasks, unit, same, diff, head_channels or 64, decoder_stride or 8)
