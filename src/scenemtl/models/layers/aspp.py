"""Atrous spatial pyramid pooling (DeepLabv3), as MTAN-DeepLab's and DenseMTL's decoders use it.

The layout and state keys are torchvision's ``ASPP`` (``convs.<i>``, ``project``): a 1×1 branch,
a 3×3 branch per dilation rate and an image-pooling branch, each conv (no bias)-BN-ReLU,
concatenated and projected by a 1×1 conv-BN-ReLU with dropout 0.5. It is written here rather than
taken from torchvision because the image-pooling branch differs: a training batch of one image
gives its BatchNorm a single value per channel, which PyTorch rejects; this one then normalises
with the running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.models.layers.conv import conv_norm_act


class _PooledBatchNorm(nn.BatchNorm2d):
    """BatchNorm of the image-pooling branch: a batch with one value per channel uses the running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ImagePooling(nn.Sequential):
    """ASPP's image-level branch: global average, 1×1 conv-BN-ReLU (no bias), broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), _PooledBatchNorm(out_channels), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features, bilinearly resized to ``x``'s size."""
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """DeepLabv3's ASPP: 1×1, one 3×3 per rate and (``pooling``) image pooling, concatenated, projected (dropout 0.5)."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int], pooling: bool = True) -> None:
        super().__init__()
        branches: list[nn.Module] = [conv_norm_act(in_channels, out_channels, 1, act=nn.ReLU)]
        branches += [conv_norm_act(in_channels, out_channels, 3, dilation=int(rate), act=nn.ReLU) for rate in rates]
        if pooling:
            branches.append(ImagePooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*conv_norm_act(len(branches) * out_channels, out_channels, 1, act=nn.ReLU), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated branches, projected."""
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))
