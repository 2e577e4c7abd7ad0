"""Loss weighting: each method's weights from hand-made losses, and its state."""

import math

import pytest
import torch

from scenemtl.balancing import StepContext, build_balancer
from scenemtl.errors import ConfigError

TASKS = ["a", "b", "c"]


def backward(balancer, values, step=1, scale=1.0):
    """Run one micro-batch through the balancer on leaf losses; return the losses' gradients and the weights."""
    losses = {t: torch.tensor(v, requires_grad=True) for t, v in zip(TASKS, values)}
    ctx = StepContext(shared=[], parameters=[], step=step, scale=scale)
    balancer.backward(losses, ctx)
    weights = balancer.finish(ctx)
    return [float(losses[t].grad) for t in TASKS], weights


def test_uncertainty_weights_are_half_exp_minus_log_variance_and_learn():
    balancer = build_balancer("uncertainty", TASKS, {}, {})
    grads, weights = backward(balancer, [1.0, 2.0, 3.0], scale=2.0)
    expected = 0.5 * math.exp(0.5)  # MTAN's initial log σ² of −0.5
    assert grads == pytest.approx([2.0 * expected] * 3) and list(weights.values()) == pytest.approx([expected] * 3)
    # ∂/∂s (½e^{−s}L + ½s) = ½ − ½e^{−s}L, times the scale
    log_var = balancer.scalarizer.log_var
    assert log_var.grad.tolist() == pytest.approx([2.0 * (0.5 - expected * v) for v in (1.0, 2.0, 3.0)])
    assert balancer.optimizer_groups()[0]["weight_decay"] == 0.0


def test_dwa_follows_mtan():
    balancer = build_balancer("dwa", TASKS, {}, {"temperature": 2.0})
    assert backward(balancer, [1.0, 1.0, 1.0])[0] == [1.0, 1.0, 1.0]  # epochs 0 and 1: weight 1
    balancer.end_epoch({"a": 4.0, "b": 2.0, "c": 1.0})
    assert backward(balancer, [1.0, 1.0, 1.0])[0] == [1.0, 1.0, 1.0]
    balancer.end_epoch({"a": 2.0, "b": 2.0, "c": 1.5})
    rates = torch.tensor([0.5, 1.0, 1.5])
    expected = (3 * torch.softmax(rates / 2.0, 0)).tolist()
    grads, weights = backward(balancer, [5.0, 1.0, 0.1])
    assert grads == pytest.approx(expected) and sum(grads) == pytest.approx(3.0)
    state = balancer.state_dict()
    restored = build_balancer("dwa", TASKS, {}, {})
    restored.load_state_dict(state)
    assert backward(restored, [1.0, 1.0, 1.0])[0] == pytest.approx(expected)
    with pytest.raises(ConfigError, match="temperature"):
        build_balancer("dwa", TASKS, {}, {"temperature": 0})


def test_rlw_draws_simplex_weights_seeded_by_step():
    balancer = build_balancer("rlw", TASKS, {}, {})
    first, weights = backward(balancer, [1.0, 2.0, 3.0], step=5)
    assert sum(first) == pytest.approx(1.0) and all(w > 0 for w in first)
    assert list(weights.values()) == pytest.approx(first)  # the logged weights are the ones used
    again, _ = backward(build_balancer("rlw", TASKS, {}, {}), [1.0, 2.0, 3.0], step=5)
    other, _ = backward(balancer, [1.0, 2.0, 3.0], step=6)
    assert again == first and other != first


def test_geometric_mean_gradient():
    balancer = build_balancer("geometric_mean", TASKS, {}, {})
    values = [1.0, 2.0, 4.0]
    grads, weights = backward(balancer, values)
    gm = 2.0  # (1·2·4)^{1/3}
    assert grads == pytest.approx([gm / (3 * v) for v in values]) and list(weights.values()) == pytest.approx(grads)


def test_famo_weights_and_logit_update_follow_the_paper():
    balancer = build_balancer("famo", TASKS, {}, {"lr": 0.1, "weight_decay": 0.0})
    values = [1.0, 2.0, 4.0]
    grads, _ = backward(balancer, values)
    # z uniform: weights c/(3 L_t) with c = (Σ 1/(3 L_t))⁻¹
    c = 1 / sum(1 / (3 * v) for v in values)
    assert grads == pytest.approx([c / (3 * v) for v in values], rel=1e-6)
    # after the step task a fell most (log ratio), so its logit must fall: FAMO gives more weight to the laggards
    balancer.after_step(lambda: {"a": torch.tensor(0.5), "b": torch.tensor(1.9), "c": torch.tensor(3.9)})
    logits = balancer.logits.tolist()
    assert logits[0] < logits[1] and logits[0] < logits[2]
    # Adam's first step moves each coordinate by lr·sign(grad)
    assert [abs(v) for v in logits] == pytest.approx([0.1, 0.1, 0.1], rel=1e-4)
    restored = build_balancer("famo", TASKS, {}, {"lr": 0.1, "weight_decay": 0.0})
    restored.load_state_dict(balancer.state_dict())
    assert backward(restored, values)[0] == pytest.approx(backward(balancer, values)[0])
    with pytest.raises(ConfigError, match="unknown tasks"):
        build_balancer("famo", TASKS, {}, {"min_losses": {"z": 0.0}})


def test_unknown_option_names_the_nearest():
    with pytest.raises(ConfigError, match="temperature"):
        build_balancer("dwa", TASKS, {}, {"temprature": 2.0})
