"""Blocks shared by PAD-Net and MTI-Net: residual blocks, attention gates and multi-modal distillation.

Layer shapes follow the re-implementation of both methods by the MTI-Net authors
(SimonVandenhende/Multi-Task-Learning-PyTorch: ``models/layers.py`` for the gates,
``models/padnet.py:MultiTaskDistillationModule`` for the distillation, ``models/resnet.py`` for the
torchvision-style residual blocks the heads are built from), so parameter counts and state layouts
(up to module names) match. Differences: ``SEBlock`` keeps at least one hidden unit (the official
``channels // 16`` is zero below 16 channels, widths the official configurations never use).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels)]


def _shortcut(in_channels: int, out_channels: int) -> nn.Module | None:
    """1×1 conv-BN projection where the widths differ (the official ``downsample``), else identity."""
    return nn.Sequential(*_conv_bn(in_channels, out_channels, 1)) if in_channels != out_channels else None


class BasicBlock(nn.Module):
    """ResNet basic block: 3×3 conv-BN-ReLU, 3×3 conv-BN, plus the (projected) input, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, out_channels, 3)
        self.conv2, self.bn2 = _conv_bn(out_channels, out_channels, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The residual block's output."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1×1 to ``planes``, 3×3, 1×1 to ``4·planes``, plus the (projected) input, ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_channels, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.conv3, self.bn3 = _conv_bn(planes, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The residual block's output."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class SABlock(nn.Module):
    """Spatial attention gate: a 3×3 conv of the input, multiplied by the sigmoid of another 3×3 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.Sigmoid())
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gated message."""
        return self.conv(x) * self.attention(x)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: channels rescaled by a 2-layer MLP (reduction ``r``) of their spatial mean."""

    def __init__(self, channels: int, r: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // r)
        self.squeeze = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with each channel scaled by its excitation."""
        scale = self.squeeze(x.mean(dim=(2, 3)))
        return x * scale[:, :, None, None]


class MultiModalDistillation(nn.Module):
    """PAD-Net's multi-modal distillation: each task's feature plus attention-gated messages of the others.

    ``out[t] = f[t] + Σ_{s ≠ t} SABlock_{t←s}(f[s])``, one gate per ordered pair of tasks
    (``self_attention[t][s]``), every gate ``channels → channels``.
    """

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.self_attention = nn.ModuleDict({
            t: nn.ModuleDict({s: SABlock(channels, channels) for s in self.tasks if s != t}) for t in self.tasks
        })

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's distilled feature."""
        out = {}
        for t in self.tasks:
            messages = [gate(features[s]) for s, gate in self.self_attention[t].items()]
            out[t] = features[t] + torch.stack(messages).sum(dim=0)
        return out
