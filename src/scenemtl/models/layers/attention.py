"""Attention gates shared by several architectures, and PAD-Net's multi-modal distillation built on them.

Layer shapes follow the re-implementation of PAD-Net and MTI-Net by the MTI-Net authors
(SimonVandenhende/Multi-Task-Learning-PyTorch: ``models/layers.py`` for the gate,
``models/padnet.py:MultiModalDistillationModule``) and MTAN's scripts (``lorenmt/mtan``) for the
soft-attention mask, so parameter counts and state layouts match.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scenemtl.models.layers.conv import conv_norm_act


class SpatialAttentionGate(nn.Module):
    """PAD-Net's spatial attention gate (``SABlock``): a 3×3 conv of the input times the sigmoid of another 3×3 conv (no biases).

    ``gate``: the attribute name of the sigmoid branch, which its state-dict keys carry: PAD-Net's
    and MTI-Net's distillation call it ``attention`` (as the MTI-Net authors' code), DenseMTL's
    xTAM ``gate`` (``models/xtam.py`` maps DenseMTL's ``SA_<s>.attention`` to it).
    """

    def __init__(self, in_channels: int, out_channels: int, gate: str = "attention") -> None:
        super().__init__()
        self.gate_name = gate
        self.add_module(gate, nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.Sigmoid()))
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gated features."""
        return self.conv(x) * self._modules[self.gate_name](x)


def mtan_attention(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    """MTAN's soft-attention mask: 1×1 conv-BN-ReLU, 1×1 conv-BN-sigmoid (convolutions with bias), one flat Sequential."""
    return nn.Sequential(
        *conv_norm_act(in_channels, mid_channels, 1, bias=True), *conv_norm_act(mid_channels, out_channels, 1, bias=True, act=nn.Sigmoid)
    )


class MultiModalDistillation(nn.Module):
    """PAD-Net's multi-modal distillation (PAD-Net, MTI-Net): each task's feature plus attention-gated messages of the others.

    ``out[t] = f[t] + Σ_{s ≠ t} gate_{t←s}(f[s])``, one ``SpatialAttentionGate`` per ordered pair of
    tasks (``self_attention[t][s]``), every gate ``channels → channels``.
    """

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.self_attention = nn.ModuleDict(
            {t: nn.ModuleDict({s: SpatialAttentionGate(channels, channels) for s in self.tasks if s != t}) for t in self.tasks}
        )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's distilled feature."""
        out = {}
        for t in self.tasks:
            messages = [gate(features[s]) for s, gate in self.self_attention[t].items()]
            out[t] = features[t] + torch.stack(messages).sum(dim=0)
        return out
