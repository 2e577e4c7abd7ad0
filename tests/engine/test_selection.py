"""Model selection (train.selection): the best checkpoint by a metric on data that is never the reported split."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scenemtl.data import register_dataset
from scenemtl.data.render import render_scene
from scenemtl.data.synthetic import SyntheticScenes
from scenemtl.engine import checkpoint as ckpt
from scenemtl.engine.selection import SELECTION_IDS_FILE
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import CheckpointError, ConfigError


@register_dataset("synthetic_test_split")
class SyntheticWithTestSplit(SyntheticScenes):
    """Synthetic scenes with a third split of its own, to select on."""

    splits = ("train", "val", "test")

    def render(self, index: int) -> dict:
        if self.split != "test":
            return super().render(index)
        return render_scene(np.random.default_rng([self.seed, 2, index]), self.config)


# 12 training images, 4 held out: 8 trained on, two batches of 4 per epoch; scored at steps 2, 4, 6, 8
# (on this CPU run the held-out rmse first gets worse, then better: the best moves after step 4)
HOLDOUT = [
    "train.steps=8",
    "train.eval_every=2",
    "train.lr=1e-2",
    "data.options.num_train=12",
    "data.options.num_val=4",
    "train.selection={metric: depth.rmse, holdout: 4}",
]


def records(trainer, kind: str) -> list[dict]:
    lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def best_in_log(trainer) -> tuple[int, float]:
    """The step with the lowest logged depth.rmse (the first one on ties) and its score."""
    scored = [(r["score"], r["step"]) for r in records(trainer, "select")]
    score, step = min(scored, key=lambda item: (item[0], item[1]))
    return step, score


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.selection={metric: semseg.miou, split: val}"], "train.selection.split is 'val', the same split as data.val_split"),
        (["train.selection={metric: semseg.miou, split: train}"], "same split as data.train_split"),
        (["train.selection={metric: semseg.miou, split: tset}"], "no split 'tset'. Did you mean 'test'?"),
        (["train.selection={metric: semseg.miou, split: test, holdout: 4}"], "'train.selection': give exactly one of split"),
        (["train.selection={metric: semseg.miou}"], "'train.selection': give exactly one of split"),
        (["train.selection={metric: semseg.mIoU, holdout: 4}"], "task 'semseg' reports no metric 'mIoU'. Did you mean 'miou'?"),
        (["train.selection={metric: semsg.miou, holdout: 4}"], "no task 'semsg'. Did you mean 'semseg'?"),
        (["train.selection={metric: miou, holdout: 4}"], "'train.selection.metric': must be 'delta_m'"),
        (["train.selection={metric: delta_m, holdout: 4}"], "needs single-task reference numbers: set 'reference:'"),
        (["train.selection={metric: semseg.miou, holdout: 4}", "train.eval_every=0"], "set train.eval_every"),
        (["train.selection={metric: semseg.miou, holdout: 16}"], "train.selection.holdout is 16 but the training split"),
        (["train.selection={metric: semseg.miou, holdot: 4}"], "unknown key 'holdot'. Did you mean 'holdout'?"),
    ],
)
def test_selection_config_errors_name_the_key_and_the_fix(tiny_config, overrides, message):
    with pytest.raises(ConfigError, match="train.selection|train.eval_every") as error:
        config = tiny_config("data.name=synthetic_test_split", "train.eval_every=2", *overrides)
        Trainer(config, progress=False, log=False)
    assert message in str(error.value)


def test_held_out_images_are_never_trained_on(tiny_config):
    trainer = Trainer(tiny_config(*HOLDOUT), progress=False, log=False)
    seen: list[str] = []
    step = trainer.train_step

    def recording(batches):
        seen.extend(meta["id"] for batch in batches for meta in batch["meta"])
        return step(batches)

    trainer.train_step = recording
    trainer.fit()
    record = json.loads((trainer.run_dir / SELECTION_IDS_FILE).read_text())
    assert record["split"] == "train" and record["holdout"] == 4 and len(record["ids"]) == 4
    held = {trainer.select_set.sample(i)["meta"]["id"] for i in range(len(trainer.select_set))}
    assert held == {f"train_{i:05d}" for i in record["indices"]}
    assert len(seen) == 8 * 4 and held.isdisjoint(seen)
    assert set(seen) | held == {f"train_{i:05d}" for i in range(12)}  # nothing else is lost
    # the draw has its own seed: another run seed holds out the same images
    other = Trainer(tiny_config(*HOLDOUT, "name=other", "seed=3"), progress=False, log=False)
    assert other.select_set.indices == record["indices"]


def test_best_checkpoint_is_the_best_logged_step_and_the_report_uses_it(tiny_config):
    trainer = Trainer(tiny_config(*HOLDOUT, "train.checkpoint_every=1", "train.keep_checkpoints=1"), progress=False)
    report = trainer.fit()
    assert [r["step"] for r in records(trainer, "select")] == [2, 4, 6, 8]
    assert all("score" not in r for r in records(trainer, "val"))  # the two logs are apart
    step, score = best_in_log(trainer)
    best = trainer.checkpoint_dir / ckpt.BEST_DIR
    meta = ckpt.read_meta(best)
    assert meta.step == step == trainer.best_step
    assert meta.selection["score"] == pytest.approx(score) and meta.selection["metric"] == "depth.rmse"
    assert meta.selection["data"]["holdout"] == 4 and meta.selection["higher_is_better"] is False
    assert not (best / ckpt.STATE_FILE).exists()
    # keep_checkpoints prunes the step checkpoints, never best/
    assert [p.name for p in ckpt.list_checkpoints(trainer.checkpoint_dir)] == ["step_0000008"]
    # the final report is that of best/'s weights, and says so
    results = json.loads((trainer.run_dir / "results.json").read_text())
    assert results == json.loads(json.dumps(report))
    assert results["split"] == "val" and results["step"] == step and results["trained_steps"] == 8
    assert results["checkpoint"] == "checkpoints/best" and results["selection"]["step"] == step
    header = (trainer.run_dir / "results.md").read_text().split("\n| task")[0]
    assert f"step {step} of 8" in header and "depth.rmse" in header and "4 images held out" in header
    for key, value in load_file(str(best / ckpt.MODEL_FILE)).items():
        assert torch.equal(trainer.model.state_dict()[key].cpu(), value), key
    # the report on the selection data gives the selecting score again, and says what it is
    on_selection = json.loads((trainer.run_dir / "results_selection.json").read_text())
    assert on_selection["metrics"]["depth"]["rmse"] == pytest.approx(score)
    assert "not a test result" in on_selection["note"]
    assert "SELECTION DATA, not a test result" in (trainer.run_dir / "results_selection.md").read_text().splitlines()[0]
    assert records(trainer, "val_selected")[0]["weights_step"] == step


def test_selection_on_a_split_of_its_own_by_delta_m(tiny_config):
    reference = "reference={semseg: {miou: 20.0}, depth: {rmse: 1.0}}"
    trainer = Trainer(
        tiny_config(
            "data.name=synthetic_test_split",
            "train.steps=4",
            "train.eval_every=2",
            reference,
            "train.selection={metric: delta_m, split: test}",
        ),
        progress=False,
    )
    report = trainer.fit()
    scored = [(-r["score"], r["step"]) for r in records(trainer, "select")]  # Δm: higher is better
    assert report["step"] == min(scored)[1] == ckpt.read_meta(trainer.checkpoint_dir / "best").step
    assert len(trainer.train_set) == 16 and not (trainer.run_dir / SELECTION_IDS_FILE).exists()
    assert json.loads((trainer.run_dir / "results_selection.json").read_text())["split"] == "test"
    assert "the split 'test'" in (trainer.run_dir / "results.md").read_text()


def test_no_selection_keeps_the_last_checkpoint(tiny_config):
    trainer = Trainer(tiny_config("train.steps=2", "train.eval_every=1"), progress=False)
    report = trainer.fit()
    assert trainer.selection is None and report["step"] == 2 and "selection" not in report
    assert not (trainer.checkpoint_dir / ckpt.BEST_DIR).exists() and not records(trainer, "select")
    assert "selection" not in ckpt.load_trainer_state(ckpt.list_checkpoints(trainer.checkpoint_dir)[-1])


def test_resume_keeps_the_best_so_far(tiny_config):
    straight = Trainer(tiny_config(*HOLDOUT, "name=straight"), progress=False)
    straight.fit()
    a = load_file(str(straight.checkpoint_dir / "best" / ckpt.MODEL_FILE))
    for stop_at in (3, 4):  # between two scorings; right after one (both against the one straight run)
        name = f"name=resumed{stop_at}"
        interrupted = Trainer(tiny_config(*HOLDOUT, name), progress=False)
        assert interrupted.fit(stop_at=stop_at) is None
        best_then = (interrupted.best_step, interrupted.best_score)
        assert best_then[0] is not None, stop_at
        resumed = Trainer(tiny_config(*HOLDOUT, name), resume=True, progress=False)
        assert (resumed.best_step, resumed.best_score) == best_then, stop_at
        resumed.fit()
        assert (resumed.best_step, resumed.best_score) == (straight.best_step, straight.best_score), stop_at
        assert resumed.best_step == best_in_log(resumed)[0], stop_at
        assert [r["step"] for r in records(resumed, "select")] == [2, 4, 6, 8], stop_at
        b = load_file(str(resumed.checkpoint_dir / "best" / ckpt.MODEL_FILE))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stop_at
        assert json.loads((resumed.run_dir / "results.json").read_text())["step"] == straight.best_step, stop_at


def test_resume_repairs_a_best_checkpoint_written_after_the_resumed_one(tiny_config):
    config = tiny_config(*HOLDOUT, "train.checkpoint_every=1", "train.keep_checkpoints=5")
    trainer = Trainer(config, progress=False, log=False)
    trainer.fit(stop_at=3)
    kept = trainer.best_step
    assert kept == 2
    # a hard crash: step 4 was scored and written as best/, the step-4 checkpoint never was
    trainer.step = 4
    trainer._save_best(4)
    assert ckpt.read_meta(trainer.checkpoint_dir / "best").step == 4
    resumed = Trainer(config, resume=True, progress=False, log=False)
    assert resumed.best_step == kept and ckpt.read_meta(trainer.checkpoint_dir / "best").step == kept
    a = load_file(str(trainer.checkpoint_dir / "step_0000002" / ckpt.MODEL_FILE))
    b = load_file(str(trainer.checkpoint_dir / "best" / ckpt.MODEL_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the resumed weights are those of step 3, not of the best
    c = load_file(str(trainer.checkpoint_dir / "step_0000003" / ckpt.MODEL_FILE))
    assert all(torch.equal(resumed.model.state_dict()[k], c[k]) for k in c)
    resumed.close()  # it owns the run folder until it trains or is closed
    # without the step-2 checkpoint the best weights are gone: the error says how to go on
    trainer._save_best(4)
    for folder in ckpt.list_checkpoints(trainer.checkpoint_dir)[:-1]:
        shutil.rmtree(folder)
    with pytest.raises(CheckpointError, match="Delete .*best to resume"):
        Trainer(config, resume=True, progress=False, log=False)
    shutil.rmtree(trainer.checkpoint_dir / "best")
    with pytest.warns(UserWarning, match="forgotten"):
        forgetful = Trainer(config, resume=True, progress=False, log=False)
    assert forgetful.best_step is None


def test_resume_refuses_another_selection(tiny_config):
    Trainer(tiny_config(*HOLDOUT), progress=False, log=False).fit(stop_at=2)
    with pytest.raises(ConfigError, match="lists other held-out images"):
        Trainer(tiny_config(*HOLDOUT, "train.selection.seed=1"), resume=True, progress=False, log=False)
    with pytest.raises(ConfigError, match="train.selection changed"):
        Trainer(tiny_config(*HOLDOUT, "train.selection.metric=semseg.miou"), resume=True, progress=False, log=False)
