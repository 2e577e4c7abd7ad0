"""MTAN-DeepLabv3: MTAN's attention on a dilated ResNet (Liu et al., CVPR 2019: "End-to-End Multi-Task Learning with Attention").

Written from ``lorenmt/mtan``: ``im2im_pred/model_resnet_mtan/resnet_mtan.py`` (with
``resnet_dilated.py`` and ``aspp.py`` there), layer for layer:

- a shared ResNet dilated to output stride 8 (``ResnetDilated(dilate_scale=8)``: layers 3 and 4
  lose their stride, the first block of each keeps the previous dilation, the others take 2 and
  4; timm's ``output_stride=8`` dilates the same way, so ``model.backbone.options.output_stride``
  defaults to 8 here);
- per task and ResNet layer i a soft-attention mask over the layer's **last** block: the mask is
  ``mtan_attention(cat(u_b, a))`` (1×1 conv-BN-ReLU-1×1 conv-BN-sigmoid, mid width = layer width / 4)
  of the previous block's output ``u_b`` (for layer 1: ``u_b`` alone) and the task's attended
  feature ``a`` of the layer before, and it multiplies the last block's output;
- between layers, shared by the tasks, an ``encoder_block_att``: a ResNet bottleneck (with its
  1×1 projection shortcut) from layer i's width to layer i + 1's, followed after layer 1 by 2×2
  max pooling (layer 2 halves the resolution); none after layer 4;
- per task a DeepLabv3 head on the attended layer-4 feature: torchvision's ``DeepLabHead`` (ASPP
  with rates 12/24/36 and image pooling, width 256, dropout 0.5, then 3×3 conv-BN-ReLU and a 1×1
  classifier), which is what ``aspp.py`` is; logits resized to the input bilinearly with
  ``align_corners=True`` as the script does.

At ResNet-50 with 13-class segmentation, depth and normals it has the official model's
92,347,921 parameters (the test spells out the sum). The ASPP width is ``model.options.head_channels``
(the official 256: set it, as ``configs/nyud/mtan_deeplab.yaml`` does). The ResNet is timm's: the
same layer shapes and state keys as torchvision's (``resnet50.tv_in1k`` are torchvision's
ImageNet weights, which the script loads); only the timm ResNet family fits (the attention needs
each layer's blocks).

Differences from the official code, and why: the heads output logits (the tasks apply
log-softmax / normalisation in their losses and predictions); any number of tasks (the script
hard-codes three); the pooling after ``encoder_block_att`` uses ``ceil_mode``, and any layer that
halves the resolution (a larger output stride) gets one, so odd input sizes and other output
strides work (identical at stride 8 on even sizes); a layer of one block (tiny test ResNets) has
no previous block, so its input, pooled to the block's output size, stands for ``u_b``; the
image-pooling branch of ASPP normalises a training batch of one image with its running statistics
(the official BatchNorm fails on a single value); ``atrous_rates`` is an option (the official
12/24/36 by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from timm.models.resnet import Bottleneck
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import Backbone, backbone_family
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import ASPP, conv_norm_act, fp32_conv, mtan_attention
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task


def deeplab_head(in_channels: int, out_channels: int, width: int = 256, atrous_rates: Sequence[int] = (12, 24, 36)) -> nn.Sequential:
    """DeepLabv3's head (torchvision's ``DeepLabHead`` layout and keys, ASPP width ``width``)."""
    return nn.Sequential(
        ASPP(in_channels, width, atrous_rates), *conv_norm_act(width, width, 3, act=nn.ReLU), nn.Conv2d(width, out_channels, 1)
    )


def _bottleneck(in_channels: int, out_channels: int) -> Bottleneck:
    """MTAN's ``encoder_block_att``: a bottleneck of width out/4 with a 1×1 conv-BN projection shortcut."""
    planes = out_channels // 4
    projection = conv_norm_act(in_channels, 4 * planes, 1, act=None)
    return Bottleneck(in_channels, planes, downsample=projection)


def _pool_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """2×2 max pooling (ceil mode, as strided convolutions round) until ``x`` has ``reference``'s size."""
    while x.shape[-2:] != reference.shape[-2:]:
        if x.shape[-2] < reference.shape[-2] or x.shape[-1] < reference.shape[-1]:
            raise RuntimeError(f"cannot pool {tuple(x.shape[-2:])} to {tuple(reference.shape[-2:])}")
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    return x


def _check_resnet(name: str) -> None:
    if backbone_family(name) != "resnet":
        raise ConfigError(
            f"arch mtan_deeplab attends over the blocks of a ResNet's layers: 'model.backbone.name: {name}' is not "
            "in timm's ResNet family; use e.g. resnet50 (resnet50.tv_in1k: torchvision's weights, as MTAN), resnet101"
        )


class MTANDeepLab(MultiTaskModel):
    """A shared dilated ResNet, per-task attention over each layer's last block, per-task DeepLabv3 heads."""

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], atrous_rates: Sequence[int], head_channels: int = 64) -> None:
        super().__init__()
        backbone = config.backbone
        _check_resnet(backbone.name)
        if backbone.out_indices is not None or backbone.fuse != "none":
            raise ConfigError(
                "arch mtan_deeplab reads all four ResNet layers itself: leave model.backbone.out_indices "
                "unset and model.backbone.fuse 'none'"
            )
        options = {"output_stride": 8, **backbone.options}
        self.backbone = Backbone(backbone.model_copy(update={"options": options}))
        _, layers = self.backbone.residual_layers()
        ch = [layer.out_channels for layer in layers]
        # the channels of the last block's input (the previous block's output, or the layer's input)
        before = [layer.out_channels if len(layer.blocks) > 1 else layer.in_channels for layer in layers]
        self.encoder_block_att = nn.ModuleList(_bottleneck(ch[i], ch[i + 1]) for i in range(3))
        attended = [ch[0]] + [4 * (ch[i] // 4) for i in range(1, 4)]  # the encoder_block_att outputs
        self.encoder_att = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    [mtan_attention(before[0], ch[0] // 4, ch[0])]
                    + [mtan_attention(before[i] + attended[i], ch[i] // 4, ch[i]) for i in range(1, 4)]
                )
                for name in tasks
            }
        )
        self.heads = nn.ModuleDict(
            {name: deeplab_head(ch[3], task.out_channels, head_channels, atrous_rates) for name, task in tasks.items()}
        )

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Each task's logits at the input size."""
        stem, layers = self.backbone.residual_layers()
        x = image
        for module in stem:
            x = module(x)
        previous, last = [], []  # u_b (input of each layer's last block) and u_t (its output)
        for layer in layers:
            blocks = layer.blocks
            x = blocks[:-1](x) if len(blocks) > 1 else x
            previous.append(x)
            x = blocks[-1](x)
            last.append(x)
        size = image.shape[-2:]
        final = {}
        for name, attention in self.encoder_att.items():
            a = None
            for i in range(4):
                u_b = _pool_to(previous[i], last[i])
                mask_input = u_b if i == 0 else torch.cat([u_b, _pool_to(a, last[i])], dim=1)
                a = attention[i](mask_input) * last[i]
                if i < 3:
                    a = self.encoder_block_att[i](a)
            head = self.heads[name]
            logits = fp32_conv(head[-1], head[:-1](a))
            final[name] = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        return ModelOutput(final=final)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The ResNet and the attention levels' shared bottlenecks."""
        return [*self.backbone.parameters(), *self.encoder_block_att.parameters()]

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """The last convolution of each task's head."""
        return {name: [head[-1]] for name, head in self.heads.items()}


@register_model("mtan_deeplab", tiny={"head_channels": 8})
def mtan_deeplab(
    config: ModelConfig, tasks: Mapping[str, Task], atrous_rates: Sequence[PositiveInt] = (12, 24, 36), head_channels: PositiveInt = 64
) -> MTANDeepLab:
    """MTAN-DeepLabv3 (Liu et al., CVPR 2019): dilated ResNet, per-task attention, per-task ASPP heads
    of width ``head_channels`` (the official 256; 64 by default for the small synthetic scenes)."""
    rates = list(atrous_rates)
    if not rates:
        raise ConfigError("model.options.atrous_rates must list at least one dilation rate")
    return MTANDeepLab(config, tasks, rates, head_channels)
