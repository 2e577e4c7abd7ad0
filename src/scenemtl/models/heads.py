"""Reusable decoder blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Conv → BatchNorm → ReLU with 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FPNHead(nn.Module):
    """A light feature-pyramid decoder: project each level, upsample to the finest, sum, refine, classify.

    Levels with a stride below ``min_stride`` (the stride-2 stem of most CNNs) are skipped: they
    cost most and add little at 1/4 resolution, where the seeds' decoders work too. An
    image-level branch (global average of the coarsest level, as DeepLab's image pooling) adds
    scene-wide context, which metric depth and normals need.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        channels: int,
        out_channels: int,
        min_stride: int = 4,
    ) -> None:
        super().__init__()
        self.levels = [i for i, s in enumerate(strides) if s >= min_stride] or [len(strides) - 1]
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels[i], channels, 1) for i in self.levels)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels[self.levels[-1]], channels, 1), nn.ReLU())
        self.refine = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the resolution of the finest used level."""
        selected = [features[i] for i in self.levels]
        size = selected[0].shape[-2:]
        fused = self.lateral[0](selected[0]) + self.image_pool(selected[-1])
        for lateral, feature in zip(self.lateral[1:], selected[1:]):
            fused = fused + F.interpolate(lateral(feature), size=size, mode="bilinear", align_corners=False)
        return fp32_conv(self.classifier, self.refine(fused))


class Mlp(nn.Module):
    """Linear → GELU → Linear, named ``fc1``/``fc2`` as timm's ``Mlp`` (and the seeds' copies of it)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def fp32_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply an output convolution in float32 even under autocast: bf16 logits would round depth by ~0.4 %."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return conv(x.float())


def upsample_to(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of logits to the input size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
