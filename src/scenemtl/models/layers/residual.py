"""ResNet's residual blocks (timm's) with the projection shortcut of the MTI-Net authors' heads.

PAD-Net's and MTI-Net's heads (and DiffusionMTL's preliminary decoder) are built from
torchvision-style residual blocks (SimonVandenhende/Multi-Task-Learning-PyTorch,
``models/resnet.py``): timm's ``BasicBlock`` and ``Bottleneck`` have the same layers under the
same names (``conv1``, ``bn1``, …, ``downsample.0``/``.1``), so these are timm's, given a 1×1
conv-BN projection shortcut where the widths differ. The shortcut is attached after the block is
built (not passed to timm's constructor), so it is initialised after the block's own layers, as
the blocks these replace did.
"""

from __future__ import annotations

from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from scenemtl.models.layers.conv import conv_norm_act

#: a bottleneck's output is this many times its ``planes``
BOTTLENECK_EXPANSION = Bottleneck.expansion


def basic_block(in_channels: int, out_channels: int) -> BasicBlock:
    """ResNet basic block: 3×3 conv-BN-ReLU, 3×3 conv-BN, plus the (projected) input, ReLU."""
    block = BasicBlock(in_channels, out_channels)
    block.downsample = _shortcut(in_channels, out_channels)
    return block


def bottleneck(in_channels: int, planes: int) -> Bottleneck:
    """ResNet bottleneck: 1×1 to ``planes``, 3×3, 1×1 to ``4·planes``, plus the (projected) input, ReLU."""
    block = Bottleneck(in_channels, planes)
    block.downsample = _shortcut(in_channels, planes * BOTTLENECK_EXPANSION)
    return block


def _shortcut(in_channels: int, out_channels: int) -> nn.Module | None:
    """1×1 conv-BN projection where the widths differ (the official ``downsample``), else identity (None)."""
    return conv_norm_act(in_channels, out_channels, 1, act=None) if in_channels != out_channels else None
