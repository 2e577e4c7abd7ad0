"""The protocol every architecture implements."""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Mapping

import torch
from torch import nn

from scenemtl.errors import ConfigError
from scenemtl.models.output import ModelOutput


if TYPE_CHECKING:
    from scenemtl.extension import TrainingExtension


class MultiTaskModel(nn.Module):
    """Base class of registered architectures: ``forward(image) -> ModelOutput``.

    ``shared_parameters`` names what every task's loss reaches (what gradient balancers act on);
    ``init_output_bias`` starts each task's output at its training prior. An architecture some of
    whose parameters get no gradient in a step sets ``needs_unused_parameters`` (DDP then searches
    for them, which costs time, so it is off otherwise).
    """

    needs_unused_parameters: bool = False
    #: set by gradient balancers: forward returns the shared representation and the detached
    #: copies the heads read (``ModelOutput.features``); architectures without one such cut ignore it
    cut_features: bool = False

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Per-task logits at the input size (and deep-supervision outputs in ``aux``)."""
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters shared by all tasks (none by default)."""
        return []

    def training_extension(self) -> "TrainingExtension | None":
        """What this model adds to the training loop beyond its task losses (``scenemtl.extension``); none by default."""
        return None

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's output layers: the convolutions whose bias is the task's logits (final and deeply
        supervised outputs). Architectures that support ``init_output_bias`` list them."""
        raise NotImplementedError(f"{type(self).__name__} lists no output layers")

    @torch.no_grad()
    def init_output_bias(self, priors: Mapping[str, torch.Tensor]) -> None:
        """Set the bias of each of a task's ``output_layers`` to ``priors[task]`` logits (``set_output_bias``)."""
        layers = self.output_layers()
        for name, prior in priors.items():
            for layer in layers.get(name, ()):
                set_output_bias(layer.bias, prior)

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in the backward pass instead of storing them (less memory, more time)."""
        raise ConfigError(
            f"architecture '{getattr(self, 'arch', type(self).__name__)}' does not support "
            "train.activation_checkpointing; set it to false"
        )


def require_tasks(arch: str, tasks: Mapping[str, object], minimum: int, reason: str) -> None:
    """ConfigError unless ``arch`` is given at least ``minimum`` tasks (``reason`` says why it needs them)."""
    if len(tasks) < minimum:
        raise ConfigError(f"{arch} needs at least {'two' if minimum == 2 else minimum} tasks ({reason}), got "
                          f"{list(tasks)}; use model.arch=hps for fewer")


def set_output_bias(bias: torch.Tensor, prior: torch.Tensor) -> None:
    """Copy ``prior`` logits into ``bias``; a bias of two channels per prior value (the seeds' two-class outputs
    of binary tasks) gets ``(0, p)``, since softmax(0, p) = sigmoid(p)."""
    prior = prior.to(bias)
    if bias.shape[0] == 2 * prior.shape[0] and prior.shape[0] == 1:
        bias.zero_()
        bias[1:].copy_(prior)
    else:
        bias.copy_(prior)
