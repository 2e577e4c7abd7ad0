"""Every balancer under the standard loop: HPS learns, in fp32 and bf16, and stateful methods resume exactly."""

import json

import pytest
import torch

from scenemtl.balancing import BALANCERS
from scenemtl.engine.trainer import Trainer
from tests.balancing.properties import draws_per_step, is_stateful
from tests.conftest import loss_before_and_after_fit

FIXED_BATCH = ["data.options.num_train=4", "data.augment.scale=null", "data.augment.flip=false",
               "data.augment.photometric=false", "train.warmup_steps=0", "train.lr=3e-3"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(BALANCERS.names()))
def test_every_balancer_lowers_the_loss(tiny_config, name, precision):
    config = tiny_config(*FIXED_BATCH, f"balancer.name={name}", "train.steps=6", f"train.precision={precision}",
                         f"name={name}-{precision}")
    before, after = loss_before_and_after_fit(Trainer(config, progress=False, log=False))
    assert after < before, (before, after)


@pytest.mark.parametrize("name", ["uncertainty", "gradnorm", "nash_mtl", "upgrad"])
def test_fp16_loss_scaling_is_divided_out(tiny_config, name):
    # the scaler's factor (65536 at the start) must not reach the learned weights or the solvers
    config = tiny_config(*FIXED_BATCH, f"balancer.name={name}", "train.steps=4", "train.precision=fp16", f"name={name}")
    trainer = Trainer(config, progress=False, log=False)
    losses = [trainer.train_step([next(iter(trainer.loader))])["loss"] for _ in range(4)]
    assert sum(losses[-1].values()) < sum(losses[0].values())
    if name == "uncertainty":  # the log-variances move the same way as in fp32
        reference = Trainer(tiny_config(*FIXED_BATCH, f"balancer.name={name}", "train.steps=4", "name=fp32"),
                            progress=False, log=False)
        for _ in range(4):
            reference.train_step([next(iter(reference.loader))])
        moved = trainer.balancer.scalarizer.log_var.detach() + 0.5
        expected = reference.balancer.scalarizer.log_var.detach() + 0.5
        assert torch.equal(torch.sign(moved), torch.sign(expected)), (moved, expected)
    if name == "gradnorm":
        assert float(trainer.balancer.loss_weights.sum()) == pytest.approx(len(trainer.tasks))


def test_weights_are_logged_per_task(tiny_config):
    trainer = Trainer(tiny_config("balancer.name=upgrad", "train.steps=2", "train.log_every=1", "name=logged"),
                      progress=False)
    trainer.fit()
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = [r["weight"] for r in records if r["kind"] == "train"]
    assert len(weights) == 2 and set(weights[0]) == set(trainer.tasks)
    assert all(value > 0 for value in weights[0].values())
    events = list((trainer.run_dir / "tensorboard").glob("events.*"))
    assert events, "no TensorBoard file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert {f"train/weight/{task}" for task in trainer.tasks} <= set(accumulator.Tags()["scalars"])


# what a resumed run must restore: state in the checkpoint, or random draws seeded by the step (from the registry)
STATEFUL = [name for name in BALANCERS.names() if is_stateful(name) or draws_per_step(name)]


def test_the_resume_test_covers_state_and_seeded_draws():
    # the derivation above must keep finding both kinds, e.g. Nash-MTL's solver state and PCGrad's order
    assert {"nash_mtl", "gradvac", "pcgrad", "rlw"} <= set(STATEFUL) and "equal" not in STATEFUL


# one step per epoch (4 samples, batches of 4) so DWA's two-epoch history is in play


@pytest.mark.parametrize("name", STATEFUL)
def test_stateful_balancers_resume_exactly(tiny_config, name):
    common = ["data.options.num_train=4", "train.steps=4", "train.keep_checkpoints=5", f"balancer.name={name}"]
    straight = Trainer(tiny_config(*common, "name=straight"), progress=False, log=False)
    straight.fit()
    interrupted = Trainer(tiny_config(*common, "name=resumed"), progress=False, log=False)
    assert interrupted.fit(stop_at=2) is None
    resumed = Trainer(tiny_config(*common, "name=resumed"), resume=True, progress=False, log=False)
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key, value in straight.balancer.state_dict().items():
        other = resumed.balancer.state_dict()[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
