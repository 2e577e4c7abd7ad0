"""The evaluation loop and its results file."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scenemtl import __version__
from scenemtl.engine.logging import progress as progress_bar
from scenemtl.errors import ConfigError
from scenemtl.metrics import StreamingMetric, delta_m
from scenemtl.tasks import Task


def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked for, otherwise nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def move(batch: dict, device: torch.device) -> dict:
    """Tensors of a batch onto ``device`` (``meta`` stays)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tasks: Mapping[str, Task],
    batches: Iterable[dict],
    device: torch.device,
    precision: str = "fp32",
    progress: bool = True,
) -> dict[str, StreamingMetric]:
    """Run the model over ``batches`` and return each task's metric, synchronised across processes."""
    was_training = model.training
    model.eval()
    metrics = {name: task.metric() for name, task in tasks.items()}
    for batch in progress_bar(batches, desc="eval", leave=False, disable=not progress):
        batch = move(batch, device)
        with autocast(device, precision):
            output = model(batch["image"])
        for name, task in tasks.items():
            metrics[name].update(task.predict(output.final[name].float()), batch[name])
    for metric in metrics.values():
        metric.sync()
    model.train(was_training)
    return metrics


def load_reference(reference: str | Mapping[str, Mapping[str, float]] | None) -> dict[str, dict[str, float]] | None:
    """Single-task reference numbers: inline, or the ``metrics`` of a results file ``scenemtl eval`` wrote."""
    if reference is None or isinstance(reference, Mapping):
        return None if reference is None else {t: dict(m) for t, m in reference.items()}
    path = Path(reference)
    if not path.is_file():
        raise ConfigError(f"reference: results file not found: {path} (run `scenemtl eval` on the single-task model)")
    try:
        return json.loads(path.read_text())["metrics"]
    except (json.JSONDecodeError, KeyError) as error:
        raise ConfigError(f"reference: {path} is not a scenemtl results file ({error})") from None


def results_report(
    metrics: Mapping[str, StreamingMetric],
    reference: Mapping[str, Mapping[str, float]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-able report: every metric, each task's main metric and direction, Δm when referenced."""
    values = {name: m.compute() for name, m in metrics.items()}
    report: dict[str, Any] = {
        "scenemtl_version": __version__,
        **(extra or {}),
        "metrics": values,
        "main": {name: m.main for name, m in metrics.items()},
        "directions": {name: dict(m.directions) for name, m in metrics.items()},
        "variants": {name: m.variant for name, m in metrics.items()},
        "delta_m": None,
    }
    if reference:
        usable = {t: [metrics[t].main] for t in metrics if t in reference and metrics[t].main in reference[t]}
        if usable:
            report["delta_m"] = delta_m(values, reference, report["directions"], usable)
            report["delta_m_tasks"] = sorted(usable)
    return report


def format_table(report: Mapping[str, Any]) -> str:
    """A Markdown table of the main metric of each task (and Δm)."""
    lines = ["| task | metric | value |", "|---|---|---|"]
    for task, main in report["main"].items():
        arrow = "↑" if report["directions"][task][main] else "↓"
        value = report["metrics"][task][main]
        lines.append(f"| {task} | {main} {arrow} | {value:.4g} |" if math.isfinite(value) else f"| {task} | {main} | n/a |")
    if report.get("delta_m") is not None:
        lines.append(f"| all | Δm ↑ | {report['delta_m']:+.2f} % |")
    return "\n".join(lines)
