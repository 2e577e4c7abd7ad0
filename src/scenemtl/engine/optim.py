"""Optimisers and the poly learning-rate schedule with linear warm-up."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from scenemtl.config import TrainConfig


def build_optimizer(config: TrainConfig, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (with momentum) over the trainable parameters."""
    params = [p for p in parameters if p.requires_grad]
    # the fused kernels are several times faster (4× for AdamW on a CPU with many small tensors)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused or None
    )


def poly_factor(step: int, total: int, power: float, warmup: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then (1 − progress)^power down to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 1.0 - progress) ** power


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step poly schedule (InvPT/ATRC's), stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: poly_factor(step, config.steps, config.poly_power, config.warmup_steps)
    )
