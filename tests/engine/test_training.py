"""The training loop: it learns, it resumes exactly, and its checkpoints are safe and self-describing."""

import json

import pytest
import torch

from scenemtl.engine import checkpoint as ckpt
from scenemtl.engine.builder import model_from_checkpoint
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import CheckpointError, ScenemtlError
from scenemtl.engine.evaluate import move
from tests.conftest import loss_before_and_after_fit


def test_training_lowers_the_loss(tiny_config):
    config = tiny_config(
        "train.steps=40",
        "data.options.num_train=8",
        "data.augment.scale=null",
        "data.augment.flip=false",
        "data.augment.photometric=false",
        "train.lr=3e-3",
    )
    before, after = loss_before_and_after_fit(Trainer(config, progress=False, log=False))
    assert after < 0.7 * before, (before, after)


# drop path makes the model itself random: resume must restore the RNG exactly as well
RESUME = ["train.steps=5", "data.options.num_train=10", "train.keep_checkpoints=5", "model.backbone.options={drop_path_rate: 0.2}"]


def test_resume_continues_to_the_same_weights(tiny_config):
    straight = Trainer(tiny_config(*RESUME, "name=straight"), progress=False)
    straight.fit()
    a = straight.model.state_dict()
    # 10 samples padded to 12, batches of 4: 3 steps per epoch; stop mid-epoch, then at the end of an epoch
    for stop_at, position, epoch in [(2, 8, 0), (3, 12, 0)]:
        name = f"name=resumed{stop_at}"
        interrupted = Trainer(tiny_config(*RESUME, name), progress=False)
        assert interrupted.fit(stop_at=stop_at) is None
        assert (interrupted.position, interrupted.epoch) == (position, epoch)
        resumed = Trainer(tiny_config(*RESUME, name), resume=True, progress=False)
        assert resumed.step == stop_at
        resumed.fit()
        b = resumed.model.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (stop_at, key)
        # the resumed run's log has each step once
        steps = [
            json.loads(line)["step"]
            for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"
        ]
        assert steps == sorted(set(steps)), stop_at
    # logs and results were written
    records = [json.loads(line) for line in (straight.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"run", "train", "val"}
    assert records[0]["global_batch"] == 4 and records[0]["processes"] == 1
    assert all(r["memory_mib"] > 0 for r in records if r["kind"] == "train")
    assert any((straight.run_dir / "tensorboard").iterdir())
    assert json.loads((straight.run_dir / "results.json").read_text())["metrics"]["semseg"]["miou"] >= 0


def test_checkpoint_alone_rebuilds_the_model(tiny_config):
    from scenemtl.models.layers.winograd import Conv3x3

    trainer = Trainer(tiny_config("train.steps=2", "train.winograd=f2"), progress=False, log=False)
    trainer.fit()
    folder = ckpt.list_checkpoints(trainer.checkpoint_dir)[-1]
    meta = ckpt.read_meta(folder)
    assert meta.step == 2 and meta.config.model.arch == "hps"
    assert meta.class_names["semseg"][:2] == ["floor", "wall"]
    assert meta.mean == pytest.approx((0.485, 0.456, 0.406))
    model, tasks, _ = model_from_checkpoint(trainer.run_dir, torch.device("cpu"))
    image = torch.randn(1, 3, 32, 48)
    trainer.model.eval()
    assert torch.allclose(model(image).final["depth"], trainer.model(image).final["depth"])
    # train.winograd holds for the run's model and for the one rebuilt from its checkpoint
    for rebuilt in (trainer.model, model):
        tiles = {m.max_tile for m in rebuilt.modules() if isinstance(m, Conv3x3)}
        assert tiles == {2}
    # the training state is plain tensors and numbers: it loads with weights_only=True
    state = ckpt.load_trainer_state(folder)
    assert state["step"] == 2 and "optimizer" in state


def test_existing_run_is_never_overwritten(tiny_config):
    Trainer(tiny_config("train.steps=1"), progress=False, log=False).fit()
    with pytest.raises(ScenemtlError, match="already holds checkpoints"):
        Trainer(tiny_config("train.steps=1"), progress=False, log=False)
    fresh = Trainer(tiny_config("name=fresh"), resume=True, progress=False, log=False)  # nothing to resume: a new run
    assert fresh.step == 0
    fresh.close()


def test_crash_while_writing_keeps_the_previous_checkpoint(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config("train.steps=2"), progress=False, log=False)
    trainer.fit()
    before = ckpt.list_checkpoints(trainer.checkpoint_dir)
    weights = (before[-1] / ckpt.MODEL_FILE).read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    trainer.step = 3
    with pytest.raises(ScenemtlError, match="cannot write the checkpoint .*previous checkpoint step_0000002 is intact"):
        trainer.save()
    after = ckpt.list_checkpoints(trainer.checkpoint_dir)
    assert after == before and (after[-1] / ckpt.MODEL_FILE).read_bytes() == weights
    # and the same step can be written again over its old version
    monkeypatch.undo()
    trainer.step = 2
    trainer.save()
    assert ckpt.read_meta(trainer.checkpoint_dir).step == 2


def test_crash_between_the_renames_of_a_resave_loses_nothing(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config("train.steps=2", "train.keep_checkpoints=1"), progress=False, log=False)
    trainer.fit()
    rename = ckpt.Path.rename

    def crash_on_the_new_copy(self, target):
        if self.name.endswith(".tmp"):
            raise OSError("power cut")
        return rename(self, target)

    monkeypatch.setattr(ckpt.Path, "rename", crash_on_the_new_copy)
    with pytest.raises(OSError):
        trainer.save()  # step_0000002 was moved aside, the new copy never arrived
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(trainer.checkpoint_dir)] == ["step_0000002"]
    assert ckpt.read_meta(trainer.checkpoint_dir).step == 2


def test_checkpoint_for_another_model_lists_the_mismatch(tiny_config):
    trainer = Trainer(tiny_config("train.steps=1"), progress=False, log=False)
    trainer.fit()
    other = Trainer(tiny_config("name=other", "model.options.head_channels=4"), progress=False, log=False)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        ckpt.load_weights(other.model, trainer.run_dir)
    meta = ckpt.read_meta(trainer.run_dir)
    with pytest.raises(CheckpointError, match="architecture 'hps' vs config 'stl'"):
        ckpt.compare_to_config(meta, tiny_config("model.arch=stl"), trainer.run_dir)


def test_non_finite_loss_names_the_task_and_step(tiny_config):
    trainer = Trainer(tiny_config("train.steps=1"), progress=False, log=False)
    batch = move(next(iter(trainer.loader)), trainer.device)
    with torch.no_grad():
        trainer.model.heads["depth"].classifier.weight.fill_(float("nan"))
    with pytest.raises(ScenemtlError, match="task 'depth'.*step 1"):
        trainer.train_step([batch])


def test_deep_supervision_losses_take_the_stage_weights_the_model_gives(tiny_config):
    from scenemtl.models.output import ModelOutput

    trainer = Trainer(tiny_config(), progress=False, log=False)
    batch = move(next(iter(trainer.loader)), trainer.device)
    output = trainer.model(batch["image"])
    plain = trainer.task_losses(ModelOutput(final=output.final), batch)
    aux = {"early": {name: value.detach() for name, value in output.final.items()}}
    doubled = trainer.task_losses(ModelOutput(final=output.final, aux=aux), batch)
    halved = trainer.task_losses(ModelOutput(final=output.final, aux=aux, aux_weights={"early": 0.5}), batch)
    for name in plain:
        assert doubled[name].item() == pytest.approx(2 * plain[name].item(), rel=1e-5)
        assert halved[name].item() == pytest.approx(1.5 * plain[name].item(), rel=1e-5)
