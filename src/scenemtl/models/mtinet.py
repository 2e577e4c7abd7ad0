"""MTI-Net (Vandenhende et al., ECCV 2020: "MTI-Net: Multi-Scale Task Interaction Networks for Multi-Task Learning").

Structure, as the authors' code builds it (SimonVandenhende/Multi-Task-Learning-PyTorch,
``models/mti_net.py``, ``models/padnet.py``, ``models/layers.py``, ``models/seg_hrnet.py``,
``utils/common_config.py``; configs ``configs/{nyud,pascal}/hrnet18/mti_net.yml``), over the
backbone levels of stride ≥ ``decoder_stride`` (HRNet-18 at ``decoder_stride: 4``: its four
branches, 18/36/72/144 channels at 1/4…1/32; "scale 0" is the finest):

1. Initial task predictions at every scale, coarsest first (``InitialTaskPredictionModule``):
   per task, the scale's backbone feature concatenated with that task's feature propagated from
   the next coarser scale (bilinearly upsampled), two ResNet basic blocks to the scale's task
   width (the first projects its input with a 1×1 conv-BN), and a 1×1 conv to the task's
   outputs. The task width is the backbone's width at that scale (``task_channels`` overrides
   it; not an official setting).
2. Feature propagation (``FPM``) from each scale but the finest to the next finer one: the
   tasks' features concatenated (N·C channels, in the order of ``tasks``); a non-linear
   function (basic block to N·C/4 with projection, basic block, 1×1 conv with bias back to N·C)
   gives logits that are softmaxed over groups of N consecutive channels and multiply the
   concatenation; a basic block (with projection) reduces it to C channels; each task adds a
   squeeze-and-excitation (reduction 16) of it to its own feature.
3. Multi-modal distillation at every scale (PAD-Net's: each task's feature plus spatial-
   attention-gated messages of the other tasks; see ``scenemtl.models.layers.attention``).
4. Feature aggregation and final heads (``seg_hrnet.HighResolutionHead``), per task: the
   distilled features of all scales bilinearly upsampled to scale 0 and concatenated, 1×1 conv
   (with bias)-BN-ReLU at that width, 1×1 conv to the task's outputs, bilinear to the input.

Deep supervision: the initial predictions of scale i are ``ModelOutput.aux["scale_i"]``, at input
size. The official loss (``losses/loss_schemes.py:MTINetLoss``) adds every task's loss on every
scale's initial prediction (upsampled to the label size) and on the final one, all with the
task's own weight: exactly what the training loop does with ``aux``.

``shared_parameters`` are the backbone's: the trunk before the tasks split, what gradient
balancers act on (the FPMs and distillation gates read every task's features, so every task's
loss reaches every task's branches, but those belong to one task each). The shared
representation (``encode``) is the backbone levels the model reads.

Parameters at HRNet-18 (timm ``hrnet_w18_small_v2``, 3,860,720 parameters, the same layers as the
official ``hrnet_w18`` built from ``hrnet_w18_small_model_v2.pth``): 14,100,225 more for the four
NYUD tasks (40-class semseg, depth, normals, edge), 20,633,451 for the five PASCAL tasks.

Differences from the official code: the official configurations distinguish main tasks from
auxiliary ones (NYUD: semseg and depth; the "+edges_normals" variants add edges and normals as
auxiliary tasks supervised only at the initial predictions); here every task is a main task with
a final head (the 4-task NYUD / 5-task PASCAL setting of ATRC and InvPT's tables). The FPM's
softmax grouping is kept as coded, although the paper describes a softmax across tasks: the
official ``view(B, C/N, N, H, W)`` of the task-major concatenation groups N consecutive
channels (mostly of one task), and trained weights depend on it. Upsampling uses the target
size instead of ``scale_factor=2``: identical for the seeds' inputs (multiples of 32), and it
also serves backbones whose levels are not exactly twice apart. With HRNet backbones the timm
model is made to upsample bilinearly in its fuse layers and to use batch-norm momentum 0.01, as
the official segmentation HRNet. One task is a ConfigError (``min_tasks=2``): the distillation
has nothing to pass with one, and the official code fails there too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from pydantic import PositiveInt
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel, require_tasks
from scenemtl.models.layers import MultiModalDistillation, basic_block, conv_norm_act, fp32_conv, resize
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task


class SEBlock(nn.Module):
    """Squeeze-and-excitation: channels rescaled by a 2-layer MLP (reduction ``r``) of their spatial mean.

    As the MTI-Net authors' ``models/layers.py``, except that it keeps at least one hidden unit (the
    official ``channels // 16`` is zero below 16 channels, widths the official configurations never use).
    """

    def __init__(self, channels: int, r: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // r)
        self.squeeze = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with each channel scaled by its excitation."""
        scale = self.squeeze(x.mean(dim=(2, 3)))
        return x * scale[:, :, None, None]


class InitialTaskPrediction(nn.Module):
    """One scale's per-task refinement (two basic blocks) and initial prediction (1×1 conv)."""

    def __init__(self, tasks: Mapping[str, Task], in_channels: int, task_channels: int) -> None:
        super().__init__()
        self.refinement = nn.ModuleDict(
            {t: nn.Sequential(basic_block(in_channels, task_channels), basic_block(task_channels, task_channels)) for t in tasks}
        )
        self.decoders = nn.ModuleDict({t: nn.Conv2d(task_channels, task.out_channels, 1) for t, task in tasks.items()})

    def forward(
        self, feature: torch.Tensor, propagated: dict[str, torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each task's refined feature and its initial prediction at this scale."""
        features, predictions = {}, {}
        for t, refine in self.refinement.items():
            x = feature if propagated is None else torch.cat([feature, resize(propagated[t], feature.shape[-2:])], 1)
            features[t] = refine(x)
            predictions[t] = fp32_conv(self.decoders[t], features[t])
        return features, predictions


class FeaturePropagation(nn.Module):
    """MTI-Net's feature propagation module (FPM): a shared, task-attended summary added to each task."""

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        shared = len(self.tasks) * channels
        self.non_linear = nn.Sequential(
            basic_block(shared, shared // 4), basic_block(shared // 4, shared // 4), nn.Conv2d(shared // 4, shared, 1)
        )
        self.dimensionality_reduction = basic_block(shared, channels)
        self.se = nn.ModuleDict({t: SEBlock(channels) for t in self.tasks})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's feature plus its squeeze-excited view of the shared summary."""
        concat = torch.cat([features[t] for t in self.tasks], 1)
        b, c, h, w = concat.shape
        n = len(self.tasks)
        # as the official code: softmax over groups of n consecutive channels of the concatenation
        mask = torch.softmax(self.non_linear(concat).view(b, c // n, n, h, w), dim=2)
        shared = self.dimensionality_reduction((mask * concat.view(b, c // n, n, h, w)).view(b, c, h, w))
        return {t: self.se[t](shared) + features[t] for t in self.tasks}


class AggregationHead(nn.Module):
    """Feature aggregation (HRNet's segmentation head): scales concatenated at scale 0, 1×1 conv-BN-ReLU, 1×1 conv."""

    def __init__(self, channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        width = sum(channels)
        self.last_layer = nn.Sequential(*conv_norm_act(width, width, 1, bias=True), nn.Conv2d(width, out_channels, 1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the finest scale."""
        size = features[0].shape[-2:]
        x = torch.cat([resize(f, size) for f in features], 1)
        return fp32_conv(self.last_layer[-1], self.last_layer[:-1](x))


class MTINet(MultiTaskModel):
    """Multi-scale initial predictions with feature propagation, per-scale distillation, aggregation heads."""

    def __init__(
        self, config: ModelConfig, tasks: Mapping[str, Task], task_channels: int | Sequence[int] | None = None, decoder_stride: int = 8
    ) -> None:
        super().__init__()
        require_tasks("mtinet", tasks, 2, "its distillation passes messages between tasks")
        self.tasks = list(tasks)
        self.backbone = Backbone(config.backbone, pyramid=True)  # a ViT's maps through the multi-level neck
        strides = self.backbone.strides
        self.levels = [i for i, s in enumerate(strides) if s >= decoder_stride]
        if len(self.levels) < 2:
            raise ConfigError(
                f"mtinet needs at least two backbone levels of stride ≥ model.options.decoder_stride={decoder_stride} "
                f"(backbone strides: {strides}); lower decoder_stride, and leave model.backbone.fuse at 'none'"
            )
        backbone_channels = [self.backbone.channels[i] for i in self.levels]
        widths = _task_channels(task_channels, backbone_channels)
        self.task_channels = widths
        scales = len(widths)
        self.initial = nn.ModuleList(
            InitialTaskPrediction(tasks, backbone_channels[i] + (widths[i + 1] if i + 1 < scales else 0), widths[i]) for i in range(scales)
        )
        # fpm[i - 1] carries scale i's task features to scale i - 1
        self.fpm = nn.ModuleList(FeaturePropagation(self.tasks, widths[i]) for i in range(1, scales))
        self.distillation = nn.ModuleList(MultiModalDistillation(self.tasks, c) for c in widths)
        self.heads = nn.ModuleDict({t: AggregationHead(widths, task.out_channels) for t, task in tasks.items()})

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The backbone levels the decoder reads."""
        return tuple(f for i, f in enumerate(self.backbone(image)) if i in self.levels)

    def decode(self, shared: Sequence[torch.Tensor], size: Sequence[int]) -> ModelOutput:
        """Final logits of every task and the initial predictions of each scale (``aux["scale_i"]``), at ``size``."""
        features = list(shared)
        scales = len(features)
        task_features: list[dict[str, torch.Tensor]] = [{} for _ in range(scales)]
        predictions: list[dict[str, torch.Tensor]] = [{} for _ in range(scales)]
        propagated = None
        for i in reversed(range(scales)):
            task_features[i], predictions[i] = self.initial[i](features[i], propagated)
            if i > 0:
                propagated = self.fpm[i - 1](task_features[i])
        distilled = [module(f) for module, f in zip(self.distillation, task_features)]
        final = {t: resize(self.heads[t]([d[t] for d in distilled]), size) for t in self.tasks}
        aux = {f"scale_{i}": {t: resize(p, size) for t, p in predictions[i].items()} for i in range(scales)}
        return ModelOutput(final=final, aux=aux)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone's parameters."""
        return list(self.backbone.parameters())

    @torch.no_grad()
    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's final and per-scale initial predictions."""
        return {name: [self.heads[name].last_layer[-1], *(m.decoders[name] for m in self.initial)] for name in self.heads}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the backbone."""
        self.backbone.set_activation_checkpointing(enabled)


def _task_channels(value: int | Sequence[int] | None, backbone_channels: list[int]) -> list[int]:
    if value is None:
        return list(backbone_channels)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * len(backbone_channels)
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != len(backbone_channels)
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in value)
    ):
        raise ConfigError(
            f"model.options.task_channels must be null (the backbone's widths, {backbone_channels}), one positive "
            f"integer or {len(backbone_channels)} of them (one per scale), got {value!r}"
        )
    return [int(c) for c in value]


@register_model("mtinet", tiny={"task_channels": 8}, min_tasks=2)
def mtinet(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    task_channels: PositiveInt | Sequence[PositiveInt] | None = None,
    decoder_stride: PositiveInt = 8,
) -> MTINet:
    """MTI-Net: multi-scale initial predictions, feature propagation, distillation at every scale, aggregation
    (over the backbone levels of stride ≥ ``decoder_stride``: 4 with HRNet-18, its four branches)."""
    return MTINet(config, tasks, task_channels=task_channels, decoder_stride=decoder_stride)
