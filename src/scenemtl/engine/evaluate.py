"""The evaluation loop and its results file."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scenemtl import __version__
from scenemtl.engine.logging import progress as progress_bar
from scenemtl.errors import ConfigError, DataError
from scenemtl.data.loader import StoredBatch
from scenemtl.metrics import StreamingMetric, delta_m
from scenemtl.tasks import Task


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Autocast to bf16 or fp16 as ``precision`` asks; nothing for fp32."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])
    return nullcontext()


def move(batch: dict, device: torch.device) -> dict:
    """Tensors of a batch onto ``device`` (``meta`` stays); a ``StoredBatch`` is moved as bytes and decoded there;
    instance targets (a list with one object per image that has ``.to``, e.g. ``Boxes3D``) each moved."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, StoredBatch):
            value = value.to(device, non_blocking=True).decode()
        elif isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
        elif key != "meta" and isinstance(value, list) and value and all(hasattr(v, "to") for v in value):
            value = [v.to(device) for v in value]
        moved[key] = value
    return moved


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tasks: Mapping[str, Task],
    batches: Iterable[dict],
    device: torch.device,
    precision: str = "fp32",
    progress: bool = True,
    writers: Mapping[str, Callable[[torch.Tensor, list[dict]], None]] | None = None,
    on_batch: Callable[[dict, dict[str, torch.Tensor]], None] | None = None,
    require_labels: bool = True,
) -> dict[str, StreamingMetric]:
    """Run the model over ``batches`` and return each task's metric, synchronised across processes.

    ``require_labels``: a task without one labelled pixel in the whole split is an error (off when the
    batches are a part of the split, e.g. one domain of a many-to-many dataset).

    ``writers`` maps a task to a callable that receives each batch's predictions and ``meta``
    (to save them, e.g. boundary PNGs for SEISM). Metrics receive what their ``wants`` names:
    ``ids`` (the samples' ids, to score a subset, e.g. SEISM's PASCAL ``test_new``) and
    ``eval_target`` (the task's evaluation target when the batch has it, e.g. SEISM's label images)
    , ``logits`` (the task's raw output, for metrics defined on it, e.g. DenseMTL's legacy normals) and
    ``meta`` (the samples' plain values, e.g. the camera a 3D-detection metric writes its files with).
    ``on_batch(batch, predictions)`` sees every batch with all tasks' predictions (e.g. to draw panels).
    """
    was_training = model.training
    model.eval()
    metrics = task_metrics(tasks)
    labelled = torch.zeros(len(tasks), dtype=torch.float64, device=device)  # labelled pixels per task
    images = 0
    for batch in progress_bar(batches, desc="eval", leave=False, disable=not progress):
        batch = move(batch, device)
        with autocast(device, precision):
            output = model(batch["image"])
        ids = [str(meta.get("id", "")) for meta in batch.get("meta", [])]
        images += batch["image"].shape[0]
        predictions: dict[str, torch.Tensor] = {}
        for index, (name, task) in enumerate(tasks.items()):
            labelled[index] += task.valid_mask(batch[name]).sum()
            raw = output.final[name]
            prediction = task.predict(raw.float() if isinstance(raw, torch.Tensor) else raw, **task.prediction_inputs(batch))
            context = metric_context(metrics[name], task, batch, ids, raw)
            metrics[name].update(prediction, batch[name], **context)
            if writers and name in writers:
                writers[name](prediction, batch.get("meta", []))
            if on_batch is not None:
                predictions[name] = prediction
        if on_batch is not None:
            on_batch(batch, predictions)
    for metric in metrics.values():
        metric.sync()
    model.train(was_training)
    counts = torch.cat([labelled.cpu(), torch.tensor([float(images)], dtype=torch.float64)])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        counts = counts.to(device)
        torch.distributed.all_reduce(counts)
        counts = counts.cpu()
    empty = [name for name, count in zip(tasks, counts[:-1].tolist()) if count == 0]
    if require_labels and empty and counts[-1] > 0:
        raise DataError(
            f"task(s) {empty} have no labelled pixel in any of the {int(counts[-1])} evaluation images, so they cannot "
            "be scored: check that split's label files (data.root, the dataset's folders for these tasks)"
        )
    return metrics


def task_metrics(tasks: Mapping[str, Task]) -> dict[str, StreamingMetric]:
    """A fresh metric per task, marked with the protocol its options come from."""
    metrics = {name: task.metric() for name, task in tasks.items()}
    for name, task in tasks.items():
        metrics[name].eval_protocol = task.eval_protocol
    return metrics


def metric_context(
    metric: StreamingMetric, task: Task, batch: Mapping[str, Any], ids: list[str], logits: torch.Tensor | None = None
) -> dict[str, Any]:
    """The extra inputs a metric asks for (``wants``) that this batch has: sample ids, the task's evaluation
    target, the model's raw output (``logits``)."""
    context: dict[str, Any] = {}
    if "logits" in metric.wants and logits is not None:
        context["logits"] = logits.float()
    if "meta" in metric.wants:
        context["meta"] = list(batch.get("meta", []))
    if "ids" in metric.wants:
        context["ids"] = ids
    if "eval_target" in metric.wants and task.eval_target is not None and task.eval_target in batch:
        context["eval_target"] = batch[task.eval_target]
    return context


def load_reference(reference: str | Mapping[str, Mapping[str, float]] | None) -> dict[str, dict[str, float]] | None:
    """Single-task reference numbers: inline, or the ``metrics`` of a results file ``scenemtl eval`` wrote.

    Relative paths are relative to the working directory. Values must be numbers (checked now,
    not in the middle of training); ``results_report`` leaves out of Δm a task whose reference
    or result is zero or not finite, and lists it under ``delta_m_skipped``.
    """
    if reference is None:
        return None
    if isinstance(reference, Mapping):
        values = {t: dict(m) for t, m in reference.items()}
    else:
        path = Path(reference)
        if not path.is_file():
            raise ConfigError(f"reference: results file not found: {path} (train or `scenemtl eval` the single-task model first)")
        try:
            values = json.loads(path.read_text())["metrics"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ConfigError(f"reference: {path} is not a scenemtl results file ({error})") from None
    for task, numbers in values.items():
        if not isinstance(numbers, Mapping):
            raise ConfigError(f"reference: '{task}' must map metric names to numbers, got {numbers!r}")
        for name, value in numbers.items():
            if value is not None and not isinstance(value, (int, float)):
                raise ConfigError(f"reference: '{task}/{name}' must be a number, got {value!r}")
    return values


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
    protocols = {m.eval_protocol for m in metrics.values()}
    report.setdefault("protocol", protocols.pop() if len(protocols) == 1 else None)
    decathlon = _decathlon(values)
    if decathlon is not None:
        report["decathlon"] = decathlon
    curves = {name: m.curves() for name, m in metrics.items() if hasattr(m, "curves")}
    if curves:  # precision/recall over thresholds (boundaries)
        report["curves"] = curves
    if reference:

        def usable_value(value: Any) -> bool:
            return isinstance(value, (int, float)) and math.isfinite(value) and value != 0

        referenced = [t for t in metrics if t in reference and metrics[t].main in reference[t]]
        usable = {
            t: [metrics[t].main]
            for t in referenced
            if usable_value(reference[t][metrics[t].main]) and usable_value(values[t][metrics[t].main])
        }
        report["delta_m_skipped"] = sorted(set(referenced) - set(usable))
        if usable:
            report["delta_m"] = delta_m(values, reference, report["directions"], usable)
            report["delta_m_tasks"] = sorted(usable)
    return report


def _decathlon(values: Mapping[str, Mapping[str, float]]) -> dict[str, Any] | None:
    """The Visual Decathlon score of the tasks named by its domains that report a top-1 ``error`` (None without any)."""
    from scenemtl.metrics.decathlon import BASELINE_ACCURACY, decathlon_score

    errors = {
        name: float(numbers["error"])
        for name, numbers in values.items()
        if name in BASELINE_ACCURACY and isinstance(numbers.get("error"), float) and math.isfinite(numbers["error"])
    }
    if not errors:
        return None
    score, parts = decathlon_score(errors)
    return {"score": score, "per_domain": parts, "domains": len(parts), "complete": len(parts) == len(BASELINE_ACCURACY)}


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def format_table(report: Mapping[str, Any]) -> str:
    """A Markdown table of the main metric of each task (and Δm)."""
    lines = ["| task | metric | value |", "|---|---|---|"]
    for task, main in report["main"].items():
        arrow = "↑" if report["directions"][task][main] else "↓"
        value = report["metrics"][task][main]
        lines.append(f"| {task} | {main} {arrow} | {value:.4g} |" if math.isfinite(value) else f"| {task} | {main} | n/a |")
    if report.get("delta_m") is not None:
        lines.append(f"| all | Δm ↑ | {report['delta_m']:+.2f} % |")
    if report.get("decathlon"):
        decathlon = report["decathlon"]
        scope = "" if decathlon["complete"] else f" ({decathlon['domains']} of 10 domains)"
        lines.append(f"| all | Decathlon score ↑{scope} | {decathlon['score']:.0f} |")
    return "\n".join(lines)


def format_report(report: Mapping[str, Any]) -> str:
    """The full Markdown report: every metric with its variant, Δm, and per-class IoU tables."""
    header = []
    if report.get("protocol"):
        from scenemtl.tasks.protocols import PROTOCOLS

        protocol = PROTOCOLS.get(report["protocol"])
        header = [f"Protocol **{report['protocol']}**" + (f": {protocol.description}." if protocol else "."), ""]
    parts = header + [format_table(report), "", "| task | variant | metrics |", "|---|---|---|"]
    for task, values in report["metrics"].items():
        shown = ", ".join(f"{name} {value:.4g}" for name, value in values.items() if "/" not in name and isinstance(value, float))
        parts.append(f"| {task} | {report['variants'].get(task, '')} | {shown} |")
    if report.get("delta_m_skipped"):
        parts.append(f"\nΔm leaves out {', '.join(report['delta_m_skipped'])} (a reference or result of 0 or NaN).")
    for task, values in report["metrics"].items():
        classes = {name[4:]: value for name, value in values.items() if name.startswith("iou/")}
        if classes:
            parts += ["", f"**{task}: IoU per class**", "", "| class | IoU |", "|---|---|"]
            parts += [f"| {name} | {value:.2f} |" if math.isfinite(value) else f"| {name} | absent |" for name, value in classes.items()]
    return "\n".join(parts) + "\n"
