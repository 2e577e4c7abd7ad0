"""torchrun on CPU: two Gloo processes equal one process with the same global batch (the reference runs in this process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from scenemtl.cli import main
from tests.conftest import TINY

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
CLI = ["-m", "scenemtl.cli"]


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.fixture
def config_file(tmp_path):
    raw = dict(TINY, out_dir=str(tmp_path / "runs" / "{name}"))
    # every pixel labelled (no zoom padding): each process's loss is then a mean over as many pixels
    raw["data"] = dict(raw["data"], augment={"scale": None, "flip": True, "photometric": False})
    raw["data"]["options"] = dict(raw["data"]["options"], num_train=16)
    raw["train"] = dict(raw["train"], device="cpu", steps=4)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def parameters(run_dir: Path) -> dict:
    state = load_file(str(sorted((run_dir / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def train_in_this_process(config_file: Path, *overrides: str) -> None:
    """The one-process reference through the same command, in this process (one thread, as each torchrun worker)."""
    torch.set_num_threads(1)
    assert main(["train", str(config_file), "--quiet", *[f"--set={o}" for o in overrides]]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("balancer", ["uncertainty", "upgrad"])
def test_two_processes_train_like_one_with_the_same_global_batch(config_file, tmp_path, balancer):
    # a learned loss weighting (the model's gradients go through DDP's hooks, its log-variances are
    # averaged by hand: they live outside DDP) and a gradient aggregator (the Jacobian is averaged
    # over processes before it is aggregated, and the loop all-reduces the rest itself)
    run([*TORCHRUN, *CLI, "train", str(config_file), "--quiet", "--set", f"balancer.name={balancer}", "--set", "name=ddp"], tmp_path)
    # one process: batch 4 × 2 accumulation steps = the global batch of 2 processes × 4
    train_in_this_process(config_file, f"balancer.name={balancer}", "name=one", "train.accumulation=2")
    ddp, one = parameters(tmp_path / "runs" / "ddp"), parameters(tmp_path / "runs" / "one")
    assert ddp.keys() == one.keys()
    for key in ddp:
        assert (ddp[key] - one[key]).abs().max() <= 1e-5, key
    states = [
        torch.load(sorted((tmp_path / "runs" / name / "checkpoints").glob("step_*"))[-1] / "trainer.pt", weights_only=True)["balancer"]
        for name in ("ddp", "one")
    ]
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(value, states[1][key], atol=1e-5), key
    log = [json.loads(line) for line in (tmp_path / "runs" / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["kind"] == "run" and log[0]["global_batch"] == 8 and log[0]["processes"] == 2
    losses = [record["loss"] for record in log if record["kind"] == "train"]
    assert sum(losses[-1].values()) < sum(losses[0].values())


@pytest.mark.slow
def test_two_processes_evaluate_like_one(config_file, tmp_path):
    # evaluation of one checkpoint: two processes, each half of the split, give the one-process numbers
    train_in_this_process(config_file, "name=trained", "train.steps=1")
    checkpoint = str(tmp_path / "runs" / "trained")
    run([*TORCHRUN, *CLI, "eval", str(config_file), "--quiet", "--checkpoint", checkpoint, "--out", "two.json"], tmp_path)
    assert main(["eval", str(config_file), "--quiet", "--checkpoint", checkpoint, "--out", str(tmp_path / "one.json")]) == 0
    two = json.loads((tmp_path / "two.json").read_text())
    single = json.loads((tmp_path / "one.json").read_text())
    assert two["processes"] == 2 and single["processes"] == 1
    for task, values in single["metrics"].items():
        for name, value in values.items():
            assert two["metrics"][task][name] == pytest.approx(value, rel=1e-6, nan_ok=True), (task, name)


@pytest.mark.slow
def test_two_processes_train_adaptation_and_video_objectives_like_one(tmp_path):
    """The objectives' own parameters and state under DDP: the adversarial discriminators (their gradients
    averaged by the objective), the target stream (each process its share) and the pose network of
    self-supervised depth (averaged and clipped with the weights) equal one process with 2 micro-batches."""
    size = {"height": 32, "width": 48}
    raw = dict(TINY, out_dir=str(tmp_path / "runs" / "{name}"))
    raw["tasks"] = {"semseg": {"weight": 1.0}, "depth": {"weight": 1.0, "output": "disparity", "depth_range": [0.1, 20.0]}}
    raw["data"] = dict(
        raw["data"],
        batch_size=2,
        augment={"scale": None, "flip": True, "photometric": False},
        options={**size, "num_train": 8, "frames": True},
    )
    raw["objectives"] = [
        {"name": "self_supervised_depth", "options": {"pose_lr": 1e-4}},
        {
            "name": "adversarial",
            "options": {"target": {"name": "synthetic", "options": {**size, "num_train": 8, "domain": "target"}}, "ndf": 8},
        },
    ]
    # SGD: Adam would magnify the float noise of near-zero gradients (reduction order) into lr-sized steps
    raw["train"] = dict(raw["train"], device="cpu", steps=3, grad_clip=1.0, optimizer="sgd", lr=0.05)
    config_file = tmp_path / "objectives.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    run([*TORCHRUN, *CLI, "train", str(config_file), "--quiet", "--set", "name=ddp"], tmp_path)
    train_in_this_process(config_file, "name=one", "train.accumulation=2")
    ddp, one = parameters(tmp_path / "runs" / "ddp"), parameters(tmp_path / "runs" / "one")
    for key in ddp:
        assert (ddp[key] - one[key]).abs().max() <= 1e-5, key
    states = [
        torch.load(sorted((tmp_path / "runs" / name / "checkpoints").glob("step_*"))[-1] / "trainer.pt", weights_only=True)["objectives"]
        for name in ("ddp", "one")
    ]
    for key, value in states[0][0]["pose"].items():
        if value.is_floating_point() and "running" not in key:
            assert (value - states[1][0]["pose"][key]).abs().max() <= 1e-5, key
    # the spectral norms' power-iteration vectors too: each micro-batch starts from the step's u, v
    for key, value in states[0][1]["discriminators"].items():
        assert (value - states[1][1]["discriminators"][key]).abs().max() <= 1e-5, key
    # 8 target images: each of 2 processes reads 4 per epoch, one process 8; positions count a process's own
    assert states[0][1]["stream"] == {"epoch": 1, "position": 2} and states[1][1]["stream"] == {"epoch": 1, "position": 4}


@pytest.mark.slow
def test_two_processes_score_3d_detection_like_one(tmp_path):
    """The Cityscapes-3D evaluator under torchrun: each process decodes its share, the JSONs are gathered."""
    raw = dict(TINY, out_dir=str(tmp_path / "runs" / "{name}"))
    raw["tasks"] = {
        "semseg": {"weight": 1.0},
        "det3d": {"weight": 1.0, "width": 64, "dcn": False, "score_threshold": 0.0, "nms_pre": 20, "max_per_image": 10},
    }
    raw["data"] = dict(raw["data"], augment={"scale": None, "flip": True, "photometric": False}, eval_batch_size=2)
    raw["data"]["options"] = {"height": 48, "width": 64, "num_train": 8, "num_val": 6}
    raw["train"] = dict(raw["train"], device="cpu", steps=2, init_output_bias=False)
    config_file = tmp_path / "det3d.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    train_in_this_process(config_file, "name=trained")
    checkpoint = str(tmp_path / "runs" / "trained")
    run([*TORCHRUN, *CLI, "eval", str(config_file), "--quiet", "--checkpoint", checkpoint, "--out", "two.json"], tmp_path)
    assert main(["eval", str(config_file), "--quiet", "--checkpoint", checkpoint, "--out", str(tmp_path / "one.json")]) == 0
    two, single = (json.loads((tmp_path / name).read_text()) for name in ("two.json", "one.json"))
    assert two["processes"] == 2 and set(single["metrics"]["det3d"]) >= {"mds", "map"}
    for name, value in single["metrics"]["det3d"].items():
        assert two["metrics"]["det3d"][name] == pytest.approx(value, abs=1e-9, nan_ok=True), name
