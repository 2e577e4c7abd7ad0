"""The balancer seam: per-task losses in, parameter gradients out.

The training loop talks to every method through four calls and never branches on which one
it holds:

- ``backward(losses, ctx)`` once per micro-batch, with the raw (unweighted, unscaled) task
  losses; the balancer back-propagates ``ctx.scale ×`` its objective (``ctx.scale`` folds in the
  fp16 loss scale and the 1/micro-batches share of gradient accumulation).
- ``finish(ctx)`` once per optimiser step, after the last micro-batch: gradient methods
  aggregate the accumulated Jacobian here. It returns the per-task weights used (for logs).
- ``after_step(recompute)`` after the optimiser step; methods that compare losses before and
  after the update (FAMO) call ``recompute()`` for the step's losses under the new parameters.
- ``end_epoch(mean_losses)`` with the epoch-averaged unweighted losses (DWA).

Stateful methods keep their state in buffers or ``get_extra_state`` so it lands in the
checkpoint's ``trainer.pt`` and a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from scenemtl.registry import Registry

BALANCERS: Registry[type[Balancer]] = Registry("balancer")
register_balancer = BALANCERS.register


def _no_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class StepContext:
    """What a balancer may use in one optimiser step.

    ``shared``: parameters every task reaches (the model's ``shared_parameters``); ``parameters``:
    all trainable model parameters; ``features``/``feature_sources``: this micro-batch's shared
    representation as the heads read it (detached) and as the shared part produced it (see
    ``ModelOutput``; empty unless the balancer ``needs_features``); ``scale``: multiplier of the
    objective (fp16 loss scale / micro-batches); ``grad_scale``: the fp16 loss scale alone;
    ``all_reduce_mean``: averages a tensor over processes (identity in one process); ``step``:
    the optimiser step being taken (1-based), which seeds random methods so every process and a
    resumed run draw the same numbers.
    """

    shared: Sequence[nn.Parameter]
    parameters: Sequence[nn.Parameter]
    features: Sequence[torch.Tensor] = ()
    feature_sources: Sequence[torch.Tensor] = ()
    scale: float = 1.0
    grad_scale: float = 1.0
    step: int = 1
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    all_reduce_mean: Callable[[torch.Tensor], torch.Tensor] = _no_reduce


class Balancer(nn.Module):
    """Turns per-task losses into gradients on the model's parameters (see the module docstring).

    A balancer is an ``nn.Module`` so that learnable weights (uncertainty, GradNorm) train with
    the model's optimiser and its state lands in checkpoints; the model never inherits from it.

    ``synchronizes_gradients``: the balancer writes (some) gradients itself from quantities it
    averaged over processes; the training loop then runs every micro-batch without DDP's
    gradient hooks and all-reduces the gradients ``finish`` did not already synchronise.
    ``backward_passes``: backward passes through the shared part per micro-batch, relative to
    one for equal weighting (for the cost column of the balancing benchmark);
    ``extra_forward``: whether ``after_step`` needs a second forward pass; ``needs_features``:
    the loop runs a model that has one through ``SharedCut`` so outputs carry the shared representation.
    """

    synchronizes_gradients: bool = False
    extra_forward: bool = False
    needs_features: bool = False

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.initial_weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}

    @property
    def backward_passes(self) -> int:
        """Backward passes through the shared part per micro-batch."""
        return 1

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> None:
        """Accumulate ``ctx.scale`` × the gradients of this micro-batch's balanced objective."""
        raise NotImplementedError

    def finish(self, ctx: StepContext) -> dict[str, float]:
        """Complete this step's gradients (after the last micro-batch); return the weights used."""
        return {}

    def discard(self) -> None:
        """Forget what ``backward`` accumulated for a step the loop abandons (non-finite loss, out of memory)."""

    def synchronized(self) -> set[nn.Parameter]:
        """Parameters whose gradient ``finish`` already made identical on every process."""
        return set()

    def after_step(self, recompute: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Called after the optimiser step; ``recompute()`` gives the step's losses under the new parameters."""

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Called after each epoch with the epoch-averaged unweighted losses (for DWA-style methods)."""

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Parameter groups this balancer adds to the model's optimiser (never weight-decayed)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": 0.0}] if params else []

    @contextmanager
    def seeded(self, ctx: StepContext) -> Iterator[None]:
        """Draw random numbers from a generator fixed by (seed, step): equal on every process and on resume."""
        devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(ctx.seed * 1_000_003 + ctx.step)
            yield

    def stack(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The losses as one float vector in task order."""
        return torch.stack([losses[t].float() for t in self.tasks])

    def named(self, values: torch.Tensor | Sequence[float]) -> dict[str, float]:
        """A per-task vector as ``{task: float}``."""
        values = values.tolist() if isinstance(values, torch.Tensor) else list(values)
        return {t: float(v) for t, v in zip(self.tasks, values)}


class LossWeighting(Balancer):
    """A balancer that back-propagates a scalar objective of the losses, by default Σ_t w_t·L_t.

    ``weights(losses)`` gives this step's weights from the detached loss values; methods that are
    not a weighted sum override ``objective`` (and ``weights`` then reports the effective weights
    ∂objective/∂L_t). ``regularizer`` adds loss-independent terms (uncertainty's log σ).
    """

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float]) -> None:
        super().__init__(tasks, weights)
        self._last: dict[str, float] = {}

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """This step's weight of each task (a vector in task order) from the detached losses."""
        raise NotImplementedError

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        """The scalar to back-propagate: the weighted sum."""
        return (self.weights(losses.detach()).to(losses) * losses).sum()

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> None:
        """Back-propagate ``ctx.scale`` × the objective."""
        vector = self.stack(losses)
        with self.seeded(ctx):
            (self.objective(vector) * ctx.scale).backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        with self.seeded(ctx):  # the same draw as the objective's, for random weights
            self._last = self.named(self.weights(vector.detach()))

    def finish(self, ctx: StepContext) -> dict[str, float]:
        """The weights of the last micro-batch."""
        return dict(self._last)


@register_balancer("fixed")
class FixedWeights(LossWeighting):
    """Fixed per-task weights from the config (the seeds' defaults, e.g. edge 50, normals 10)."""

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """The configured weights."""
        return torch.tensor([self.initial_weights[t] for t in self.tasks], device=losses.device)


@register_balancer("equal")
class EqualWeights(LossWeighting):
    """Every task weighted 1, whatever the config says (EW / linear scalarisation)."""

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """All ones."""
        return torch.ones(len(self.tasks), device=losses.device)
