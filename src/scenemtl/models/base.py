"""The protocol every architecture implements."""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from scenemtl.errors import ConfigError
from scenemtl.models.output import ModelOutput


if TYPE_CHECKING:
    from scenemtl.extension import TrainingExtension


class MultiTaskModel(nn.Module):
    """Base class of registered architectures: ``forward(image) -> ModelOutput``.

    An architecture whose tasks all read one shared representation (a backbone's feature maps,
    a fused map) implements ``encode(image) -> shared`` and ``decode(shared, size) -> ModelOutput``
    instead of ``forward``; gradient balancers then take each task's gradient at that
    representation (``SharedCut``) rather than over all shared parameters. Architectures whose
    tasks interleave with the shared part (InvPT, TaskPrompter, cross-stitch, MTAN) implement
    ``forward``.

    ``shared_parameters`` names what every task's loss reaches (what gradient balancers act on);
    ``init_output_bias`` starts each task's output at its training prior. An architecture some of
    whose parameters get no gradient in a step sets ``needs_unused_parameters`` (DDP then searches
    for them, which costs time, so it is off otherwise). One whose ``forward`` takes ``tasks`` and
    computes only those tasks sets ``routes_tasks``.
    """

    needs_unused_parameters: bool = False
    #: ``forward(image, tasks=[...])`` computes only the named tasks' outputs (``train.route_tasks``,
    #: ``engine.recalibrate``); the default, ``tasks=None``, computes every task
    routes_tasks: bool = False

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Per-task logits at the input size (and deep-supervision outputs in ``aux``)."""
        if not self.has_shared_representation():
            raise NotImplementedError(f"{type(self).__name__} implements neither forward nor encode/decode")
        return self.decode(self.encode(image), image.shape[-2:])

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The representation every task reads (only for architectures with one)."""
        raise NotImplementedError(f"{type(self).__name__} has no single shared representation")

    def decode(self, shared: Sequence[torch.Tensor], size: Sequence[int]) -> ModelOutput:
        """Every task's outputs at ``size`` from ``shared`` (what ``encode`` returned, or detached copies)."""
        raise NotImplementedError(f"{type(self).__name__} has no single shared representation")

    @classmethod
    def has_shared_representation(cls) -> bool:
        """Whether the architecture splits into ``encode`` and ``decode``."""
        return cls.encode is not MultiTaskModel.encode

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
            f"architecture '{getattr(self, 'arch', type(self).__name__)}' does not support train.activation_checkpointing; set it to false"
        )


class SharedCut(nn.Module):
    """Runs ``model`` with its shared representation cut out of the graph, for gradient balancers.

    ``forward(image)`` encodes, makes detached leaf copies of the shared tensors, decodes from the
    copies and returns the output with ``features`` (the copies) and ``feature_sources`` (the
    originals): a balancer takes each task's gradient with respect to the copies without going back
    through the shared part, then back-propagates into it from the sources once. The engine wraps
    the model in it (before DDP and compilation) when the balancer asks for features.
    """

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        if not model.has_shared_representation():
            raise TypeError(f"{type(model).__name__} has no encode/decode to cut between")
        self.model = model

    def forward(self, image: torch.Tensor) -> ModelOutput:
        sources = tuple(self.model.encode(image))
        features = tuple(f.detach().requires_grad_() for f in sources)
        output = self.model.decode(features, image.shape[-2:])
        output.features, output.feature_sources = features, sources
        return output


def require_tasks(arch: str, tasks: Mapping[str, object], minimum: int, reason: str) -> None:
    """ConfigError unless ``arch`` is given at least ``minimum`` tasks (``reason`` says why it needs them)."""
    if len(tasks) < minimum:
        raise ConfigError(
            f"{arch} needs at least {'two' if minimum == 2 else minimum} tasks ({reason}), got {list(tasks)}; use model.arch=hps for fewer"
        )


def check_positive_ints(value: object, name: str, count: int | None = None) -> None:
    """ConfigError unless the option ``model.options.<name>`` is a positive integer (or a list of ``count`` of them)."""
    if count is not None and not isinstance(value, (list, tuple)):
        raise ConfigError(f"model.options.{name} must be a list of {count} positive integers, got {value!r}")
    values = value if isinstance(value, (list, tuple)) else [value]
    if (count is not None and len(values) != count) or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        shape = f"{count} positive integers" if count else "a positive integer"
        raise ConfigError(f"model.options.{name} must be {shape}, got {value!r}")


def set_output_bias(bias: torch.Tensor, prior: torch.Tensor) -> None:
    """Copy ``prior`` logits into ``bias``; a bias of two channels per prior value (the seeds' two-class outputs
    of binary tasks) gets ``(0, p)``, since softmax(0, p) = sigmoid(p)."""
    prior = prior.to(bias)
    if bias.shape[0] == 2 * prior.shape[0] and prior.shape[0] == 1:
        bias.zero_()
        bias[1:].copy_(prior)
    else:
        bias.copy_(prior)
