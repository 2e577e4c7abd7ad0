"""The Jacobian engine of gradient balancing: per-task gradients of the shared part in, one update out.

``GradientBalancer`` collects, per micro-batch, the K × n Jacobian of the task losses and hands
it to its subclass's ``combine`` (the method classes live in ``aggregators``).

``wrt: parameters`` (default) takes the Jacobian of the task losses with respect to the shared
parameters. When the model exposes its shared representation (``encode``/``decode``, run through
``SharedCut``), each task's
gradient with respect to it is taken through that task's head alone and torchjd's ``backward``
carries all K rows through the shared part in one vmapped pass; otherwise one ``autograd.grad``
per task goes through the whole network. The Jacobian is summed over micro-batches and averaged
over processes *before* it is aggregated, so accumulation and DDP give exactly the aggregation of
the global batch's Jacobian. ``wrt: features`` aggregates the gradients with respect to the
shared representation instead (MGDA-UB, GradDrop's original form, LibMTL's ``rep_grad``) and
back-propagates the aggregate once through the shared part: cheaper, but aggregated per
micro-batch and per process (each sees its own samples' features). Random aggregators draw from
a generator seeded by (seed, step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import warnings
from typing import Literal, cast

import torch
from torch import nn
from torchjd.autojac import backward as jac_backward

from scenemtl.balancing.base import Balancer, StepContext
from scenemtl.errors import ConfigError

__all__ = ["GradientBalancer"]


class GradientBalancer(Balancer):
    """Base of methods that combine per-task gradients; subclasses implement ``combine``."""

    synchronizes_gradients = True
    needs_features = True
    #: the ``wrt`` modes a method supports
    modes: tuple[str, ...] = ("parameters", "features")

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        wrt: Literal["parameters", "features"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(tasks, weights)
        if wrt not in self.modes:
            raise ConfigError(f"balancer.options.wrt: {type(self).__name__} supports {list(self.modes)}, not {wrt!r}")
        self.wrt = wrt
        # torchjd differentiates the tasks' rows in parallel (vmap) by default; 1 = one after the other
        # (less memory; also the fallback when vmap cannot run the graph)
        self.chunk_size = chunk_size
        self._vmap_ok = True
        self._jacobian: torch.Tensor | None = None
        self._loss_sum: torch.Tensor | None = None
        self._count = 0
        self._weight_sum: torch.Tensor | None = None
        self._synced: set[nn.Parameter] = set()

    @property
    def backward_passes(self) -> int:
        """One backward through the shared part per task (parameters) or one in all (features)."""
        return len(self.tasks) if self.wrt == "parameters" else 1

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The update direction from the (K × n) Jacobian and the K losses, and the weights w with direction wᵀJ (or None)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------
    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> None:
        """Accumulate this micro-batch's Jacobian (parameters) or apply its aggregate (features)."""
        if not ctx.shared:
            raise ConfigError(
                f"balancer '{type(self).__name__}' combines gradients of shared parameters, but this model shares "
                "none (e.g. model.arch=stl); use a loss-weighting balancer such as 'equal'"
            )
        vector = self.stack(losses).detach()
        self._loss_sum = vector if self._loss_sum is None else self._loss_sum + vector
        self._count += 1
        values = [losses[t].float() * ctx.scale for t in self.tasks]
        if self.wrt == "parameters":
            rows = self._parameter_jacobian(values, ctx)
            self._jacobian = rows if self._jacobian is None else self._jacobian + rows
        else:
            self._features_backward(values, vector, ctx)

    def _others(self, ctx: StepContext) -> list[nn.Parameter]:
        shared = set(ctx.shared)
        return [p for p in ctx.parameters if p.requires_grad and p not in shared]

    def _feature_rows(self, values: list[torch.Tensor], ctx: StepContext) -> list[torch.Tensor]:
        """Each task's gradient w.r.t. the representation the heads read (K-row Jacobians, one per feature map).

        The heads' own parameters get their gradients on the way (one pass per task through its head).
        """
        features, others = list(ctx.features), self._others(ctx)
        rows: list[list[torch.Tensor]] = [[] for _ in features]
        for value in values:
            grads = torch.autograd.grad(value, [*features, *others], retain_graph=True, allow_unused=True)
            for i, (g, f) in enumerate(zip(grads[: len(features)], features)):
                rows[i].append(g if g is not None else torch.zeros_like(f))
            _accumulate(others, grads[len(features) :])
        return [torch.stack(r) for r in rows]

    def _parameter_jacobian(self, values: list[torch.Tensor], ctx: StepContext) -> torch.Tensor:
        shared = [p for p in ctx.shared if p.requires_grad]
        if ctx.features:
            # K-row Jacobian w.r.t. the representation, then torchjd's vmapped backward of all K rows
            # through the shared part at once into the shared parameters' .jac
            rows = self._feature_rows(values, ctx)
            self._jacobian_backward(list(ctx.feature_sources), rows, shared)
            out = []
            for p in shared:
                jac = getattr(p, "jac", None)
                out.append(jac.reshape(len(values), -1).float() if jac is not None else p.new_zeros(len(values), p.numel()))
                if jac is not None:
                    delattr(p, "jac")  # set by torchjd's backward
            return torch.cat(out, dim=1)
        # no representation exposed: one backward per task through the whole network
        out = []
        for value in values:
            grads = torch.autograd.grad(value, shared, retain_graph=True, allow_unused=True)
            out.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, shared)]))
        others = self._others(ctx)
        if others:
            total = cast(torch.Tensor, sum(values))  # one value per task, never empty: a tensor, not sum()'s start 0
            _accumulate(others, torch.autograd.grad(total, others, allow_unused=True))
        return torch.stack(out)

    def _jacobian_backward(self, sources: list[torch.Tensor], rows: list[torch.Tensor], shared: list[nn.Parameter]) -> None:
        """torchjd's backward of K rows at once (vmap); one row at a time where vmap cannot run the graph."""
        if self.chunk_size is None and self._vmap_ok:
            try:
                jac_backward(sources, jac_tensors=rows, inputs=shared, retain_graph=True)
                return
            except RuntimeError as error:  # e.g. vmap over a bf16 autocast graph ("expected scalar type")
                for p in shared:
                    if hasattr(p, "jac"):
                        del p.jac
                self._vmap_ok = False
                warnings.warn(
                    f"balancer: the vmapped Jacobian failed ({str(error).splitlines()[0]}); computing its "
                    "rows one at a time from now on (set balancer.options.chunk_size=1 to skip the attempt)",
                    stacklevel=2,
                )
        jac_backward(sources, jac_tensors=rows, inputs=shared, parallel_chunk_size=self.chunk_size or 1)

    def _features_backward(self, values: list[torch.Tensor], losses: torch.Tensor, ctx: StepContext) -> None:
        if not ctx.features:
            raise ConfigError(
                "balancer.options.wrt=features: this architecture does not expose one shared representation; use wrt=parameters"
            )
        rows = self._feature_rows(values, ctx)
        jacobian = torch.cat([r.reshape(len(values), -1).float() for r in rows], dim=1) / ctx.scale
        with self.seeded(ctx):
            direction, weights = self.combine(jacobian, losses, ctx)
        if weights is not None:
            self._weight_sum = weights if self._weight_sum is None else self._weight_sum + weights
        direction = direction * ctx.scale
        pieces, offset = [], 0
        for f in ctx.feature_sources:
            pieces.append(direction[offset : offset + f.numel()].view_as(f).to(f.dtype))
            offset += f.numel()
        torch.autograd.backward(list(ctx.feature_sources), grad_tensors=pieces)

    def finish(self, ctx: StepContext) -> dict[str, float]:
        """Aggregate the step's Jacobian (parameters mode) and write the shared gradients."""
        self._synced = set()
        if self._count == 0:
            return {}
        if self.wrt == "features":
            weights = None if self._weight_sum is None else self._weight_sum / self._count
            self.discard()
            return {} if weights is None else self.named(weights)
        assert self._jacobian is not None and self._loss_sum is not None
        jacobian = ctx.all_reduce_mean(self._jacobian / ctx.grad_scale)
        losses = ctx.all_reduce_mean(self._loss_sum / self._count)
        self.discard()
        with self.seeded(ctx):
            direction, weights = self.combine(jacobian, losses, ctx)
        direction = direction * ctx.grad_scale
        offset = 0
        for p in ctx.shared:
            if not p.requires_grad:
                continue
            piece = direction[offset : offset + p.numel()].view_as(p).to(p.dtype)
            p.grad = piece.clone() if p.grad is None else p.grad + piece
            offset += p.numel()
            self._synced.add(p)
        return {} if weights is None else self.named(weights)

    def discard(self) -> None:
        """Drop what this step accumulated."""
        self._jacobian, self._loss_sum, self._weight_sum, self._count = None, None, None, 0

    def synchronized(self) -> set[nn.Parameter]:
        """The shared parameters, whose gradient came from the process-averaged Jacobian."""
        return set(self._synced)


def _accumulate(params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None]) -> None:
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g.detach().clone() if p.grad is None else p.grad + g
