"""PAD-Net (Xu et al., CVPR 2018: "PAD-Net: Multi-Tasks Guided Prediction-and-Distillation Network").

Structure, as the MTI-Net authors re-implemented it for their survey's benchmark
(SimonVandenhende/Multi-Task-Learning-PyTorch, ``models/padnet.py``, ``utils/common_config.py``,
configs ``configs/{nyud,pascal}/hrnet18/pad_net.yml``), a single-scale variant of the paper's
network:

1. Backbone features: every level of stride ≥ ``decoder_stride`` bilinearly resized to the finest
   of them and concatenated, then a 1×1 conv (with bias)-BN-ReLU at the same width
   (``fuse: true``; the official ``HighResolutionFuse`` that ``backbone_kwargs.fuse_hrnet: True``
   appends to HRNet-18: its four branches at 1/4, 18+36+72+144 = 270 channels).
2. Initial predictions, per task: two ResNet bottlenecks to ``head_channels`` (256 in the
   official code; the first one projects its input with a 1×1 conv-BN) and a 1×1 conv to the
   task's outputs. They are deep supervision only: ``ModelOutput.aux["initial"]``, at input size.
3. Multi-modal distillation (``models/padnet.py:MultiTaskDistillationModule``): each task's
   feature plus, from every other task, a spatial-attention-gated message (``SABlock``: a 3×3
   conv times the sigmoid of another 3×3 conv, both without bias); default PyTorch
   initialisation (nothing is zero-initialised).
4. Final heads, per task: two bottlenecks and a 1×1 conv, bilinearly upsampled to the input.

Losses (``losses/loss_schemes.py:PADNetLoss``): every task's loss on its initial prediction
(upsampled bilinearly to the label size) and on its final prediction, both with the task's own
weight, summed. This is what the training loop does with ``aux``: no separate weighting.
``shared_parameters`` are the backbone's and the fuse layer's (which the official code makes part
of the backbone): the trunk before the tasks split, what gradient balancers act on. Through the
distillation gates every task's loss also reaches the other tasks' initial branches; those are
not counted as shared (they belong to one task each), and the shared representation (``encode``)
is the fuse layer's output.

Parameters at HRNet-18 (timm ``hrnet_w18_small_v2``, 3,860,720) with ``head_channels: 256``:
15,661,128 more for the four NYUD tasks, 25,444,272 for the five PASCAL tasks.

Other backbones: the official configurations run PAD-Net on HRNet only (its code would also take
a ResNet's last stage, without the fuse layer). Here the same rule serves any timm backbone: with
``decoder_stride: 32`` and ``fuse: false`` it is that ResNet variant; with ``backbone.fuse:
concat`` the backbone already returns the one concatenated map, and the result is the same as
with HRNet's separate branches.

Differences from the official code: the official configurations distinguish main tasks from
auxiliary ones (NYUD: semseg and depth, with edges and normals as auxiliary tasks supervised
only on their initial predictions); here every task is a main task with a final head (the
4-task NYUD / 5-task PASCAL setting of later papers). With HRNet backbones the timm model is
made to upsample bilinearly in its fuse layers and to use batch-norm momentum 0.01, as the
official segmentation HRNet (``models/seg_hrnet.py``; same parameters as timm's, 3,860,720 for
W18-small-v2). PAD-Net needs two tasks: the distillation has nothing to pass with one (the
official code fails there too), so a single task is a ConfigError. The paper's original
network (its own encoder, auxiliary-task set and deconvolutional decoders) is not what the
benchmark tables of later work use and is not offered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel, require_tasks
from scenemtl.models.layers import BOTTLENECK_EXPANSION, MultiModalDistillation, bottleneck, conv_norm_act, fp32_conv, resize
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task


class PADNet(MultiTaskModel):
    """Backbone → fused map → initial predictions → multi-modal distillation → final heads."""

    def __init__(
        self, config: ModelConfig, tasks: Mapping[str, Task], fuse: bool = True, head_channels: int = 64, decoder_stride: int = 8
    ) -> None:
        super().__init__()
        require_tasks("padnet", tasks, 2, "its distillation passes messages between tasks")
        width = head_channels
        if width % BOTTLENECK_EXPANSION:
            raise ConfigError(
                f"padnet: model.options.head_channels must be a multiple of 4 (its bottlenecks expand by 4), got {width}; "
                "the official width is 256"
            )
        self.tasks = list(tasks)
        self.backbone = Backbone(config.backbone, pyramid=True)  # a ViT's maps through the multi-level neck
        strides = self.backbone.strides
        self.levels = [i for i, s in enumerate(strides) if s >= decoder_stride] or [len(strides) - 1]
        in_channels = sum(self.backbone.channels[i] for i in self.levels)
        self.fuse = conv_norm_act(in_channels, in_channels, 1, bias=True) if fuse else nn.Identity()
        planes = width // BOTTLENECK_EXPANSION
        self.initial = nn.ModuleDict({t: nn.Sequential(bottleneck(in_channels, planes), bottleneck(width, planes)) for t in self.tasks})
        self.initial_out = nn.ModuleDict({t: nn.Conv2d(width, task.out_channels, 1) for t, task in tasks.items()})
        self.distillation = MultiModalDistillation(self.tasks, width)
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(bottleneck(width, planes), bottleneck(width, planes), nn.Conv2d(width, task.out_channels, 1))
                for t, task in tasks.items()
            }
        )

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The fused map: the backbone levels read, at the finest one's resolution (after ``fuse``)."""
        levels = [f for i, f in enumerate(self.backbone(image)) if i in self.levels]
        finest = levels[0].shape[-2:]
        return (
            self.fuse(
                torch.cat(
                    [f if f.shape[-2:] == finest else F.interpolate(f, size=finest, mode="bilinear", align_corners=False) for f in levels],
                    dim=1,
                )
            ),
        )

    def decode(self, shared: Sequence[torch.Tensor], size: Sequence[int]) -> ModelOutput:
        """Final logits of every task and its initial prediction (``aux["initial"]``), at ``size``."""
        x = shared[0]
        task_features = {t: self.initial[t](x) for t in self.tasks}
        initial = {t: resize(fp32_conv(self.initial_out[t], task_features[t]), size) for t in self.tasks}
        distilled = self.distillation(task_features)
        final = {t: resize(fp32_conv(self.heads[t][-1], self.heads[t][:-1](distilled[t])), size) for t in self.tasks}
        return ModelOutput(final=final, aux={"initial": initial})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone's and the fuse layer's parameters (the trunk before the tasks split)."""
        return [*self.backbone.parameters(), *self.fuse.parameters()]

    @torch.no_grad()
    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's final and initial predictions."""
        return {name: [self.heads[name][-1], self.initial_out[name]] for name in self.heads}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the backbone."""
        self.backbone.set_activation_checkpointing(enabled)


@register_model("padnet", min_tasks=2, tiny={"head_channels": 8})
def padnet(
    config: ModelConfig, tasks: Mapping[str, Task], fuse: bool = True, head_channels: PositiveInt = 64, decoder_stride: PositiveInt = 8
) -> PADNet:
    """PAD-Net: initial predictions, multi-modal distillation, final heads (``fuse``: 1×1 conv-BN-ReLU first);
    ``head_channels``: the distillation width (the official 256), ``decoder_stride``: the finest backbone level read."""
    return PADNet(config, tasks, fuse=fuse, head_channels=head_channels, decoder_stride=decoder_stride)
