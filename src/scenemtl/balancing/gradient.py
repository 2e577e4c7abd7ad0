"""Gradient aggregation: per-task gradients of the shared part in, one update direction out.

``wrt: parameters`` (default) takes the Jacobian of the task losses with respect to the shared
parameters. When the model exposes its shared representation (``cut_features``), each task's
gradient with respect to it is taken through that task's head alone and torchjd's ``backward``
carries all K rows through the shared part in one vmapped pass; otherwise one ``autograd.grad``
per task goes through the whole network. The Jacobian is summed over micro-batches and averaged
over processes *before* it is aggregated, so accumulation and DDP give exactly the aggregation of
the global batch's Jacobian. ``wrt: features`` aggregates the gradients with respect to the
shared representation instead (MGDA-UB, GradDrop's original form, LibMTL's ``rep_grad``) and
back-propagates the aggregate once through the shared part: cheaper, but aggregated per
micro-batch and per process (each sees its own samples' features).

The aggregators come from torchjd where it has them (MGDA, PCGrad, CAGrad, Nash-MTL, IMTL-G,
Aligned-MTL, UPGrad, GradDrop, GradVac); GradNorm and DB-MTL are written here. Random
aggregators draw from a generator seeded by (seed, step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torchjd.aggregation import (
    IMTLG,
    MGDA,
    PCGrad,
    UPGrad,
    AlignedMTL,
    CAGrad,
    GradDrop,
    GradVac,
    NashMTL,
    WeightedAggregator,
)
from torchjd.autojac import backward as jac_backward

from scenemtl.balancing.base import Balancer, StepContext, register_balancer
from scenemtl.errors import ConfigError


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
            grads = torch.autograd.grad(value, features + others, retain_graph=True, allow_unused=True)
            for i, (g, f) in enumerate(zip(grads[: len(features)], features)):
                rows[i].append(g if g is not None else torch.zeros_like(f))
            _accumulate(others, grads[len(features):])
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
                    del p.jac
            return torch.cat(out, dim=1)
        # no representation exposed: one backward per task through the whole network
        out = []
        for value in values:
            grads = torch.autograd.grad(value, shared, retain_graph=True, allow_unused=True)
            out.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, shared)]))
        others = self._others(ctx)
        if others:
            _accumulate(others, torch.autograd.grad(sum(values), others, allow_unused=True))
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
                warnings.warn(f"balancer: the vmapped Jacobian failed ({str(error).splitlines()[0]}); computing its "
                              "rows one at a time from now on (set balancer.options.chunk_size=1 to skip the attempt)",
                              stacklevel=2)
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
            pieces.append(direction[offset: offset + f.numel()].view_as(f).to(f.dtype))
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
            piece = direction[offset: offset + p.numel()].view_as(p).to(p.dtype)
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


class TorchJDAggregation(GradientBalancer):
    """A torchjd aggregator; ``build()`` makes it. Weighted aggregators report their weights."""

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        wrt: Literal["parameters", "features"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)
        # not a submodule: its state (if any) is saved explicitly in get_extra_state
        object.__setattr__(self, "aggregator", self.build())

    def build(self) -> Any:
        """The torchjd aggregator."""
        raise NotImplementedError

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The aggregator's output (and its weights when it is a weighted one)."""
        if isinstance(self.aggregator, WeightedAggregator):
            weights = self.aggregator.weighting(jacobian)
            return weights @ jacobian, weights
        return self.aggregator(jacobian), None


def min_norm_weights(gramian: torch.Tensor, tolerance: float = 1e-12, max_iters: int = 1000) -> torch.Tensor:
    """The convex weights of the min-norm point of the convex hull of K vectors, from their Gramian.

    Wolfe's algorithm ("Finding the nearest point in a polytope", Math. Programming 1976) on
    inner products only: a corral of active vectors, the affine minimiser over it (a bordered
    K×K solve), and a step back to the hull whenever a weight would turn negative. It ends
    after finitely many steps at the exact minimiser (up to the precision of float64, in which
    it runs on the CPU); ``tolerance`` is Wolfe's optimality test relative to the largest
    squared norm. Weights are returned with the Gramian's dtype and device.
    """
    G = gramian.detach().to("cpu", torch.float64)
    K = G.shape[0]
    scale = float(G.diagonal().max().clamp_min(1e-300))
    start = int(G.diagonal().argmin())
    support, w = [start], torch.zeros(K, dtype=torch.float64)
    w[start] = 1.0
    for _ in range(max_iters):
        g = G @ w
        j = int(g.argmin())
        if float(g[j]) >= float(w @ g) - tolerance * scale or j in support:
            break  # x·p_j ≥ x·x for every vector j: x is the min-norm point
        support.append(j)
        while True:  # minor cycle: the affine minimiser over the corral, or the step towards it
            n = len(support)
            system = torch.zeros(n + 1, n + 1, dtype=torch.float64)
            system[:n, :n] = G[support][:, support]
            system[:n, n], system[n, :n] = -1.0, 1.0
            rhs = torch.zeros(n + 1, dtype=torch.float64)
            rhs[n] = 1.0
            v = torch.linalg.lstsq(system, rhs[:, None]).solution[:n, 0]
            current = w[support]
            if bool((v > 1e-15).all()):
                w = torch.zeros(K, dtype=torch.float64)
                w[support] = v
                break
            blocked = v <= 1e-15
            theta = float((current[blocked] / (current[blocked] - v[blocked])).min().clamp(0, 1))
            current = current + theta * (v - current)
            keep = current > 1e-15
            keep[int(torch.where(blocked, current, torch.full_like(current, torch.inf)).argmin())] = False
            w = torch.zeros(K, dtype=torch.float64)
            support = [i for i, k in zip(support, keep.tolist()) if k]
            w[support] = current[keep]
            w = w / w.sum()
    return w.to(gramian.device, gramian.dtype)


@register_balancer("mgda")
class MGDABalancer(TorchJDAggregation):
    """MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the task gradients.

    ``normalization`` scales each gradient before the min-norm problem as the official code's
    ``gradient_normalizers``: ``none``, ``l2`` (‖g_t‖), ``loss`` (L_t) or ``loss+`` (L_t·‖g_t‖).
    As in the official code, the weights found are then applied to the *unnormalised* gradients.
    ``wrt: features`` is MGDA-UB.

    ``solver``: ``exact`` (default) finds the min-norm point itself (``min_norm_weights``);
    ``frank_wolfe`` is the official ``MinNormSolver``'s algorithm (torchjd's Frank–Wolfe; the
    official stops when a step changes the weights by less than 1e-5 or after 250 iterations:
    ``epsilon`` 1e-5, ``max_iters`` 250 here), which can stop short of it: on random 3–5-task
    problems its direction is up to a few % away (cosine ≥ 0.99). The exact solver is the point
    the official one approximates, at a negligible cost for a handful of tasks.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        normalization: Literal["none", "l2", "loss", "loss+"] = "none",
        solver: Literal["exact", "frank_wolfe"] = "exact",
        epsilon: float = 1e-5,
        max_iters: int = 250,
        wrt: Literal["parameters", "features"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise ConfigError(f"balancer.options.normalization must be none, l2, loss or loss+ (got {normalization!r})")
        if solver not in ("exact", "frank_wolfe"):
            raise ConfigError(f"balancer.options.solver must be exact or frank_wolfe (got {solver!r})")
        self.normalization, self.solver, self.epsilon, self.max_iters = normalization, solver, epsilon, max_iters
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)

    def build(self) -> Any:
        """torchjd's MGDA (its Frank–Wolfe solver)."""
        return MGDA(epsilon=self.epsilon, max_iters=self.max_iters)

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Min-norm weights of the normalised gradients, applied to the raw ones."""
        norms = jacobian.norm(dim=1)
        scale = {"none": torch.ones_like(losses), "l2": norms, "loss": losses, "loss+": losses * norms}[self.normalization]
        normalised = jacobian / scale.clamp_min(1e-12).unsqueeze(1)
        if self.solver == "exact":
            weights = min_norm_weights(normalised @ normalised.T)
        else:
            weights = self.aggregator.weighting(normalised)
        return weights @ jacobian, weights


@register_balancer("pcgrad")
class PCGradBalancer(TorchJDAggregation):
    """PCGrad (Yu et al., NeurIPS 2020): project each gradient off the others it conflicts with, in random order, and sum."""

    def build(self) -> Any:
        """torchjd's PCGrad."""
        return PCGrad()


@register_balancer("cagrad")
class CAGradBalancer(TorchJDAggregation):
    """CAGrad (Liu et al., NeurIPS 2021): g₀ + λ·g_w, the best worst-case improvement within a ball around g₀.

    ``c`` = 0.4 and ``rescale`` = 1 (divide by 1 + c²; 2: by 1 + c; 0: none) as the official
    NYUv2 runs. torchjd solves the dual with Clarabel instead of the official SciPy SLSQP.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        c: float = 0.4,
        rescale: int = 1,
        wrt: Literal["parameters", "features"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        if rescale not in (0, 1, 2):
            raise ConfigError(f"balancer.options.rescale must be 0, 1 or 2 (got {rescale})")
        self.c, self.rescale = c, rescale
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)

    def build(self) -> Any:
        """torchjd's CAGrad."""
        return CAGrad(c=self.c)

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """torchjd's weights with the official rescaling."""
        weights = self.aggregator.weighting(jacobian)
        weights = weights / {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        return weights @ jacobian, weights


@register_balancer("nash_mtl")
class NashMTLBalancer(TorchJDAggregation):
    """Nash-MTL (Navon et al., ICML 2022): the bargaining solution Gᵀ G α = 1/α, by torchjd's CCP with ECOS.

    Defaults as the official NYUv2 runs: ``update_weights_every`` 1, ``optim_niter`` 20,
    ``max_norm`` 1 (the update's norm is clipped to it). The solver state resumes exactly.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        optim_niter: int = 20,
        wrt: Literal["parameters", "features"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        self.max_norm, self.update_weights_every, self.optim_niter = max_norm, update_weights_every, optim_niter
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)

    def build(self) -> Any:
        """torchjd's NashMTL."""
        return NashMTL(n_tasks=len(self.tasks), max_norm=self.max_norm,
                       update_weights_every=self.update_weights_every, optim_niter=self.optim_niter)

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """torchjd's Nash-MTL weights (cvxpy's note that the problem is not DPP is expected: it is re-solved each step)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            return super().combine(jacobian, losses, ctx)

    def get_extra_state(self) -> dict:
        """The solver's previous α and step count."""
        w = self.aggregator.weighting
        return {"prvs_alpha": torch.as_tensor(np.asarray(w.prvs_alpha, dtype=np.float64)), "step": float(w.step),
                "normalization_factor": torch.as_tensor(np.asarray(w.normalization_factor, dtype=np.float64))}

    def set_extra_state(self, state: dict) -> None:
        """Restore the solver state (and rebuild its problem, which torchjd builds at step 0)."""
        w = self.aggregator.weighting
        w.prvs_alpha = state["prvs_alpha"].numpy().astype(np.float32)
        w.normalization_factor = state["normalization_factor"].numpy()
        w.step = state["step"]
        if w.step > 0:
            w._init_optim_problem()


@register_balancer("imtl_g")
class IMTLGBalancer(TorchJDAggregation):
    """IMTL-G (Liu et al., ICLR 2021): the combination whose projections on every unit task gradient are equal (weights sum to 1)."""

    def build(self) -> Any:
        """torchjd's IMTLG."""
        return IMTLG()


@register_balancer("aligned_mtl")
class AlignedMTLBalancer(TorchJDAggregation):
    """Aligned-MTL (Senushkin et al., CVPR 2023): align the Jacobian's principal components; ``scale_mode`` min as the paper.

    ``reduction: sum`` (default) adds the K aligned gradients, as the official balancer
    (SamsungLabs/MTL, ``grads[0].sum(-1)``) does; torchjd's default preference vector averages
    them (``reduction: mean``), a step K times smaller, i.e. the learning rate divided by K.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        scale_mode: Literal["min", "median", "rmse"] = "min",
        reduction: Literal["sum", "mean"] = "sum",
        wrt: Literal["parameters", "features"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"balancer.options.reduction must be sum or mean (got {reduction!r})")
        self.scale_mode, self.reduction = scale_mode, reduction
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)

    def build(self) -> Any:
        """torchjd's AlignedMTL (preference vector: the mean)."""
        return AlignedMTL(scale_mode=self.scale_mode)

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """torchjd's weights of the mean, times K for the official sum."""
        weights = self.aggregator.weighting(jacobian)
        if self.reduction == "sum":
            weights = weights * len(weights)
        return weights @ jacobian, weights


@register_balancer("upgrad")
class UPGradBalancer(TorchJDAggregation):
    """UPGrad (Quinton & Rey, 2024, torchjd): average of each gradient projected onto the dual cone of all."""

    def build(self) -> Any:
        """torchjd's UPGrad."""
        return UPGrad()


@register_balancer("graddrop")
class GradDropBalancer(TorchJDAggregation):
    """GradDrop (Chen et al., NeurIPS 2020): keep each coordinate's positive or negative gradients by sign purity.

    The paper applies it to the gradients with respect to activations, so ``wrt`` defaults to
    ``features``; torchjd computes the purity per coordinate of the flattened batch (the paper
    first sums over the batch dimension). ``leak`` 0 as the paper's default.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        leak: float = 0.0,
        wrt: Literal["parameters", "features"] = "features",
        chunk_size: int | None = None,
    ) -> None:
        self.leak = leak
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)

    def build(self) -> Any:
        """torchjd's GradDrop."""
        return GradDrop(leak=torch.full((len(self.tasks),), float(self.leak)) if self.leak else None)


@register_balancer("gradvac")
class GradVacBalancer(TorchJDAggregation):
    """Gradient Vaccine (Wang et al., ICLR 2021): raise pairwise cosines toward their EMA targets (β = ``beta``).

    torchjd applies it to the whole shared part at once (the paper's ``whole_model`` grouping);
    ``beta`` 0.5 as LibMTL's NYUv2 runs. The EMA targets resume exactly.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        beta: float = 0.5,
        wrt: Literal["parameters", "features"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        self.beta = beta
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)

    def build(self) -> Any:
        """torchjd's GradVac."""
        return GradVac(beta=self.beta)

    def get_extra_state(self) -> dict:
        """The EMA cosine targets."""
        phi = self.aggregator.gramian_weighting._phi_t
        return {"phi": phi.clone() if phi is not None else torch.zeros(0)}

    def set_extra_state(self, state: dict) -> None:
        """Restore the EMA cosine targets."""
        weighting = self.aggregator.gramian_weighting
        if state["phi"].numel():
            weighting._phi_t = state["phi"].clone()
            weighting._state_key = (state["phi"].shape[0], state["phi"].dtype)


@register_balancer("gradnorm")
class GradNorm(GradientBalancer):
    """GradNorm (Chen et al., ICML 2018): learn weights so each task's gradient norm tracks its training rate.

    G_t = ‖∇ w_t L_t‖ over the shared part; the weights descend Σ_t |G_t − Ḡ·r_t^α| with Ḡ·r_t^α
    held constant, r_t = L̃_t / mean(L̃), L̃_t = L_t / L_t(0) (the first step's losses, as the
    paper; LibMTL uses the first epoch's average). The weights train with the model's optimiser
    and are renormalised to sum to K after each step, as the paper's Algorithm 1. α = 1.5 (the
    paper's NYUv2 value). Gradients over all shared parameters (the paper uses the last shared
    layer; LibMTL, all of them).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        alpha: float = 1.5,
        wrt: Literal["parameters", "features"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)
        self.alpha = alpha
        self.loss_weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.zeros(len(self.tasks)))

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Σ_t w_t g_t, and the GradNorm loss's gradient into the weights."""
        if bool((self.initial_losses == 0).all()):
            self.initial_losses.copy_(losses)
        norms = jacobian.norm(dim=1)
        with torch.enable_grad():
            g = self.loss_weights * norms.to(self.loss_weights)
            relative = losses / self.initial_losses.clamp_min(1e-12)
            target = (g.mean() * (relative / relative.mean()) ** self.alpha).detach()
            (g - target).abs().sum().mul(ctx.grad_scale).backward()
        weights = self.loss_weights.detach().to(jacobian)
        return weights @ jacobian, weights

    def finish(self, ctx: StepContext) -> dict[str, float]:
        """Aggregate; the weights' own gradient is already identical on every process."""
        out = super().finish(ctx)
        if self.wrt == "parameters":
            self._synced.add(self.loss_weights)
        return out

    def after_step(self, recompute: Any) -> None:
        """Renormalise the weights to sum to K (and keep them positive)."""
        with torch.no_grad():
            w = self.loss_weights.clamp_min(1e-6)
            self.loss_weights.copy_(len(self.tasks) * w / w.sum())


@register_balancer("db_mtl")
class DBMTL(GradientBalancer):
    """DB-MTL (Lin et al., arXiv 2308.12029): log-loss scaling, then gradients scaled to the largest norm.

    Gradients of log(L_t + ε) (the rows of the Jacobian divided by L_t + ε) feed an EMA buffer
    ĝ_t ← g_t + (β/k^σ)(ĝ_t − g_t) at step k; the update is Σ_t (max_s‖ĝ_s‖ / ‖ĝ_t‖)·ĝ_t.
    β = 0.9, σ = 0.5 (LibMTL's ``DB_beta``/``DB_beta_sigma`` for NYUv2). On parameters only, as
    LibMTL. The buffer (K × shared parameters) is part of the checkpoint.
    """

    modes = ("parameters",)

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        beta: float = 0.9,
        beta_sigma: float = 0.5,
        wrt: Literal["parameters"] = "parameters",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(tasks, weights, wrt=wrt, chunk_size=chunk_size)
        self.beta, self.beta_sigma = beta, beta_sigma
        self._buffer: torch.Tensor | None = None
        self._steps = 0

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """EMA of the log-loss gradients, each scaled to the largest norm, summed."""
        log_grads = jacobian / (losses + 1e-8).unsqueeze(1)
        self._steps += 1
        buffer = torch.zeros_like(log_grads) if self._buffer is None else self._buffer.to(log_grads)
        buffer = log_grads + (self.beta / self._steps**self.beta_sigma) * (buffer - log_grads)
        self._buffer = buffer
        norms = buffer.norm(dim=1)
        scale = norms.max() / (norms + 1e-8)
        return scale @ buffer, scale

    def get_extra_state(self) -> dict:
        """The gradient buffer and step count."""
        return {"buffer": self._buffer if self._buffer is not None else torch.zeros(0), "steps": self._steps}

    def set_extra_state(self, state: dict) -> None:
        """Restore the gradient buffer and step count."""
        self._buffer = state["buffer"] if state["buffer"].numel() else None
        self._steps = int(state["steps"])
