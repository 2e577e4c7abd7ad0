"""A light feature-pyramid decoder head (hard parameter sharing, cross-stitch)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.models.layers.conv import conv_norm_act, fp32_conv


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
        self.refine = nn.Sequential(conv_norm_act(channels, channels), conv_norm_act(channels, channels))
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the resolution of the finest used level."""
        selected = [features[i] for i in self.levels]
        size = selected[0].shape[-2:]
        fused = self.lateral[0](selected[0]) + self.image_pool(selected[-1])
        for lateral, feature in zip(self.lateral[1:], selected[1:]):
            fused = fused + F.interpolate(lateral(feature), size=size, mode="bilinear", align_corners=False)
        return fp32_conv(self.classifier, self.refine(fused))
