"""Domain adaptation objectives (adversarial, min_entropy) in the ordinary trainer, on the synthetic source and target domains."""

from __future__ import annotations

import json

import pytest
import torch

from scenemtl.engine.evaluate import move
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError
from scenemtl.settings.adversarial_parts import poly_lr

SIZE = "height: 32, width: 48"
TARGET = f"{{name: synthetic, options: {{{SIZE}, num_train: 6, domain: target}}}}"
DA = [
    "tasks={semseg: {weight: 1.0}, depth: {weight: 1.0}}",
    f"data.options={{{SIZE}, num_train: 8, num_val: 4}}",
    f"data.eval_dataset={{name: synthetic, options: {{{SIZE}, num_val: 4, domain: target}}}}",
    "data.augment={scale: null, flip: true, photometric: false}",
    "data.batch_size=2",
    "model.arch=xtam",
    "model.options={decoder_channels: [4, 8, 8, 8, 8]}",
    f"objectives=[{{name: adversarial, options: {{target: {TARGET}, stages: [scale1, final], ndf: 8}}}}]",
    "train.keep_checkpoints=5",
]


def test_generator_term_trains_the_network_only_and_the_discriminators_learn_after(tiny_config):
    trainer = Trainer(tiny_config(*DA, "train.steps=6"), progress=False, log=False)
    objective = trainer.objectives[0]
    assert sorted(objective.discriminators) == ["depth@final", "depth@scale1", "semseg@final", "semseg@scale1"]
    assert trainer.val_set.domain == "target" and trainer.train_set.domain == "source"
    batch = move(next(iter(trainer.loader)), trainer.device)
    output = trainer.net(batch["image"])
    loss = objective.extra_loss(trainer.net, output, batch, step=3)
    loss.backward()
    assert all(p.grad is None for p in objective.discriminators.parameters())  # frozen for the generator
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
    assert objective.stream.position == 2  # one target batch drawn
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    before = [p.detach().clone() for p in objective.discriminators.parameters()]
    objective.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, objective.discriminators.parameters()))
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in weights.items())  # only the discriminators stepped
    lr = next(iter(objective.optimizers.values())).param_groups[0]["lr"]
    assert lr == pytest.approx(poly_lr(1e-4, 3, 6, 0.9))


def test_adversarial_training_resumes_exactly_and_is_scored_on_the_target(tiny_config):
    straight = Trainer(tiny_config(*DA, "train.steps=4", "name=straight", "train.log_every=1"), progress=False)
    straight.fit()
    interrupted = Trainer(tiny_config(*DA, "train.steps=4", "name=resumed"), progress=False)
    interrupted.fit(stop_at=2)
    resumed = Trainer(tiny_config(*DA, "train.steps=4", "name=resumed"), resume=True, progress=False)
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    a, b = straight.objectives[0].state_dict(), resumed.objectives[0].state_dict()
    for key, value in a["discriminators"].items():
        assert torch.equal(value, b["discriminators"][key]), key
    assert a["stream"] == b["stream"] == {"epoch": 1, "position": 2}  # 6 target images, batches of 2: 4 batches
    records = [json.loads(line) for line in (straight.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r["kind"] == "adversarial"]
    assert logged and {"adversarial", "discriminator", "discriminator_lr"} <= set(logged[-1])
    results = json.loads((straight.run_dir / "results.json").read_text())
    assert results["metrics"]["semseg"]["miou"] >= 0


def test_min_entropy_lowers_the_target_entropy_term(tiny_config):
    config = tiny_config(
        *DA,
        "train.steps=1",
        f"objectives=[{{name: min_entropy, options: {{target: {TARGET}, weight: 1.0}}}}]",
    )
    trainer = Trainer(config, progress=False, log=False)
    objective = trainer.objectives[0]
    batch = move(next(iter(trainer.loader)), trainer.device)
    term = objective.extra_loss(trainer.net, trainer.net(batch["image"]), batch, step=0)
    assert 0 < float(term.detach()) <= 1  # the normalised entropy
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
    trainer.fit()


def test_adaptation_errors_name_the_fix(tiny_config):
    with pytest.raises(ConfigError, match="adversarial adapts tasks the config has"):
        Trainer(tiny_config(*DA, f"objectives=[{{name: adversarial, options: {{target: {TARGET}, adapt: [normals]}}}}]"), log=False)
    with pytest.raises(ConfigError, match="target must be"):
        Trainer(tiny_config(*DA, "objectives=[{name: adversarial, options: {target: {root: x}}}]"), log=False)
    bad_stage = Trainer(
        tiny_config(*DA, "train.steps=1", f"objectives=[{{name: adversarial, options: {{target: {TARGET}, stages: [scale3]}}}}]"),
        progress=False,
        log=False,
    )
    with pytest.raises(ConfigError, match="no output 'scale3'"):
        bad_stage.fit()
    with pytest.raises(ConfigError, match="data.eval_dataset: 'nyud' names the classes"):
        Trainer(tiny_config(*DA, "tasks={semseg: {weight: 1.0}}", "data.eval_dataset={name: nyud, root: .}"), log=False)
