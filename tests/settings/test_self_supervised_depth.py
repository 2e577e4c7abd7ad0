"""The objective self_supervised_depth: depth trained from video through a pose network, in the ordinary trainer."""

from __future__ import annotations

import json

import pytest
import torch

from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError, DataError

SDE = [
    "tasks={semseg: {weight: 1.0}, depth: {weight: 1.0, output: disparity, depth_range: [0.1, 20.0]}}",
    "objectives=[{name: self_supervised_depth, options: {pose_lr: 1.0e-4}}]",
    "data.options={height: 32, width: 48, num_train: 8, num_val: 4, frames: true}",
    "data.augment={scale: [1.0, 1.25], crop: [32, 48], flip: true, photometric: false}",
    "model.arch=xtam",
    "model.options={decoder_channels: [4, 8, 8, 8, 8], scales: {depth: [0, 1, 2, 3]}, regression: [depth]}",
    "data.batch_size=2",
    "train.grad_clip=10.0",
    "train.keep_checkpoints=5",
]


def test_depth_trains_from_video_and_the_pose_network_learns(tiny_config):
    trainer = Trainer(tiny_config(*SDE, "train.steps=3", "train.log_every=1"), progress=False)
    objective = trainer.objectives[0]
    assert objective.replaces == ("depth",) and trainer._replaced == {"depth"}
    before = [p.detach().clone() for p in objective.parameters()]
    batch = next(iter(trainer.loader))
    assert batch["frames"].shape == (2, 3, 3, 32, 48) and batch["camera"].shape == (2, 3, 3)
    # the depth loss is the objective's photometric loss, not the task's L1 against the labels
    from scenemtl.engine.evaluate import move

    moved = move(batch, trainer.device)
    with torch.no_grad():
        output = trainer.model(moved["image"])
        losses = trainer.task_losses(output, moved)
        own = trainer.tasks["depth"].loss(output.final["depth"], moved["depth"])
    assert set(losses) == {"semseg", "depth"} and not torch.isclose(losses["depth"], own)
    trainer.fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, objective.parameters()))
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r["kind"] == "self_supervised_depth"]
    assert logged and {"photometric/0", "photometric/3", "smoothness/0", "automask/0"} <= set(logged[-1])
    assert 0 < logged[-1]["photometric/0"] < 1
    results = json.loads((trainer.run_dir / "results.json").read_text())["metrics"]["depth"]
    assert results["rmse"] > 0  # evaluated in metres from the decoded disparity


def test_resume_restores_the_pose_network_exactly(tiny_config):
    straight = Trainer(tiny_config(*SDE, "train.steps=4", "name=straight"), progress=False)
    straight.fit()
    interrupted = Trainer(tiny_config(*SDE, "train.steps=4", "name=resumed"), progress=False)
    assert interrupted.fit(stop_at=2) is None
    resumed = Trainer(tiny_config(*SDE, "train.steps=4", "name=resumed"), resume=True, progress=False)
    assert resumed.step == 2
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    a, b = straight.objectives[0].state_dict(), resumed.objectives[0].state_dict()
    for key, value in a["pose"].items():
        assert torch.equal(value, b["pose"][key]), key
    assert a["scheduler"] == b["scheduler"]


def test_setting_errors_name_the_fix(tiny_config):
    with pytest.raises(ConfigError, match="needs tasks.depth.output: disparity"):
        Trainer(tiny_config(*SDE, "tasks.depth.output=depth"), progress=False, log=False)
    with pytest.raises(ConfigError, match="unknown objective 'self_supervised'"):
        tiny_config(*SDE, "objectives=[{name: self_supervised}]")
    with pytest.raises(ConfigError, match="objectives\\[0\\].options"):
        Trainer(tiny_config(*SDE, "objectives=[{name: self_supervised_depth, options: {pose: 1}}]"), progress=False, log=False)
    with pytest.raises(ConfigError, match="fp32 or bf16"):
        Trainer(tiny_config(*SDE, "train.precision=fp16"), progress=False, log=False)
    without_frames = Trainer(tiny_config(*SDE, "data.options.frames=false", "train.steps=1"), progress=False, log=False)
    with pytest.raises(DataError, match="needs video frames.*sequence_folder"):
        without_frames.fit()


def test_the_depth_labels_do_not_set_the_heads_starting_bias(tiny_config):
    """init_output_bias reads the training labels: not those of a task the objective trains without them."""
    plain = Trainer(tiny_config(*SDE, "train.init_output_bias=true", "objectives=[]", "name=a"), progress=False, log=False)
    video = Trainer(tiny_config(*SDE, "train.init_output_bias=true", "name=b"), progress=False, log=False)
    bias = [m.output_layers()["depth"][0].bias.detach().clone() for m in (plain.model, video.model)]
    fresh = Trainer(tiny_config(*SDE, "train.init_output_bias=false", "name=c"), progress=False, log=False)
    assert not torch.equal(bias[0], fresh.model.output_layers()["depth"][0].bias)  # the labels moved it
    assert torch.equal(bias[1], fresh.model.output_layers()["depth"][0].bias)  # not with the objective
