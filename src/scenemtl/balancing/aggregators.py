"""The gradient aggregation methods, each registered by name (``balancer.name``).

Each class is a ``GradientBalancer`` (the Jacobian engine in ``jacobian``) that turns the K × n
Jacobian of the task losses into one update direction in ``combine``. The aggregators come from
torchjd where it has them (MGDA, PCGrad, CAGrad, Nash-MTL, IMTL-G, Aligned-MTL, UPGrad,
GradDrop, GradVac); GradNorm and DB-MTL are written here, and MGDA's exact solver is in
``min_norm``. The stateful torchjd aggregators (Nash-MTL, GradVac) save and restore their state
through ``torchjd_state``, the only module that touches torchjd's private attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import warnings
from typing import Any, Literal

import torch
from torch import nn
from torchjd.aggregation import IMTLG, MGDA, AlignedMTL, CAGrad, GradDrop, GradVac, NashMTL, PCGrad, UPGrad, WeightedAggregator

from scenemtl.balancing import torchjd_state
from scenemtl.balancing.base import StepContext, register_balancer
from scenemtl.balancing.jacobian import GradientBalancer
from scenemtl.balancing.min_norm import min_norm_weights
from scenemtl.errors import ConfigError

__all__ = [
    "AlignedMTLBalancer",
    "CAGradBalancer",
    "DBMTL",
    "GradDropBalancer",
    "GradNorm",
    "GradVacBalancer",
    "IMTLGBalancer",
    "MGDABalancer",
    "NashMTLBalancer",
    "PCGradBalancer",
    "TorchJDAggregation",
    "UPGradBalancer",
]


class TorchJDAggregation(GradientBalancer):
    """A torchjd aggregator; ``build()`` makes it. Weighted aggregators report their weights."""

    @functools.cached_property
    def aggregator(self) -> Any:
        """The torchjd aggregator, built on first use; not a submodule: its state (if any) is saved in get_extra_state."""
        return self.build()

    def build(self) -> Any:
        """The torchjd aggregator."""
        raise NotImplementedError

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The aggregator's output (and its weights when it is a weighted one)."""
        if isinstance(self.aggregator, WeightedAggregator):
            weights = self.aggregator.weighting(jacobian)
            return weights @ jacobian, weights
        return self.aggregator(jacobian), None


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
        return NashMTL(
            n_tasks=len(self.tasks), max_norm=self.max_norm, update_weights_every=self.update_weights_every, optim_niter=self.optim_niter
        )

    def combine(self, jacobian: torch.Tensor, losses: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """torchjd's Nash-MTL weights (cvxpy's note that the problem is not DPP is expected: it is re-solved each step)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            return super().combine(jacobian, losses, ctx)

    def get_extra_state(self) -> dict[str, Any]:
        """The solver's previous α and step count."""
        return torchjd_state.nash_mtl_state(self.aggregator)

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the solver state (and rebuild its problem, which torchjd builds at step 0)."""
        torchjd_state.load_nash_mtl_state(self.aggregator, state)


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

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        """The EMA cosine targets."""
        return torchjd_state.gradvac_state(self.aggregator)

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the EMA cosine targets."""
        torchjd_state.load_gradvac_state(self.aggregator, state)


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

    # buffer (``register_buffer``)
    initial_losses: torch.Tensor

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

    def get_extra_state(self) -> dict[str, Any]:
        """The gradient buffer and step count."""
        return {"buffer": self._buffer if self._buffer is not None else torch.zeros(0), "steps": self._steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the gradient buffer and step count."""
        self._buffer = state["buffer"] if state["buffer"].numel() else None
        self._steps = int(state["steps"])
