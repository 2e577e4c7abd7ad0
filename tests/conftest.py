"""Shared fixtures: tiny synthetic experiments that run in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

# under pytest-xdist (`-n 2`, as `make test` runs) each worker is one process per core: one thread
# each, set before torch is imported (and inherited by the CLI and torchrun processes tests start)
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_variable] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from scenemtl.config import Config, apply_overrides, validate  # noqa: E402
from scenemtl.engine.evaluate import move  # noqa: E402

TINY: dict = {
    "name": "tiny",
    "seed": 0,
    "tasks": {
        "semseg": {"weight": 1.0},
        "depth": {"weight": 1.0},
        "normals": {"weight": 1.0},
        "edge": {"weight": 10.0},
        "saliency": {"weight": 1.0},
    },
    "data": {
        "name": "synthetic",
        "options": {"height": 32, "width": 48, "num_train": 16, "num_val": 8},
        "batch_size": 4,
        "eval_batch_size": 8,
        "augment": {"scale": [0.75, 1.25], "flip": True, "photometric": True},
    },
    "model": {"arch": "hps", "backbone": {"name": "test_resnet"}, "options": {"head_channels": 8}},
    # the system allocator: a tuned one keeps each test process at its peak memory (tests/test_malloc.py
    # runs a training process with it)
    "train": {"steps": 4, "lr": 3e-3, "log_every": 2, "device": "cpu", "allocator": "system"},
}


THREADS = 1 if WORKER else 2


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)
    yield


@pytest.fixture
def tiny_config(tmp_path: Path):
    """A factory of tiny synthetic configs writing under ``tmp_path``; pass dotted overrides."""

    def make(*overrides: str) -> Config:
        raw = apply_overrides(TINY, [f"out_dir={tmp_path / 'runs' / '{name}'}", *overrides])
        return validate(raw, "(test)")

    return make


def loss_before_and_after_fit(trainer) -> tuple[float, float]:
    """The summed task losses on the first training batch before and after ``trainer.fit()``."""
    batch = move(next(iter(trainer.loader)), trainer.device)

    def total_loss() -> float:
        with torch.no_grad():
            output = trainer.model(batch["image"])
            return sum(trainer.task_losses(output, batch).values()).item()

    before = total_loss()
    trainer.fit()
    trainer.model.train()
    return before, total_loss()
