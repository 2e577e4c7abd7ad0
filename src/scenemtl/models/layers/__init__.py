"""Building blocks shared by the architectures, one copy each.

``conv`` (conv-norm-activation, float32 output convolutions, bilinear resizing), ``winograd`` (3×3
convolutions by Winograd's F(4×4, 3×3) and F(2×2, 3×3) on a CPU), ``residual``
(ResNet blocks), ``attention`` (attention gates, MTAN's mask, PAD-Net's distillation), ``aspp``
(DeepLabv3's ASPP), ``fpn`` (the FPN decoder head) and ``recompute`` (activation checkpointing that
leaves batch-norm statistics as without it). A block only one architecture uses lives
in that architecture's module. Transformer MLPs are timm's ``timm.layers.Mlp``.
"""

from scenemtl.models.layers.aspp import ASPP, ImagePooling
from scenemtl.models.layers.attention import MultiModalDistillation, SpatialAttentionGate, mtan_attention
from scenemtl.models.layers.conv import (
    ConvPointwise,
    as_written,
    conv3x3_of_resized,
    conv_norm_act,
    fp32_conv,
    regrid,
    relu_inplace,
    resize,
    shortcuts_allowed,
)
from scenemtl.models.layers.fpn import FPNHead
from scenemtl.models.layers.recompute import recomputed
from scenemtl.models.layers.residual import BOTTLENECK_EXPANSION, basic_block, bottleneck
from scenemtl.models.layers.winograd import Conv3x3, winograd_conv3x3

__all__ = [
    "ASPP",
    "BOTTLENECK_EXPANSION",
    "Conv3x3",
    "ConvPointwise",
    "FPNHead",
    "ImagePooling",
    "MultiModalDistillation",
    "SpatialAttentionGate",
    "as_written",
    "basic_block",
    "bottleneck",
    "conv3x3_of_resized",
    "conv_norm_act",
    "fp32_conv",
    "mtan_attention",
    "recomputed",
    "regrid",
    "relu_inplace",
    "resize",
    "shortcuts_allowed",
    "winograd_conv3x3",
]
