"""torchjd's private state behind ``torchjd_state``: a loud error on an unsupported torchjd, exact round trips on the installed one."""

import io
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from torchjd.aggregation import GradVac, NashMTL

from scenemtl.balancing import torchjd_state
from scenemtl.balancing.torchjd_state import SUPPORTED, TorchJDVersionError, is_supported
from tests.balancing.properties import ALL_METHODS, assert_equal_outputs, checkpoint, make, problems, run

FIX = 'pip install "torchjd>=0.18,<0.19"'
#: the methods whose checkpoint state is torchjd's private state, with its keys (a test below derives the same set)
PRIVATE_STATE = {"nash_mtl": {"prvs_alpha", "step", "normalization_factor"}, "gradvac": {"phi"}}


def pretend_installed(monkeypatch, version: str) -> None:
    monkeypatch.setattr(torchjd_state, "installed_version", lambda: version)


def test_the_installed_torchjd_is_supported():
    assert is_supported(torchjd_state.installed_version()), (torchjd_state.installed_version(), SUPPORTED)


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("0.18.0", True),
        ("0.18.7", True),
        ("0.18.1rc1", True),
        ("0.19.0", False),
        ("0.19.0rc1", False),
        ("0.17.0", False),
        ("1.18.0", False),
        ("0.180.0", False),
        ("unknown (no package metadata)", False),
    ],
)
def test_the_supported_range_is_0_18(version, supported):
    assert is_supported(version) is supported


@pytest.mark.parametrize("version", ["0.19.0", "0.17.0"])
@pytest.mark.parametrize("name", sorted(PRIVATE_STATE))
def test_an_unsupported_torchjd_fails_loudly_when_the_state_is_accessed(monkeypatch, name, version):
    steps = problems(0, steps=1)
    saved = make(name, ["a", "b", "c"])
    run(saved, steps)
    state = checkpoint(saved)
    pretend_installed(monkeypatch, version)
    balancer = make(name, ["a", "b", "c"])
    run(balancer, steps)  # building and stepping never touch the private state
    with pytest.raises(TorchJDVersionError) as error:
        balancer.state_dict()
    message = str(error.value)
    assert f"installed torchjd is {version}" in message and SUPPORTED in message and FIX in message, message
    with pytest.raises(TorchJDVersionError, match=version):
        make(name, ["a", "b", "c"]).load_state_dict(state)


def test_exactly_the_listed_methods_touch_torchjd_private_state(monkeypatch):
    pretend_installed(monkeypatch, "0.19.0")
    failing = set()
    for name in ALL_METHODS:
        balancer = make(name, ["a", "b", "c"])
        run(balancer, problems(0, steps=1))
        try:
            balancer.state_dict()
        except TorchJDVersionError:
            failing.add(name)
    assert failing == set(PRIVATE_STATE)


def test_a_missing_private_attribute_reads_as_an_unsupported_torchjd():
    with pytest.raises(TorchJDVersionError, match="_phi_t"):
        torchjd_state.gradvac_state(types.SimpleNamespace(gramian_weighting=types.SimpleNamespace()))
    with pytest.raises(TorchJDVersionError, match="prvs_alpha"):
        torchjd_state.nash_mtl_state(types.SimpleNamespace(weighting=types.SimpleNamespace()))


def test_importing_and_training_never_check_the_version():
    # a fresh interpreter whose package metadata reports torchjd 0.19.0: only the state access fails
    script = textwrap.dedent("""
        import importlib.metadata, warnings
        real = importlib.metadata.version
        importlib.metadata.version = lambda name: "0.19.0" if name == "torchjd" else real(name)
        warnings.simplefilter("ignore")
        import torch
        from scenemtl.balancing import StepContext, build_balancer
        from scenemtl.balancing.torchjd_state import TorchJDVersionError
        balancer = build_balancer("gradvac", ["a", "b"], {}, {})
        ctx = StepContext(shared=[], parameters=[])
        with balancer.seeded(ctx):
            balancer.combine(torch.eye(2), torch.ones(2), ctx)
        try:
            balancer.state_dict()
        except TorchJDVersionError as error:
            print("raised:", error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "raised:" in done.stdout and "0.19.0" in done.stdout and FIX in done.stdout, done.stdout


# --- the installed torchjd: the adapter's reads and writes round-trip ------------------------------
@pytest.mark.parametrize("name", sorted(PRIVATE_STATE))
def test_balancer_state_round_trips_in_the_checkpoint_format(name):
    steps = problems(4)
    straight = make(name, ["a", "b", "c"])
    run(straight, steps[:2])
    state = checkpoint(straight)
    assert set(state) == {"_extra_state"} and set(state["_extra_state"]) == PRIVATE_STATE[name]
    resumed = make(name, ["a", "b", "c"])
    resumed.load_state_dict(state)
    # nash_mtl restores α as float32 (see StateRoundTripProperty.APPROXIMATE); gradvac is exact
    assert_equal_outputs(run(straight, steps[2:], first=3), run(resumed, steps[2:], first=3), tolerance=1e-7 if name == "nash_mtl" else 0.0)


def _saved(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_gradvac_targets_round_trip_on_the_raw_aggregator():
    jacobians = [j for j, _ in problems(5)]
    aggregator = GradVac(beta=0.5)
    torch.manual_seed(0)
    for j in jacobians[:2]:
        aggregator(j)
    state = _saved(torchjd_state.gradvac_state(aggregator))
    assert state["phi"].shape == (3, 3) and bool(state["phi"].ne(0).any())
    fresh = GradVac(beta=0.5)
    torchjd_state.load_gradvac_state(fresh, state)
    assert torch.equal(torchjd_state.gradvac_state(fresh)["phi"], state["phi"])
    torch.manual_seed(1)
    expected = aggregator(jacobians[2])
    torch.manual_seed(1)
    assert torch.equal(fresh(jacobians[2]), expected)


@pytest.mark.filterwarnings("ignore:.*not DPP")
def test_nash_mtl_solver_state_round_trips_on_the_raw_aggregator():
    jacobians = [j for j, _ in problems(6, steps=4)]
    aggregator = NashMTL(n_tasks=3, update_weights_every=3)  # the third call reuses the saved α
    for j in jacobians[:2]:
        aggregator(j)
    state = _saved(torchjd_state.nash_mtl_state(aggregator))
    assert state["step"] == 2.0 and state["prvs_alpha"].dtype == torch.float64
    fresh = NashMTL(n_tasks=3, update_weights_every=3)
    torchjd_state.load_nash_mtl_state(fresh, state)
    again = torchjd_state.nash_mtl_state(fresh)
    assert again["step"] == 2.0 and torch.equal(again["normalization_factor"], state["normalization_factor"])
    assert torch.allclose(again["prvs_alpha"], state["prvs_alpha"], rtol=1e-7, atol=0)  # stored back as float32
    expected = aggregator(jacobians[2])
    assert torch.allclose(fresh(jacobians[2]), expected, rtol=1e-7, atol=1e-9)
    assert not torch.allclose(NashMTL(n_tasks=3, update_weights_every=3)(jacobians[2]), expected, rtol=1e-3)
    # after the restore the problem is rebuilt, so the next solve (call 4) runs as in the straight run
    assert torch.allclose(fresh(jacobians[3]), aggregator(jacobians[3]), rtol=1e-6, atol=1e-9)
