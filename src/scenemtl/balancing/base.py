"""The balancer seam: per-task losses in, parameter gradients out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from scenemtl.registry import Registry

BALANCERS: Registry = Registry("balancer")
register_balancer = BALANCERS.register


class Balancer(nn.Module):
    """Turns per-task losses into gradients on the model's parameters.

    ``backward`` computes and accumulates the gradients (it calls ``.backward`` itself, so
    gradient-aggregation methods can take per-task gradients of the shared parameters) and
    returns the per-task weights it used, for logging. A balancer is an ``nn.Module`` so that
    learnable weights train with the model's optimiser and its state lands in checkpoints; the
    model never inherits from it.
    """

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.initial_weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}

    def backward(
        self, losses: Mapping[str, torch.Tensor], shared_parameters: Sequence[nn.Parameter]
    ) -> dict[str, float]:
        """Accumulate gradients of the balanced objective; return the weights used per task."""
        raise NotImplementedError

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Called after each epoch with the epoch-averaged unweighted losses (for DWA-style methods)."""


class LossWeighting(Balancer):
    """A balancer that back-propagates Σ_t w_t·L_t with weights from ``weights()``."""

    def weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        """This step's weight of each task."""
        raise NotImplementedError

    def backward(
        self, losses: Mapping[str, torch.Tensor], shared_parameters: Sequence[nn.Parameter]
    ) -> dict[str, float]:
        """Back-propagate the weighted sum."""
        weights = self.weights(losses)
        total = sum(weights[t] * losses[t] for t in losses)
        total.backward()
        return {t: float(weights[t]) for t in losses}


@register_balancer("fixed")
class FixedWeights(LossWeighting):
    """Fixed per-task weights from the config (the seeds' defaults, e.g. edge 50, normals 10)."""

    def weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The configured weights."""
        return {t: self.initial_weights[t] for t in losses}


@register_balancer("equal")
class EqualWeights(LossWeighting):
    """Every task weighted 1, whatever the config says."""

    def weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """All ones."""
        return {t: 1.0 for t in losses}
