"""The standard loop with each family of balancers: HPS learns in fp32 and bf16, and resumes exactly.

What a method computes is tested without the loop, for every registered method: golden values in
``test_weighting`` and ``test_aggregators``, and the properties over the registry in
``test_properties`` (ten steps along its direction halve the loss of a problem the tasks can all
solve, seeded draws, an exact state round trip through a checkpoint's ``state_dict``, ...). What
the loop adds depends on the method's family only: the path of the gradients through the model
(a weighted loss, the Jacobian w.r.t. the shared parameters or the shared features), weights
learned by the model's optimiser, a second forward pass after the step, autocast, and the
balancer's state and step-seeded draws in a checkpoint. So the loop runs once per family, with
one representative each (``properties.family`` derives the families from the registry).
"""

import json

import pytest
import torch

from scenemtl.engine.trainer import Trainer
from scenemtl.engine.evaluate import move
from tests.balancing.properties import draws_per_step, families, is_stateful

FIXED_BATCH = [
    "data.options.num_train=4",
    "data.augment.scale=null",
    "data.augment.flip=false",
    "data.augment.photometric=false",
    "train.warmup_steps=0",
    "train.lr=3e-3",
]

#: the method that stands for each family in the loop, and what a resume has to restore for it
REPRESENTATIVES = {
    "loss weighting": ("dwa", "the two-epoch history of the losses the loop hands over at each epoch's end"),
    "loss weighting, learned weights": ("uncertainty", "log-variances trained by the model's optimiser"),
    "loss-based balancing, second forward pass": ("famo", "logits and Adam moments updated from recomputed losses"),
    "gradient aggregation (wrt parameters)": ("nash_mtl", "torchjd's solver state (the previous α, the step count)"),
    "gradient aggregation (wrt features)": ("graddrop", "random draws seeded by the step"),
    "gradient aggregation (wrt parameters), learned weights": ("gradnorm", "learned weights and the first step's losses"),
}


def test_every_family_has_a_representative_with_something_to_resume():
    registered = families()
    assert set(REPRESENTATIVES) == set(registered), "a new family of balancers needs a representative here"
    for family, (name, _) in REPRESENTATIVES.items():
        assert name in registered[family], (family, name)
        with_state = [n for n in registered[family] if is_stateful(n) or draws_per_step(n)]
        assert not with_state or name in with_state, f"{family}: pick one of {with_state}, whose resume matters"


def fit_measuring_the_loss(trainer: Trainer) -> tuple[float, float, dict[str, torch.Tensor]]:
    """The summed task losses on the first batch before and after ``fit()``, and the model's state right after it."""
    batch = move(next(iter(trainer.loader)), trainer.device)

    def total_loss() -> float:
        with torch.no_grad():
            return sum(trainer.task_losses(trainer.model(batch["image"]), batch).values()).item()

    buffers = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    before = total_loss()
    trainer.model.load_state_dict(buffers)  # as it was: the forward pass in training mode moved the norm statistics
    trainer.fit()
    state = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    trainer.model.train()
    return before, total_loss(), state


# one step per epoch (4 samples, batches of 4) so DWA's two-epoch history is in play
@pytest.mark.parametrize("family", sorted(REPRESENTATIVES))
def test_each_family_lowers_the_loss_and_resumes_exactly(tiny_config, family):
    name = REPRESENTATIVES[family][0]
    common = [*FIXED_BATCH, f"balancer.name={name}", "train.steps=6", "train.keep_checkpoints=10"]
    straight = Trainer(tiny_config(*common, "name=straight"), progress=False, log=False)
    before, after, weights = fit_measuring_the_loss(straight)
    assert after < before, (before, after)
    interrupted = Trainer(tiny_config(*common, "name=resumed"), progress=False, log=False)
    assert interrupted.fit(stop_at=2) is None
    resumed = Trainer(tiny_config(*common, "name=resumed"), resume=True, progress=False, log=False)
    assert resumed.step == 2
    resumed.fit()
    resumed_weights = resumed.model.state_dict()
    assert weights.keys() == resumed_weights.keys()
    for key in weights:
        assert torch.equal(weights[key], resumed_weights[key]), key
    state, resumed_state = straight.balancer.state_dict(), resumed.balancer.state_dict()
    assert state.keys() == resumed_state.keys()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed_state[key]), key


@pytest.mark.parametrize("family", sorted(REPRESENTATIVES))
def test_each_family_lowers_the_loss_in_bf16(tiny_config, family):
    name = REPRESENTATIVES[family][0]
    config = tiny_config(*FIXED_BATCH, f"balancer.name={name}", "train.steps=6", "train.precision=bf16")
    before, after, _ = fit_measuring_the_loss(Trainer(config, progress=False, log=False))
    assert after < before, (before, after)


@pytest.mark.parametrize("name", ["uncertainty", "gradnorm", "nash_mtl", "upgrad"])
def test_fp16_loss_scaling_is_divided_out(tiny_config, name):
    # the scaler's factor (65536 at the start) must not reach the learned weights or the solvers
    config = tiny_config(*FIXED_BATCH, f"balancer.name={name}", "train.steps=4", "train.precision=fp16", f"name={name}")
    trainer = Trainer(config, progress=False, log=False)
    losses = [trainer.train_step([next(iter(trainer.loader))])["loss"] for _ in range(4)]
    assert sum(losses[-1].values()) < sum(losses[0].values())
    if name == "uncertainty":  # the log-variances move the same way as in fp32
        reference = Trainer(tiny_config(*FIXED_BATCH, f"balancer.name={name}", "train.steps=4", "name=fp32"), progress=False, log=False)
        for _ in range(4):
            reference.train_step([next(iter(reference.loader))])
        moved = trainer.balancer.scalarizer.log_var.detach() + 0.5
        expected = reference.balancer.scalarizer.log_var.detach() + 0.5
        assert torch.equal(torch.sign(moved), torch.sign(expected)), (moved, expected)
    if name == "gradnorm":
        assert float(trainer.balancer.loss_weights.sum()) == pytest.approx(len(trainer.tasks))


def test_weights_are_logged_per_task(tiny_config):
    trainer = Trainer(tiny_config("balancer.name=upgrad", "train.steps=2", "train.log_every=1", "name=logged"), progress=False)
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
