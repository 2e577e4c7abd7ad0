"""``benchmarks/train_vs_official.py --live-memory``: the live-tensor peak it reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_vs_official.py"


def test_live_memory_is_the_peak_of_live_tensors_over_the_steps_lowest_point():
    spec = importlib.util.spec_from_file_location("train_vs_official", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kept = [torch.zeros(256 * 1024)]  # 1 MiB made before the step and freed in it

    def step() -> None:
        kept.clear()
        a = torch.ones(1024 * 1024)  # 4 MiB
        b = a * 2  # 4 MiB
        c = a + b  # 4 MiB: three alive at once
        kept.append(c[:1].clone())

    growth = module._live_growth_mib(step)
    assert growth is not None and abs(growth - 12.0) < 0.01
