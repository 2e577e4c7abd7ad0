"""Gradient aggregators: golden values on hand-made Jacobians, and the plumbing.

The properties every method is tested against (permutation, non-conflict, determinism, state
round trip) are mixins over the registry in ``properties``, applied in ``test_properties``.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from scenemtl.balancing import BALANCERS, GradientBalancer, StepContext, build_balancer
from scenemtl.errors import ConfigError
from tests.balancing.properties import ALL_METHODS, GRADIENT_METHODS, LOSS_WEIGHTINGS

TASKS3 = ["a", "b", "c"]


def make(name: str, tasks=TASKS3, **options) -> GradientBalancer:
    return build_balancer(name, tasks, {}, options)


def combine(balancer: GradientBalancer, jacobian: torch.Tensor, losses: torch.Tensor | None = None, step: int = 1):
    losses = torch.ones(jacobian.shape[0], dtype=jacobian.dtype) if losses is None else losses
    ctx = StepContext(shared=[], parameters=[], step=step)
    with balancer.seeded(ctx):
        return balancer.combine(jacobian, losses, ctx)


def random_jacobian(seed: int, m: int = 3, n: int = 7) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_the_registry_splits_into_gradient_methods_and_loss_weightings():
    assert GRADIENT_METHODS and LOSS_WEIGHTINGS and sorted(GRADIENT_METHODS + LOSS_WEIGHTINGS) == ALL_METHODS
    for name in GRADIENT_METHODS:
        balancer = make(name)
        assert isinstance(balancer, GradientBalancer) and balancer.synchronizes_gradients and balancer.needs_features
        assert balancer.wrt in type(balancer).modes
        assert balancer.backward_passes == (3 if balancer.wrt == "parameters" else 1)
    for name in LOSS_WEIGHTINGS:
        balancer = make(name)
        assert not isinstance(balancer, GradientBalancer) and not balancer.synchronizes_gradients
        assert balancer.backward_passes == 1


# --- MGDA ---------------------------------------------------------------------------------
def test_mgda_two_gradients_matches_the_closed_form():
    g1, g2 = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64), torch.tensor([-1.0, 1.0, 0.5], dtype=torch.float64)
    gamma = float(((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1))
    direction, weights = combine(make("mgda", ["a", "b"], epsilon=1e-9, max_iters=1000), torch.stack([g1, g2]))
    assert weights.tolist() == pytest.approx([gamma, 1 - gamma], abs=1e-6)
    assert direction.tolist() == pytest.approx((gamma * g1 + (1 - gamma) * g2).tolist(), abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_mgda_is_the_min_norm_point_of_the_convex_hull(seed):
    jacobian = random_jacobian(seed)
    direction, weights = combine(make("mgda", epsilon=1e-9, max_iters=5000), jacobian)
    assert float(weights.sum()) == pytest.approx(1.0) and bool((weights >= -1e-12).all())
    # brute force over a fine grid of the simplex
    best = math.inf
    steps = 200
    for i in range(steps + 1):
        for j in range(steps + 1 - i):
            w = torch.tensor([i, j, steps - i - j], dtype=torch.float64) / steps
            best = min(best, float((w @ jacobian).norm()))
    assert float(direction.norm()) <= best + 1e-3


def _exact_min_norm(gramian: np.ndarray) -> np.ndarray:
    """The min-norm convex weights by enumeration: on every support, the KKT system of the
    equality-constrained problem; the best nonnegative solution wins."""
    k, best, best_value = len(gramian), None, math.inf
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            system = np.zeros((size + 1, size + 1))
            system[:size, :size] = gramian[np.ix_(s, s)]
            system[:size, size], system[size, :size] = -1.0, 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            solution = np.linalg.lstsq(system, rhs, rcond=None)[0][:size]
            if (solution < -1e-12).any():
                continue
            w = np.zeros(k)
            w[s] = solution
            if w @ gramian @ w < best_value - 1e-15:
                best, best_value = w, w @ gramian @ w
    return best


@pytest.mark.parametrize("seed", range(40))
def test_mgda_reaches_the_exact_min_norm_point(seed):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(2, 6)), int(rng.integers(2, 40))
    jacobian = rng.normal(size=(k, n))
    if seed % 3 == 1:
        jacobian += 3 * rng.normal(size=(1, n))  # correlated tasks
    elif seed % 3 == 2:
        jacobian *= rng.uniform(0.01, 10, size=(k, 1))  # gradients of very different sizes
    exact = _exact_min_norm(jacobian @ jacobian.T) @ jacobian
    direction, weights = combine(make("mgda", [f"t{i}" for i in range(k)]), torch.tensor(jacobian))
    assert float(weights.sum()) == pytest.approx(1.0) and bool((weights >= 0).all())
    assert np.linalg.norm(direction.numpy() - exact) <= 1e-4 * max(1.0, np.linalg.norm(exact))


def test_mgda_frank_wolfe_is_the_official_solver_and_stops_short():
    balancer = make("mgda")
    assert (balancer.solver, balancer.aggregator.epsilon, balancer.aggregator.max_iters) == ("exact", 1e-5, 250)
    rng = np.random.default_rng(23)
    gaps = []
    for _ in range(20):
        jacobian = rng.normal(size=(5, 11))
        exact = _exact_min_norm(jacobian @ jacobian.T) @ jacobian
        direction, _ = combine(make("mgda", list("abcde"), solver="frank_wolfe"), torch.tensor(jacobian))
        gaps.append(np.linalg.norm(direction.numpy() - exact) / np.linalg.norm(exact))
    assert max(gaps) > 1e-3  # Frank–Wolfe with the official stopping rule ends away from the minimiser
    with pytest.raises(ConfigError, match="solver"):
        make("mgda", solver="cvx")


def test_mgda_normalisations_weigh_the_raw_gradients():
    jacobian = torch.tensor([[10.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    losses = torch.tensor([2.0, 1.0], dtype=torch.float64)
    _, plain = combine(make("mgda", ["a", "b"], epsilon=1e-9), jacobian, losses)
    assert plain.tolist() == pytest.approx([1 / 101, 100 / 101], abs=1e-4)  # min-norm of (10,0),(0,1)
    direction, l2 = combine(make("mgda", ["a", "b"], normalization="l2", epsilon=1e-9), jacobian, losses)
    assert l2.tolist() == pytest.approx([0.5, 0.5], abs=1e-4)  # unit gradients: the midpoint
    assert direction.tolist() == pytest.approx([5.0, 0.5], abs=1e-3)  # ...applied to the raw gradients
    with pytest.raises(ConfigError, match="normalization"):
        make("mgda", normalization="max")


# --- PCGrad -------------------------------------------------------------------------------
def test_pcgrad_removes_the_conflicting_component():
    g1, g2 = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([-1.0, 0.5], dtype=torch.float64)
    assert float(g1 @ g2) < 0
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    assert float(p1 @ g2) == pytest.approx(0.0, abs=1e-12) and float(p2 @ g1) == pytest.approx(0.0, abs=1e-12)
    direction, _ = combine(make("pcgrad", ["a", "b"]), torch.stack([g1, g2]))
    assert direction.tolist() == pytest.approx((p1 + p2).tolist(), abs=1e-9)


def test_pcgrad_leaves_agreeing_gradients_alone():
    jacobian = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1], [0.3, 0.1, 2.0]], dtype=torch.float64)
    direction, weights = combine(make("pcgrad"), jacobian)
    assert weights.tolist() == pytest.approx([1.0, 1.0, 1.0]) and direction.tolist() == pytest.approx(jacobian.sum(0).tolist())


# --- CAGrad, IMTL-G, Nash-MTL, UPGrad, Aligned-MTL -------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_cagrad_update_lies_on_the_ball_around_the_mean_gradient(seed):
    jacobian, c = random_jacobian(seed), 0.4
    direction, weights = combine(make("cagrad", c=c), jacobian)
    g0 = jacobian.mean(0)
    unscaled = direction * (1 + c**2)  # the official rescale=1
    assert float((unscaled - g0).norm()) == pytest.approx(c * float(g0.norm()), rel=1e-3)
    # g₀ + λ·g_w with g_w in the convex hull: every weight is at least the mean's 1/K
    assert bool((weights * (1 + c**2) >= 1 / 3 - 1e-6).all())
    # the worst-case improvement beats the mean gradient's, which is what CAGrad maximises
    assert float((jacobian @ unscaled).min()) >= float((jacobian @ g0).min()) - 1e-6


def test_imtl_g_equalises_the_projections_on_unit_gradients():
    g1, g2 = torch.tensor([3.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    u1, u2 = g1 / g1.norm(), g2 / g2.norm()
    difference = u1 - u2
    alpha = float(g2 @ difference / ((g2 - g1) @ difference))  # closed form for two tasks
    direction, weights = combine(make("imtl_g", ["a", "b"]), torch.stack([g1, g2]))
    assert weights.tolist() == pytest.approx([alpha, 1 - alpha], abs=1e-9)
    assert float(direction @ u1) == pytest.approx(float(direction @ u2), abs=1e-9)


def test_nash_mtl_solves_the_bargaining_equation_on_orthogonal_gradients():
    # orthogonal gradients: Gᵀ G α = 1/α gives α_t ∝ 1/‖g_t‖, i.e. a direction ∝ the sum of unit gradients
    jacobian = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
    direction, weights = combine(make("nash_mtl", ["a", "b"], max_norm=0.0), jacobian)
    assert float(weights[0] * 4.0) == pytest.approx(float(weights[1] * 0.5), rel=1e-3)
    clipped, _ = combine(make("nash_mtl", ["a", "b"], max_norm=0.1), jacobian)
    assert float(clipped.norm()) == pytest.approx(0.1, rel=1e-4)


def test_upgrad_golden_value():
    # the example in torchjd's documentation of UPGrad
    jacobian = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    direction, _ = combine(make("upgrad", ["a", "b"]), jacobian)
    assert direction.tolist() == pytest.approx([0.2929, 1.9004, 1.9004], abs=1e-4)


def test_aligned_mtl_sums_the_aligned_gradients_as_the_official_balancer():
    # orthogonal gradients of norms 3 and 1: the Gramian's eigenvalues are 9 and 1; aligning to the
    # smallest (scale_mode min) makes both unit vectors, and the official update is their sum
    jacobian = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    direction, weights = combine(make("aligned_mtl", ["a", "b"]), jacobian)
    assert direction.tolist() == pytest.approx([1.0, 1.0]) and weights.tolist() == pytest.approx([1 / 3, 1.0])
    mean, _ = combine(make("aligned_mtl", ["a", "b"], reduction="mean"), jacobian)
    assert mean.tolist() == pytest.approx([0.5, 0.5])  # torchjd's default: the mean, a step K times smaller
    # any Jacobian: Σ_t of the rows of B·J, B = sqrt(λ_min)·V Λ^{-1/2} Vᵀ from the Gramian's eigen-decomposition
    J = random_jacobian(5).numpy()
    values, vectors = np.linalg.eigh(J @ J.T)
    aligned = np.sqrt(values.min()) * vectors @ np.diag(values**-0.5) @ vectors.T @ J
    direction, _ = combine(make("aligned_mtl"), torch.tensor(J))
    assert direction.numpy() == pytest.approx(aligned.sum(0), abs=1e-9)
    with pytest.raises(ConfigError, match="reduction"):
        make("aligned_mtl", reduction="max")


# --- GradDrop, GradVac ------------------------------------------------------------------------
def test_graddrop_keeps_one_sign_per_coordinate_and_is_seeded():
    jacobian = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-1.0, -1.0, 1.0, -0.5], [2.0, 1.0, -1.0, 0.5]])
    balancer = make("graddrop")
    direction, weights = combine(balancer, jacobian, step=7)
    assert weights is None
    for k in range(jacobian.shape[1]):
        column = jacobian[:, k]
        kept = direction[k]
        # the output is the sum of the positive entries or of the negative ones
        assert float(kept) in (pytest.approx(float(column.clamp_min(0).sum())), pytest.approx(float(column.clamp_max(0).sum())))
    again, _ = combine(make("graddrop"), jacobian, step=7)
    assert torch.equal(direction, again)
    # all agreeing: nothing is dropped
    same, _ = combine(make("graddrop"), jacobian.abs(), step=3)
    assert torch.equal(same, jacobian.abs().sum(0))


def test_gradvac_raises_a_low_cosine_to_its_target_and_remembers_it():
    g1, g2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    balancer = make("gradvac", ["a", "b"], beta=0.5)
    direction, _ = combine(balancer, torch.stack([g1, g2]))
    assert direction.tolist() == pytest.approx([1.0, 1.0])  # targets start at 0: orthogonal is not below them
    state = balancer.get_extra_state()
    restored = make("gradvac", ["a", "b"], beta=0.5)
    restored.set_extra_state(state)
    opposed = torch.stack([g1, torch.tensor([-0.6, 0.8], dtype=torch.float64)])  # cosine −0.6 < the target 0
    a, _ = combine(balancer, opposed, step=2)
    b, _ = combine(restored, opposed, step=2)
    assert torch.equal(a, b)
    assert float(a @ opposed[0]) > float(opposed.sum(0) @ opposed[0])


# --- GradNorm, DB-MTL ---------------------------------------------------------------------------
def test_gradnorm_pushes_weights_toward_equal_training_rates():
    balancer = make("gradnorm", ["a", "b"], alpha=1.5)
    jacobian = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    direction, weights = combine(balancer, jacobian, torch.tensor([1.0, 1.0]))
    assert weights.tolist() == [1.0, 1.0] and direction.tolist() == [4.0, 1.0]
    # G = (4, 1), mean 2.5, equal rates: the large gradient's weight must fall and the small one's rise
    assert balancer.loss_weights.grad.tolist() == pytest.approx([4.0, -1.0])
    balancer.loss_weights.grad = None
    # task b has trained more slowly (relative loss 1 vs 0.5): its target norm is larger
    combine(balancer, jacobian, torch.tensor([0.5, 1.0]))
    relative = torch.tensor([0.5, 1.0]) / 0.75
    target = 2.5 * relative**1.5
    # ∂/∂w_t |w_t·‖g_t‖ − target_t| = ‖g_t‖·sign(w_t·‖g_t‖ − target_t)
    expected = [4.0 * float(torch.sign(4.0 - target[0])), 1.0 * float(torch.sign(1.0 - target[1]))]
    assert balancer.loss_weights.grad.tolist() == pytest.approx(expected)
    balancer.loss_weights.data = torch.tensor([3.0, 1.0])
    balancer.after_step(lambda: {})
    assert balancer.loss_weights.tolist() == pytest.approx([1.5, 0.5])


def test_db_mtl_golden_values():
    balancer = make("db_mtl", ["a", "b"], beta=0.9, beta_sigma=0.5)
    jacobian = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    losses = torch.tensor([2.0, 0.5], dtype=torch.float64)
    direction, weights = combine(balancer, jacobian, losses)
    # step 1: the buffer starts at 0, so it holds (1 − β)·the log-loss gradients (1, 0), (0, 2);
    # both are scaled to the larger norm 0.2
    assert weights.tolist() == pytest.approx([2.0, 1.0], rel=1e-6)
    assert direction.tolist() == pytest.approx([0.2, 0.2], rel=1e-6)
    # step 2 with new gradients: buffer = g + 0.9/√2 (buffer − g)
    jacobian2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    direction2, _ = combine(balancer, jacobian2, losses, step=2)
    k = 0.9 / math.sqrt(2)
    g = jacobian2 / losses.unsqueeze(1)
    buffer = g + k * (0.1 * torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64) - g)
    norms = buffer.norm(dim=1)
    expected = (norms.max() / norms) @ buffer
    assert direction2.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    with pytest.raises(ConfigError, match="parameters"):
        make("db_mtl", wrt="features")


# --- plumbing: a sum aggregator through every path equals plain back-propagation ------------------
class SumAggregation(GradientBalancer):
    def combine(self, jacobian, losses, ctx):
        weights = torch.ones(jacobian.shape[0], dtype=jacobian.dtype)
        return weights @ jacobian, weights


class Tiny(nn.Module):
    """A shared trunk with two features maps (the second computed from the first) and two heads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk1, self.trunk2 = nn.Linear(4, 5), nn.Linear(5, 3)
        self.head_a, self.head_b = nn.Linear(8, 1), nn.Linear(8, 2)
        self.cut_features = False

    def forward(self, x):
        f1 = torch.tanh(self.trunk1(x))
        f2 = torch.tanh(self.trunk2(f1))
        sources = (f1, f2)
        feats = tuple(f.detach().requires_grad_() for f in sources) if self.cut_features else sources
        joined = torch.cat(feats, dim=1)
        losses = {"a": self.head_a(joined).pow(2).mean(), "b": (self.head_b(joined) - 1).abs().mean()}
        return losses, (feats, sources) if self.cut_features else ((), ())

    def shared(self):
        return [*self.trunk1.parameters(), *self.trunk2.parameters()]


def grads(model):
    return [p.grad.clone() if p.grad is not None else None for p in model.parameters()]


@pytest.mark.parametrize("mode", ["cut", "whole", "features"])
def test_sum_aggregation_equals_backpropagating_the_sum(mode):
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    reference = Tiny()
    losses, _ = reference(x)
    (0.5 * (losses["a"] + losses["b"])).backward()
    model = Tiny()
    model.cut_features = mode != "whole"
    balancer = SumAggregation(["a", "b"], {}, wrt="features" if mode == "features" else "parameters")
    losses, (features, sources) = model(x)
    ctx = StepContext(
        shared=model.shared(),
        parameters=list(model.parameters()),
        features=features,
        feature_sources=sources,
        scale=0.5 * 4.0,
        grad_scale=4.0,
    )
    balancer.backward(losses, ctx)
    balancer.finish(ctx)
    for name, (expected, got) in zip([n for n, _ in model.named_parameters()], zip(grads(reference), grads(model))):
        # the gradients carry the loss scale (4): the optimiser's scaler divides it out
        assert torch.allclose(got / 4.0, expected, atol=1e-6), name


def test_unknown_options_name_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown option 'balancer.options.c' for 'pcgrad'"):
        make("pcgrad", c=0.4)
    with pytest.raises(ConfigError, match="wrt"):
        make("upgrad", wrtt="features")
    with pytest.raises(
        ConfigError,
        match=r"option 'balancer.options.wrt' for 'upgrad' must be Literal\['parameters', 'features'\], "
        "got 'activations'",
    ):
        make("upgrad", wrt="activations")


def test_gradient_methods_need_shared_parameters():
    balancer = make("upgrad", ["a", "b"])
    loss = torch.tensor(1.0, requires_grad=True)
    with pytest.raises(ConfigError, match="shares none"):
        balancer.backward({"a": loss, "b": loss}, StepContext(shared=[], parameters=[]))


#: what each stateful method keeps in a checkpoint's ``balancer`` state (the format existing checkpoints have)
CHECKPOINT_KEYS = {
    "db_mtl": {"_extra_state": {"buffer", "steps"}},
    "dwa": {"epochs": None, "history": None},
    "famo": {"adam_steps": None, "exp_avg": None, "exp_avg_sq": None, "logits": None, "min_losses": None},
    "gradnorm": {"initial_losses": None, "loss_weights": None},
    "gradvac": {"_extra_state": {"phi"}},
    "nash_mtl": {"_extra_state": {"prvs_alpha", "step", "normalization_factor"}},
    "uncertainty": {"scalarizer.log_var": None},
}


@pytest.mark.parametrize("name", ALL_METHODS)
def test_checkpoint_keys_are_unchanged(name):
    state = make(name).state_dict()
    expected = CHECKPOINT_KEYS.get(name, {})
    assert set(state) == set(expected)
    for key, inner in expected.items():
        if inner is not None:
            assert set(state[key]) == inner


def test_the_old_module_still_exports_the_methods():
    from scenemtl.balancing import aggregators, gradient, jacobian, min_norm

    assert gradient.GradientBalancer is jacobian.GradientBalancer is GradientBalancer
    assert gradient.min_norm_weights is min_norm.min_norm_weights
    for name in GRADIENT_METHODS:
        cls = BALANCERS.get(name)
        assert getattr(gradient, cls.__name__) is getattr(aggregators, cls.__name__) is cls
