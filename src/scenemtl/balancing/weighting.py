"""Loss weighting: the gradient is Σ_t w_t·∇L_t with weights from the loss values (or learned).

Uncertainty and the geometric mean use torchjd's scalarizers. DWA, RLW and FAMO are written
here because their torchjd forms keep their own per-call loss history, which would see the
fp16-scaled, per-micro-batch losses of this loop instead of the step's losses averaged over
micro-batches and processes (what makes accumulation and DDP equal one large batch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torchjd.scalarization import UW, GeometricMean

from scenemtl.balancing.base import Balancer, LossWeighting, StepContext, register_balancer
from scenemtl.errors import ConfigError


@register_balancer("uncertainty")
class Uncertainty(LossWeighting):
    """Homoscedastic uncertainty (Kendall et al., CVPR 2018): Σ_t ½e^{−s_t}·L_t + ½s_t, s_t learned.

    ``init`` is the starting log-variance: −0.5 as MTAN's ``logsigma`` (the NYUv2-13 protocol);
    Kendall's paper and torchjd start at 0. The log-variances train with the model's optimiser
    (without weight decay).
    """

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float], init: float = -0.5) -> None:
        super().__init__(tasks, weights)
        self.scalarizer = UW(len(self.tasks))
        with torch.no_grad():
            self.scalarizer.log_var.fill_(init)

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        """torchjd's UW objective."""
        return self.scalarizer(losses)

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """½·e^{−s_t}."""
        return 0.5 * torch.exp(-self.scalarizer.log_var.detach())


@register_balancer("dwa")
class DynamicWeightAverage(LossWeighting):
    """DWA (Liu et al., CVPR 2019, MTAN): λ_k = K·softmax_k(L̄_k(t−1) / L̄_k(t−2) / T).

    L̄ are the epoch-averaged *unweighted* training losses (averaged over processes by the
    loop); the weights are 1 during the first two epochs, as MTAN's ``multi_task_trainer``.
    """

    # buffers (``register_buffer``)
    history: torch.Tensor
    epochs: torch.Tensor

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float], temperature: float = 2.0) -> None:
        super().__init__(tasks, weights)
        if temperature <= 0:
            raise ConfigError(f"balancer.options.temperature must be > 0 (got {temperature})")
        self.temperature = temperature
        self.register_buffer("history", torch.ones(2, len(self.tasks), dtype=torch.float64))
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Shift the two-epoch history."""
        if not all(t in mean_losses for t in self.tasks):
            return
        new = torch.tensor([mean_losses[t] for t in self.tasks], dtype=torch.float64, device=self.history.device)
        self.history.copy_(torch.stack([self.history[1], new]))
        self.epochs += 1

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """K·softmax(rates / T), or ones before two epochs have ended."""
        if int(self.epochs) < 2:
            return torch.ones(len(self.tasks), device=losses.device)
        rates = self.history[1] / self.history[0]
        return (len(self.tasks) * torch.softmax(rates / self.temperature, dim=0)).float().to(losses.device)


@register_balancer("rlw")
class RandomLossWeighting(LossWeighting):
    """RLW (Lin et al., TMLR 2022, Algorithm 2): w = softmax(z), z ~ N(0, I), drawn every step.

    The draw is seeded by (seed, step), so processes agree and a resumed run draws the same
    weights. The weights sum to 1 (EW's sum to K), as in the paper.
    """

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """Fresh softmax-normal weights."""
        return torch.softmax(torch.randn(len(self.tasks)), dim=0).to(losses.device)


@register_balancer("geometric_mean")
class GeometricMeanLoss(LossWeighting):
    """Geometric loss strategy (Chennupati et al., CVPRW 2019): minimise (Π_t L_t)^{1/K}.

    Uses torchjd's ``GeometricMean``; the effective weight of task t is GM/(K·L_t). The objective
    is 1-homogeneous, so scaling the losses (fp16, accumulation) scales its gradient alike.
    """

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float]) -> None:
        super().__init__(tasks, weights)
        self.scalarizer = GeometricMean()

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        """torchjd's geometric mean over the tasks with a loss in this batch.

        A task whose loss is exactly 0 had no label in the batch (partial labels): it is left out
        of the product, which would otherwise be 0 with an undefined gradient.
        """
        present = losses > 0
        if bool(present.all()):
            return self.scalarizer(losses)
        if not bool(present.any()):
            return losses.sum()
        return self.scalarizer(losses[present])

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """∂GM/∂L_t = GM/(K·L_t) over the tasks with a loss; 0 for the others."""
        present = losses > 0
        if not bool(present.any()):
            return torch.ones_like(losses)
        safe = torch.where(present, losses, torch.ones_like(losses))
        mean = torch.exp(torch.log(safe[present]).mean())
        return torch.where(present, mean / (int(present.sum()) * safe), torch.zeros_like(losses))


@register_balancer("famo")
class FAMO(Balancer):
    """FAMO (Liu et al., NeurIPS 2023): decrease every loss at an equal rate, from loss values only.

    The step back-propagates c·Σ_t z_t·log(L_t − b_t + ε) with z = softmax(w) and
    c = (Σ_t z_t/(L_t − b_t + ε))⁻¹ held constant, i.e. weights c·z_t/(L_t − b_t + ε). After the
    optimiser step the loop recomputes the step's losses on the same batches; the logits w take
    an Adam step (``lr``, L2 ``weight_decay``) along ∂softmax(w)/∂w · δ with
    δ_t = log(L_t^before − b_t + ε) − log(L_t^after − b_t + ε). Before/after losses are averaged
    over micro-batches and processes. Defaults: lr 0.025 and weight decay 1e-3 (the paper's
    Algorithm 2; the official code's default decay is 1e-5). Costs one extra forward pass.
    """

    extra_forward = True
    # buffers (``register_buffer``)
    logits: torch.Tensor
    min_losses: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    adam_steps: torch.Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        min_losses: Mapping[str, float] | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(tasks, weights)
        m = len(self.tasks)
        self.lr, self.weight_decay, self.eps = lr, weight_decay, eps
        unknown = set(min_losses or {}) - set(self.tasks)
        if unknown:
            raise ConfigError(f"balancer.options.min_losses: unknown tasks {sorted(unknown)}; tasks are {self.tasks}")
        self.register_buffer("logits", torch.zeros(m))
        self.register_buffer("min_losses", torch.tensor([float((min_losses or {}).get(t, 0.0)) for t in self.tasks]))
        # Adam moments and step count of the logits' own optimiser
        self.register_buffer("exp_avg", torch.zeros(m))
        self.register_buffer("exp_avg_sq", torch.zeros(m))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.long))
        self._before = torch.zeros(m)
        self._count = 0
        self._reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
        self._last: dict[str, float] = {}

    def _weights(self, losses: torch.Tensor) -> torch.Tensor:
        z = torch.softmax(self.logits, dim=0)
        shifted = losses - self.min_losses + self.eps
        c = 1.0 / (z / shifted).sum()
        return c * z / shifted

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> None:
        """Back-propagate Σ_t w_t·L_t with FAMO's weights (the gradient of its log objective)."""
        vector = self.stack(losses)
        weights = self._weights(vector.detach())
        ((weights * vector).sum() * ctx.scale).backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        self._before = self._before.to(vector.device) + vector.detach()
        self._count += 1
        self._last = self.named(weights)
        self._reduce = ctx.all_reduce_mean

    def finish(self, ctx: StepContext) -> dict[str, float]:
        """The weights of the last micro-batch."""
        return dict(self._last)

    def after_step(self, recompute: Callable[[], dict[str, torch.Tensor]]) -> None:
        """One Adam step on the logits from the change of the losses across the update."""
        if self._count == 0:
            return
        before = self._reduce(self._before / self._count)
        after = self._reduce(self.stack(recompute()).detach())
        self._before, self._count = torch.zeros_like(before), 0
        delta = torch.log(before - self.min_losses + self.eps) - torch.log(after - self.min_losses + self.eps)
        z = torch.softmax(self.logits, dim=0)
        grad = z * (delta - (z * delta).sum())  # (∂softmax/∂w)ᵀ·δ
        grad = grad + self.weight_decay * self.logits
        beta1, beta2 = 0.9, 0.999
        self.adam_steps += 1
        t = int(self.adam_steps)
        self.exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq / (1 - beta2**t)).sqrt() + 1e-8
        self.logits.sub_(self.lr * (self.exp_avg / (1 - beta1**t)) / denom)

    def discard(self) -> None:
        """Forget the losses of an abandoned step."""
        self._before, self._count = torch.zeros_like(self._before), 0
