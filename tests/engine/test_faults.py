"""Faults: signals, a kill during a checkpoint write, unsafe pickles, non-finite losses, out of memory."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from scenemtl.cli import main
from scenemtl.engine import checkpoint as ckpt
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import CheckpointError, ConfigError, ScenemtlError
from tests.conftest import TINY

RUNNER = """
import sys, time
from pathlib import Path
from scenemtl.engine import checkpoint

save_file, stall = checkpoint.save_file, sys.argv.pop(1)

def slow_save(tensors, path, metadata=None):
    save_file(tensors, path, metadata=metadata)
    if stall in str(path):  # the weights of this step are half-way to disk: freeze here
        Path(path).parents[1].joinpath("STALLED").touch()
        time.sleep(600)

checkpoint.save_file = slow_save
from scenemtl.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def config_file(tmp_path):
    raw = dict(TINY, out_dir=str(tmp_path / "runs" / "{name}"))
    raw["train"] = dict(raw["train"], device="cpu", steps=6, checkpoint_every=2, keep_checkpoints=5)
    raw["model"] = dict(raw["model"], backbone={"name": "test_resnet", "options": {"drop_path_rate": 0.1}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(tmp_path: Path, *args: str, runner: bool = False) -> subprocess.Popen:
    prefix = [sys.executable, "-c", RUNNER] if runner else [sys.executable, "-m", "scenemtl.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*prefix, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, code: int = 0) -> str:
    """Wait for the command; its exit code must be ``code``; returns stdout and stderr together."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == code, out[-2000:] + err[-4000:]
    return out + err


def wait_for(condition, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.1)


def final_state(run_dir: Path) -> dict:
    return load_file(str(sorted((run_dir / "checkpoints").glob("step_*"))[-1] / ckpt.MODEL_FILE))


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = final_state(a), final_state(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def train_here(config_file: Path, *args: str) -> None:
    """``train`` through the same command in this process, with one thread as ``cli``'s processes: the
    uninterrupted reference run and the resumed runs (only the run to interrupt needs a process of its own)."""
    torch.set_num_threads(1)
    assert main(["train", str(config_file), "--quiet", *args]) == 0


@pytest.mark.slow
def test_sigterm_then_resume_equals_an_uninterrupted_run(config_file, tmp_path):
    train_here(config_file, "--set", "name=straight")
    run = tmp_path / "runs" / "cut"
    process = cli(tmp_path, "train", str(config_file), "--quiet", "--set", "name=cut", "--set", "train.steps=100000")
    wait_for(lambda: (run / "metrics.jsonl").exists() and '"train"' in (run / "metrics.jsonl").read_text(), process)
    process.send_signal(signal.SIGTERM)
    out = finish(process, code=75)  # stopped, resumable: a shell's `train && eval` does not go on
    assert "stopped by SIGTERM" in out and "--resume" in out
    stopped_at = ckpt.read_meta(run).step
    assert 2 <= stopped_at < 6, "the test needs the stop to land before the last step"
    train_here(config_file, "--set", "name=cut", "--resume")
    assert_same_weights(tmp_path / "runs" / "straight", run)


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_good_one(config_file, tmp_path):
    train_here(config_file, "--set", "name=straight")
    run = tmp_path / "runs" / "killed"
    process = cli(tmp_path, "step_0000004", "train", str(config_file), "--quiet", "--set", "name=killed", runner=True)
    wait_for(lambda: (run / "checkpoints" / "STALLED").exists(), process)
    process.kill()  # SIGKILL while step 4's weights are written
    process.communicate()
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_0000002"]
    assert ckpt.read_meta(run).step == 2
    train_here(config_file, "--set", "name=killed", "--resume")
    assert_same_weights(tmp_path / "runs" / "straight", run)


def test_a_checkpoint_whose_pickle_runs_code_is_refused(tiny_config, tmp_path):
    trainer = Trainer(tiny_config("train.steps=1"), progress=False, log=False)
    trainer.fit()
    folder = ckpt.list_checkpoints(trainer.checkpoint_dir)[-1]
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"step": 1, "optimizer": Payload()}, folder / ckpt.STATE_FILE)
    with pytest.raises(CheckpointError, match="pickled Python objects") as refused:
        Trainer(tiny_config("train.steps=2"), resume=True, progress=False, log=False)
    assert not marker.exists()
    assert "weights_only=False" not in str(refused.value)  # never the advice to turn the check off


def test_nan_loss_is_named_or_skipped_and_counted(tiny_config):
    for policy in ("error", "skip"):
        trainer = Trainer(tiny_config(f"name={policy}", f"train.nonfinite={policy}"), progress=False, log=False)
        with torch.no_grad():
            trainer.model.heads["normals"].classifier.bias.fill_(float("nan"))
        batch = next(iter(trainer.loader))
        if policy == "error":
            with pytest.raises(ScenemtlError, match="task 'normals'.*step 1.*nonfinite=skip"):
                trainer.train_step([batch])
            continue
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        assert trainer.train_step([batch])["skipped"] and trainer.skipped == 1
        after = trainer.model.state_dict()
        unchanged = [
            torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before if "running" not in k and "num_batches" not in k
        ]
        assert all(unchanged)  # no optimiser step
        assert trainer.state()["skipped"] == 1


def test_out_of_memory_says_what_to_lower(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config(), progress=False, log=False)

    def exhausted(image):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "net", exhausted)
    with pytest.raises(ScenemtlError, match="out of memory.*data.batch_size.*train.accumulation"):
        trainer.train_step([next(iter(trainer.loader))])


def test_wandb_without_the_package_is_a_clear_error(tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'scenemtl\[wandb\]'"):
        Trainer(tiny_config("train.wandb=my-project"), progress=False)
