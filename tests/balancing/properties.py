"""Properties of balancers as test mixins, parametrised over the balancer registry (torchjd's test style).

Every property runs on every registered balancer (``BALANCERS.names()``), so a newly registered
method is tested against all of them. Where a property does not hold for a method, the
property's ``EXCLUDED`` table says so with a one-line reason; an excluded method is left out of
that property's parameters (no skipped tests), and an exclusion naming an unregistered method is
an error at collection.
Where a property holds only approximately for a method, its ``APPROXIMATE`` table gives the
tolerance and the reason.

All balancers are driven through one step function (``run_step``) on a hand-made K × n
Jacobian J and K losses:

- a gradient balancer (``GradientBalancer``) combines J directly (``combine`` under the step's
  seeded generator, as ``finish`` calls it);
- any other balancer back-propagates its objective of leaf losses; its direction is then the
  losses' gradient (the effective weights) times J, what back-propagation through a network
  whose Jacobian is J would give.

Then the step does what the training loop does around the optimiser: a plain SGD step on the
balancer's own learnable parameters (uncertainty's log-variances, GradNorm's weights),
``after_step`` (with the losses 10 % lower) and ``end_epoch``, so state evolves as in training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
import io
import itertools
import warnings

import pytest
import torch

from scenemtl.balancing import BALANCERS, Balancer, GradientBalancer, LossWeighting, StepContext, build_balancer


def _is_gradient_method(name: str) -> bool:
    return issubclass(BALANCERS.get(name), GradientBalancer)


#: every registered method, and the split by kind (derived from the registry, never hand-kept)
ALL_METHODS = BALANCERS.names()
GRADIENT_METHODS = [n for n in ALL_METHODS if _is_gradient_method(n)]
LOSS_WEIGHTINGS = [n for n in ALL_METHODS if not _is_gradient_method(n)]


def over_registry(excluded: Mapping[str, str]) -> list:
    """Every registered balancer not in ``excluded`` as a ``name`` parameter (the table gives each exclusion's reason)."""
    unknown = sorted(set(excluded) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"exclusions name unregistered balancers: {unknown}")
    return [pytest.param(n, id=n) for n in ALL_METHODS if n not in excluded]


def make(name: str, tasks: list[str], **options) -> Balancer:
    """The balancer ``name`` with its default options (as a config naming only it)."""
    return build_balancer(name, tasks, {}, options)


@dataclass
class Output:
    """One step's update direction and per-task weights (None where the method reports none)."""

    direction: torch.Tensor
    weights: torch.Tensor | None


def run_step(
    balancer: Balancer,
    jacobian: torch.Tensor,
    losses: torch.Tensor,
    step: int,
    seed: int = 0,
    update: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Output:
    """One optimiser step of ``balancer`` on the Jacobian and losses (see the module docstring).

    ``update`` applies the step's direction to the model and returns the losses after it (what
    ``after_step``'s ``recompute`` then gives); without it the losses are taken to fall by 10 %.
    """
    ctx = StepContext(shared=[], parameters=[], step=step, seed=seed)
    tasks = balancer.tasks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. cvxpy's notes on Nash-MTL's problem
        if isinstance(balancer, GradientBalancer):
            with balancer.seeded(ctx):
                direction, weights = balancer.combine(jacobian, losses, ctx)
            out = Output(direction.detach().clone(), None if weights is None else weights.detach().clone())
        else:
            leaves = {t: torch.tensor(float(v), requires_grad=True) for t, v in zip(tasks, losses)}
            balancer.backward(leaves, ctx)
            named = balancer.finish(ctx)
            grads = torch.stack([leaves[t].grad for t in tasks]).to(jacobian)
            out = Output(grads @ jacobian, torch.tensor([named[t] for t in tasks], dtype=jacobian.dtype))
    with torch.no_grad():
        for p in balancer.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
                p.grad = None
    after = 0.9 * losses if update is None else update(out.direction)
    balancer.after_step(lambda: {t: torch.tensor(float(v)) for t, v in zip(tasks, after)})
    balancer.end_epoch({t: float(v) for t, v in zip(tasks, losses)})
    return out


def problems(seed: int, steps: int = 3, m: int = 3, n: int = 7) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` random (Jacobian, positive losses) pairs in float64."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(m, n, generator=generator, dtype=torch.float64), torch.rand(m, generator=generator, dtype=torch.float64) + 0.5)
        for _ in range(steps)
    ]


def run(balancer: Balancer, steps: list[tuple[torch.Tensor, torch.Tensor]], first: int = 1) -> list[Output]:
    """``run_step`` over the problems, numbering the steps from ``first``."""
    return [run_step(balancer, j, losses, first + i) for i, (j, losses) in enumerate(steps)]


def checkpoint(balancer: Balancer) -> dict:
    """The balancer's state through a save and a strict load, as a ``trainer.pt`` makes it."""
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_equal_outputs(a: list[Output], b: list[Output], tolerance: float = 0.0) -> None:
    """Bitwise equal directions and weights (or equal to ``tolerance``, relative to the largest entry)."""

    def same(x: torch.Tensor, y: torch.Tensor) -> bool:
        if not tolerance:
            return torch.equal(x, y)
        return bool((x - y).abs().max() <= tolerance * max(1.0, float(x.abs().max())))

    for x, y in zip(a, b, strict=True):
        assert same(x.direction, y.direction), (x.direction, y.direction)
        assert (x.weights is None) == (y.weights is None)
        if x.weights is not None:
            assert same(x.weights, y.weights), (x.weights, y.weights)


def is_stateful(name: str) -> bool:
    """Whether a fresh balancer has anything in its ``state_dict`` (buffers, parameters or extra state)."""
    return bool(make(name, ["a", "b", "c"]).state_dict())


def draws_per_step(name: str) -> bool:
    """Whether the output on one input changes with the step number (a random method seeded by (seed, step))."""
    ((jacobian, losses),) = problems(0, steps=1)
    first = run_step(make(name, ["a", "b", "c"]), jacobian, losses, step=1)
    other = run_step(make(name, ["a", "b", "c"]), jacobian, losses, step=2)
    return not (torch.equal(first.direction, other.direction) and (first.weights is None or torch.equal(first.weights, other.weights)))


# ---------------------------------------------------------------------------------------------
class DeterministicProperty:
    """Same seed and step, same inputs: bitwise the same outputs, whatever the global RNG holds."""

    EXCLUDED: dict[str, str] = {}

    @pytest.mark.parametrize("name", over_registry(EXCLUDED))
    def test_deterministic_under_the_same_seed(self, name):
        steps = problems(1)
        torch.manual_seed(123)
        first = run(make(name, ["a", "b", "c"]), steps)
        torch.manual_seed(456)  # the methods draw from (seed, step), not from the global generator
        torch.rand(17)
        second = run(make(name, ["a", "b", "c"]), steps)
        assert_equal_outputs(first, second)


class StateRoundTripProperty:
    """A checkpoint after two steps, loaded into a fresh balancer, gives the same next step bitwise.

    For a method with state (a non-empty ``state_dict``) the test also checks the state matters:
    a fresh balancer, not loaded, takes a different third step (else the round trip proves nothing).
    ``VARIANTS`` adds option sets under which a method's state weighs more than under its defaults.
    """

    EXCLUDED: dict[str, str] = {}
    #: methods whose resumed step agrees to a relative tolerance rather than bitwise: (tolerance, reason)
    APPROXIMATE = {
        "nash_mtl": (
            1e-7,
            "the checkpoint restores the solver's previous α as float32 while torchjd keeps it in "
            "float64 (as before the split), so a resumed step is ~1e-8 away",
        ),
    }
    #: extra options to round-trip a method with, each with its reason
    VARIANTS = {
        "nash_mtl": (
            {"update_weights_every": 3},
            "with a solve every step the warm start barely moves the next step; reusing α makes the restored solver state decide it",
        ),
    }

    @pytest.mark.parametrize("name", over_registry(EXCLUDED))
    def test_state_dict_round_trip(self, name):
        self._round_trip(name, {})

    @pytest.mark.parametrize("name", sorted(VARIANTS))
    def test_state_dict_round_trip_of_variants(self, name):
        self._round_trip(name, self.VARIANTS[name][0])

    def _round_trip(self, name: str, options: dict) -> None:
        tolerance = self.APPROXIMATE.get(name, (0.0, ""))[0]
        steps = problems(2)
        straight = make(name, ["a", "b", "c"], **options)
        run(straight, steps[:2])
        state = checkpoint(straight)
        resumed = make(name, ["a", "b", "c"], **options)
        resumed.load_state_dict(state)
        assert set(resumed.state_dict()) == set(state)
        expected = run(straight, steps[2:], first=3)
        assert_equal_outputs(expected, run(resumed, steps[2:], first=3), tolerance)
        if state:  # the state matters: without it the third step differs
            fresh = run(make(name, ["a", "b", "c"], **options), steps[2:], first=3)
            with pytest.raises(AssertionError):
                assert_equal_outputs(expected, fresh)


class PermutationProperty:
    """Relabelling the tasks: the direction is unchanged and each task keeps its weight (over three steps)."""

    EXCLUDED = {
        "pcgrad": "projects in a random order drawn over task positions, so relabelling changes the draw",
        "gradvac": "visits the other tasks in a random order drawn over task positions",
        "rlw": "draws its random weights by task position",
    }

    @pytest.mark.parametrize("name", over_registry(EXCLUDED))
    def test_permuting_the_tasks_permutes_the_weights(self, name):
        steps = problems(3)
        reference = run(make(name, ["a", "b", "c"]), steps)
        for order in itertools.permutations(range(3)):
            permuted = run(make(name, ["a", "b", "c"]), [(j[list(order)], losses[list(order)]) for j, losses in steps])
            for ref, out in zip(reference, permuted):
                assert out.direction.tolist() == pytest.approx(ref.direction.tolist(), abs=1e-5)
                if ref.weights is not None:
                    assert out.weights.tolist() == pytest.approx(ref.weights[list(order)].tolist(), abs=1e-5)


_LOSS_ONLY = "weights from the loss values alone: a positive combination of the gradients, which can oppose a task"


class NonConflictingProperty:
    """The update never opposes a task: J·d ≥ 0 for every row of the Jacobian (one step)."""

    EXCLUDED = {
        **{name: _LOSS_ONLY for name in LOSS_WEIGHTINGS},
        "pcgrad": "the sum of the projected gradients can still oppose a task when three or more conflict",
        "cagrad": "maximises the worst-case improvement within a ball around the mean; the optimum can be negative",
        "graddrop": "keeps one sign per coordinate, which can leave a task's gradient opposed",
        "gradvac": "only raises pairwise cosines toward EMA targets (0 at first); the sum can oppose a task",
        "gradnorm": "a positive combination with learned weights, blind to conflicts",
        "db_mtl": "a positive combination of norm-equalised gradients, blind to conflicts",
    }

    @pytest.mark.parametrize("seed", range(4))
    @pytest.mark.parametrize("name", over_registry(EXCLUDED))
    def test_non_conflicting_methods_never_oppose_a_task(self, name, seed):
        generator = torch.Generator().manual_seed(seed + 10)
        jacobian = torch.randn(3, 5, generator=generator, dtype=torch.float64)
        out = run_step(make(name, ["a", "b", "c"]), jacobian, torch.ones(3, dtype=torch.float64), step=1)
        assert bool((jacobian @ out.direction >= -1e-7).all()), (jacobian @ out.direction).tolist()


class DescentProperty:
    """Every method learns: ten steps on a problem whose tasks share a minimiser at least halve the total loss.

    The tasks are least-squares problems L_t(x) = ½‖A_t (x − x*)‖² with one minimiser x*, so every
    task can reach zero at once and any sound balancing lowers the sum; the update x ← x − 0.1·d
    is the model's step, and ``after_step`` sees the losses at the new x (FAMO compares them).
    This is the unit form of "training with this balancer lowers the loss"; the training loop
    itself is exercised once per family of balancers in ``test_training``.
    """

    EXCLUDED: dict[str, str] = {}

    @pytest.mark.parametrize("seed", range(2))
    @pytest.mark.parametrize("name", over_registry(EXCLUDED))
    def test_steps_along_the_direction_lower_the_total_loss(self, name, seed):
        generator = torch.Generator().manual_seed(seed)
        matrices = 0.5 * torch.randn(3, 4, 6, generator=generator, dtype=torch.float64)
        optimum = torch.randn(6, generator=generator, dtype=torch.float64)
        x = optimum + torch.randn(6, generator=generator, dtype=torch.float64)

        def losses_and_jacobian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            residuals = torch.einsum("tkn,n->tk", matrices, x - optimum)
            return 0.5 * residuals.pow(2).sum(1), torch.einsum("tk,tkn->tn", residuals, matrices)

        def update(direction: torch.Tensor) -> torch.Tensor:
            nonlocal x
            x = x - 0.1 * direction
            return losses_and_jacobian(x)[0]

        balancer = make(name, ["a", "b", "c"])
        start = float(losses_and_jacobian(x)[0].sum())
        for step in range(1, 11):
            losses, jacobian = losses_and_jacobian(x)
            run_step(balancer, jacobian, losses, step, update=update)
        end = float(losses_and_jacobian(x)[0].sum())
        assert end <= 0.5 * start, (start, end)


# --- families: the training loop's code paths, which the Trainer tests in test_training cover once each -------
def family(name: str) -> str:
    """The family of a method as the training loop sees it: its kind, what its gradient is taken with
    respect to, whether it learns weights with the model's optimiser, and whether it needs a second forward pass."""
    balancer = make(name, ["a", "b", "c"])
    if isinstance(balancer, GradientBalancer):
        kind = f"gradient aggregation (wrt {balancer.wrt})"
    elif isinstance(balancer, LossWeighting):
        kind = "loss weighting"
    else:
        kind = "loss-based balancing"
    if any(p.requires_grad for p in balancer.parameters()):
        kind += ", learned weights"
    if balancer.extra_forward:
        kind += ", second forward pass"
    return kind


def families() -> dict[str, list[str]]:
    """Every family with its registered methods (derived from the registry)."""
    out: dict[str, list[str]] = {}
    for name in ALL_METHODS:
        out.setdefault(family(name), []).append(name)
    return out
