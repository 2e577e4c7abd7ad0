"""MTAN-WRN: MTAN's Wide-ResNet-28-4 for the Visual Decathlon (Liu et al., CVPR 2019), many-to-many classification.

Written from ``lorenmt/mtan``'s ``visual_decathlon/model_wrn_mtan.py`` (MIT licence), layer for
layer, so that the parameter count (and the state layout, up to names) matches:

- a shared pre-activation Wide-ResNet-28-4 (``WRNTrunk``): a 3×3 ``conv1`` (3→16), then three
  stages of ``blocks`` (4) ``wide_basic`` blocks of widths 64, 128 and 256, each stage's first
  block of stride 2 (72 → 36 → 18 → 9); a block is BN-ReLU-conv3×3, BN-ReLU-conv3×3 (the stride
  is on the second convolution) plus a 1×1 convolution shortcut where the shape changes;
  convolutions carry biases, no dropout; after the last stage ``bn1`` (momentum 0.9 in PyTorch's
  sense, i.e. the running statistics are 90 % the latest batch, as the script sets it) and ReLU;
- per task four soft-attention masks (``mtan_attention``: 1×1 conv-BN-ReLU-1×1 conv-BN-sigmoid):
  level 0 on the ``conv1`` output (16→16→16), levels 1–3 on the concatenation of stage j's output
  and the task's attended feature of level j − 1 (2c→c→c); the mask multiplies the shared feature
  it was computed from (``conv1``'s output, stage 1, stage 2, the ReLU of ``bn1`` after stage 3),
  and the product goes through the level's ``encoder_block_att`` (3×3 conv-BN-ReLU, shared by the
  tasks: 16→64, 64→128, 128→256, 256→256), followed after levels 0–2 by 2×2 max pooling;
- per task a linear classifier (256 → the task's classes) on the attended level-3 feature
  average-pooled with ``avg_pool2d(kernel 8)``: on the 9×9 map of a 72×72 image that reads only
  the top-left 8×8 (a quirk of the script, kept as ``pool: official``, the default);
  ``pool: global`` averages the whole map instead (not a paper setting).

At the ten Decathlon domains' class counts (imagenet12 1000, aircraft 100, cifar100 100,
daimlerpedcls 2, dtd 47, gtsrb 43, omniglot 1623, svhn 10, ucf101 101, vgg-flowers 102) it has the
official 10,237,656 parameters: the shared WRN 5,850,528, the shared ``encoder_block_att``
969,792, 10 × 261,344 per-task attention and 803,896 in the heads (the test spells out the sum).

``attention: false`` is the same WRN trunk with one linear head per task on the pooled ``bn1``
feature and no attention branches: the "shared network" baseline (hard parameter sharing).
``filters`` (four channel counts, default 16-64-128-256) and ``blocks`` (per stage, default 4)
narrow it for tests and CPU trials; they are not paper settings.

Differences from the script, none of which changes a parameter, and why:

- the model returns **logits** and applies no softmax: the ``classification`` task applies
  cross-entropy (the script's Softmax and its ``−Σ onehot · log(p + 1e-20)`` loss are the same
  function up to the 1e-20, which only matters when a probability underflows);
- ``forward(image)`` computes **every task's branch** (the engine's contract: one output per
  task); ``forward(image, tasks=[domain])`` computes only the named branches, as the script's
  ``forward(x, k)``. Training with grouped batches uses it (``train.route_tasks``, on by itself
  there), so the running statistics of the shared ``encoder_block_att`` batch norms see only the
  batch's domain's branch, as in the script; the other branches get zero gradients, so weight decay
  and momentum move every parameter as the script's ``zero_grad`` (zeros, not ``None``, in the
  PyTorch of its time) does. The official evaluation (``model_wrn_eval.py``) trains one more epoch
  on each domain in train mode before testing it; ``eval.recalibrate_bn`` re-estimates the
  statistics the same way (routed, statistics only, without the SGD steps);
- the 2×2 max pooling after levels 0–2 uses ``ceil_mode`` (as the stride-2 convolutions round up),
  so odd input sizes work; identical at 72×72 (and any multiple of 8);
- the script defines ``conv_init`` but never applies it: PyTorch's default initialisation, as the
  script trains it.

Other input sizes: ``pool: official`` needs a final map of 8 to 15 pixels a side (inputs of
57 to 120 pixels) so that the 8×8 average leaves one value per channel; ``pool: global`` takes any size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError, ScenemtlError
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import conv_norm_act, mtan_attention
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task

Pool = Literal["official", "global"]

#: WRN-28-4's widths: ``conv1``, then the three stages (16, 16k, 32k, 64k with k = 4)
DEFAULT_FILTERS = (16, 64, 128, 256)


def _filters(filters: Sequence[int] | None) -> list[int]:
    if filters is None:
        return list(DEFAULT_FILTERS)
    if len(filters) != 4 or any(int(c) < 1 for c in filters):
        raise ConfigError(f"model.options.filters must be four positive channel counts, got {list(filters)}")
    return [int(c) for c in filters]


class WideBasic(nn.Module):
    """WRN's pre-activation block (the script's ``wide_basic``, without dropout): BN-ReLU-conv3×3,
    BN-ReLU-conv3×3 (``stride``), plus the input, through a 1×1 convolution where the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WRNTrunk(nn.Module):
    """The shared Wide-ResNet: ``conv1``, three stages of stride 2, ``bn1`` (momentum 0.9) and ReLU.

    ``forward`` returns the four features the attention levels read: ``conv1``'s output, stage 1's,
    stage 2's and ReLU(``bn1``(stage 3)).
    """

    def __init__(self, filters: Sequence[int], blocks: int) -> None:
        super().__init__()
        f = list(filters)
        self.filters = f
        self.conv1 = nn.Conv2d(3, f[0], 3, padding=1, bias=True)
        self.layer1 = self._stage(f[0], f[1], blocks)
        self.layer2 = self._stage(f[1], f[2], blocks)
        self.layer3 = self._stage(f[2], f[3], blocks)
        self.bn1 = nn.BatchNorm2d(f[3], momentum=0.9)

    @staticmethod
    def _stage(in_channels: int, channels: int, blocks: int) -> nn.Sequential:
        return nn.Sequential(*(WideBasic(in_channels if i == 0 else channels, channels, 2 if i == 0 else 1) for i in range(blocks)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        g0 = self.conv1(x)
        g1 = self.layer1(g0)
        g2 = self.layer2(g1)
        g3 = F.relu(self.bn1(self.layer3(g2)))
        return [g0, g1, g2, g3]


class MTANWideResNet(MultiTaskModel):
    """MTAN-WRN-28-4 (``attention``) or the shared WRN with per-task linear heads (see the module docstring)."""

    #: ``forward(image, tasks=[...])`` runs only those tasks' branches (``engine.recalibrate`` uses it)
    routes_tasks = True

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        attention: bool = True,
        filters: Sequence[int] | None = None,
        blocks: int = 4,
        pool: Pool = "official",
    ) -> None:
        super().__init__()
        if pool not in ("official", "global"):
            raise ConfigError(f"model.options.pool must be official or global (got {pool!r})")
        self.attention, self.pool = attention, pool
        self.trunk = WRNTrunk(_filters(filters), blocks)
        f = self.trunk.filters
        if attention:
            # shared by the tasks: the 3×3 blocks after each attention level
            self.encoder_block_att = nn.ModuleList(
                [conv_norm_act(f[i], f[i + 1], 3, bias=True) for i in range(3)] + [conv_norm_act(f[3], f[3], 3, bias=True)]
            )
            self.encoder_att = nn.ModuleDict(
                {
                    name: nn.ModuleList([mtan_attention(f[0], f[0], f[0])] + [mtan_attention(2 * f[i], f[i], f[i]) for i in range(1, 4)])
                    for name in tasks
                }
            )
        self.heads = nn.ModuleDict({name: nn.Linear(f[3], task.out_channels) for name, task in tasks.items()})

    def _attended(self, name: str, shared: list[torch.Tensor]) -> torch.Tensor:
        """Task ``name``'s attended level-3 feature (the map its head pools)."""
        att = self.encoder_att[name]
        x = shared[0]
        for j in range(4):
            mask = att[j](shared[0] if j == 0 else torch.cat([shared[j], x], dim=1))
            x = self.encoder_block_att[j](mask * shared[j])
            if j < 3:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        return x

    def task_features(self, image: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Each task's feature map before pooling ``[B, filters[3], h, w]`` (9×9 for 72×72 images); with
        ``attention: false`` every task's is the trunk's (the same tensor)."""
        names = list(self.heads) if tasks is None else list(tasks)
        unknown = [n for n in names if n not in self.heads]
        if unknown:
            raise ScenemtlError(f"no branch for task(s) {unknown}; the model has {list(self.heads)}")
        shared = self.trunk(image)
        if not self.attention:
            return {name: shared[3] for name in names}
        return {name: self._attended(name, shared) for name in names}

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "global":
            return x.mean(dim=(-2, -1))
        if not (8 <= x.shape[-2] < 16 and 8 <= x.shape[-1] < 16):
            raise ScenemtlError(
                f"pool: official averages an 8×8 window of the final map (9×9 for 72×72 images, the Decathlon size) and "
                f"needs a map of 8 to 15 pixels a side (inputs of 57 to 120 pixels), got a {tuple(x.shape[-2:])} map: "
                "resize the images or set model.options.pool=global"
            )
        return F.avg_pool2d(x, 8).flatten(1)

    def forward(self, image: torch.Tensor, tasks: Sequence[str] | None = None) -> ModelOutput:
        """Every task's logits ``[B, classes]`` (no softmax); ``tasks``: compute only these tasks' branches."""
        features = self.task_features(image, tasks)
        return ModelOutput(final={name: self.heads[name](self._pool(x)) for name, x in features.items()})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The WRN trunk and (with attention) the attention levels' shared 3×3 blocks."""
        shared = list(self.trunk.parameters())
        if self.attention:
            shared += list(self.encoder_block_att.parameters())
        return shared

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's linear classifier (its bias is the logits' prior)."""
        return {name: [head] for name, head in self.heads.items()}


@register_model("mtan_wrn", tiny={"filters": [4, 8, 8, 16], "blocks": 1}, backbone=False, image_level=True)
def mtan_wrn(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    attention: bool = True,
    filters: Sequence[int] | None = None,
    blocks: PositiveInt = 4,
    pool: Literal["official", "global"] = "official",
) -> MultiTaskModel:
    """MTAN's WRN-28-4 for the Visual Decathlon (image-level classification tasks; ``attention: false``:
    the shared WRN baseline)."""
    return MTANWideResNet(config, tasks, attention=attention, filters=filters, blocks=blocks, pool=pool)
