"""Score saved predictions without a model (``scenemtl score``): the seeds' PNG folders, under a protocol.

Predictions are read from ``<pred>/<task>/<id>.<ext>`` in the formats the seeds and
``scenemtl eval --save-png`` write, at the image's original size; each task says which files it
reads and how (``Task.prediction_extensions``, ``Task.read_prediction``): class-id PNGs, 8-bit
PNGs of 255·p for probabilities, ``.npy``/``.mat`` depth in metres, RGB PNGs of normals.

Every id of the split must have a file for each scored task (missing files are an error that
lists them); files for ids outside the split are listed in the report, never scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scenemtl.config import Config, validate
from scenemtl.errors import ConfigError, DataError
from scenemtl.tasks import Task


def _find(folder: Path, sample_id: str, task: Task) -> Path | None:
    for extension in task.prediction_extensions:
        path = folder / f"{sample_id}{extension}"
        if path.is_file():
            return path
    return None


def score_config(dataset: str, root: str, split: str, tasks: Sequence[str], protocol: str | None) -> Config:
    """The config ``scenemtl score`` builds its dataset and metrics from."""
    return validate(
        {
            "name": f"score_{dataset}",
            "data": {"name": dataset, "root": root, "val_split": split},
            "tasks": {task: {} for task in tasks},
            "eval": {"protocol": protocol},
        },
        "(scenemtl score)",
    )


def score(
    dataset_name: str,
    root: str,
    split: str,
    predictions: str | Path,
    tasks: Sequence[str] | None = None,
    protocol: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the prediction folder against ``split`` of the dataset; returns the report ``scenemtl eval`` writes."""
    from scenemtl.data import DATASETS
    from scenemtl.engine import builder
    from scenemtl.engine.evaluate import metric_context, results_report, task_metrics
    from scenemtl.engine.logging import progress as progress_bar

    pred_root = Path(predictions)
    if not pred_root.is_dir():
        raise ConfigError(f"--pred: prediction folder not found: {pred_root}")
    info = DATASETS.get(dataset_name).info
    if tasks is None:
        tasks = [task for task in info.tasks if (pred_root / task).is_dir()]
        if not tasks:
            raise ConfigError(f"--pred {pred_root}: no task folder found; expected some of {list(info.tasks)} (<pred>/<task>/<id>.png …)")
    unknown = [task for task in tasks if task not in info.tasks]
    if unknown:
        raise ConfigError(f"--tasks: dataset '{dataset_name}' has no task {unknown}; it has {list(info.tasks)}")
    for task in tasks:
        if not (pred_root / task).is_dir():
            raise ConfigError(f"--pred: no folder {pred_root / task} for task '{task}'")
    config = score_config(dataset_name, root, split, tasks, protocol)
    task_objects = builder.build_tasks(config, info)
    for name, task in task_objects.items():
        if not task.prediction_extensions:
            raise ConfigError(f"scenemtl score cannot read saved predictions of task '{name}'")
    dataset = builder.build_dataset(config, split, evaluation=True)
    ids = [dataset.sample_id(i) for i in range(len(dataset))]
    files: dict[str, list[Path]] = {}
    missing: list[str] = []
    for task in tasks:
        found = [_find(pred_root / task, sample_id, task_objects[task]) for sample_id in ids]
        missing += [f"{task}/{sample_id}" for sample_id, path in zip(ids, found) if path is None]
        files[task] = found
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise DataError(
            f"{len(missing)} prediction file(s) missing in {pred_root} for split '{split}': {shown}; "
            "every id of the split needs one (a partial folder would score a different image set)"
        )
    known = set(ids)
    extra = sorted(
        f"{task}/{path.name}" for task in tasks for path in (pred_root / task).iterdir() if path.is_file() and path.stem not in known
    )
    metrics = task_metrics(task_objects)
    for index in progress_bar(range(len(dataset)), desc="score", disable=not progress):
        sample = dataset[index]
        batch = {key: (value[None] if isinstance(value, torch.Tensor) else value) for key, value in sample.items()}
        for name, task in task_objects.items():
            prediction = task.read_prediction(files[name][index])
            target = batch[name]
            if prediction.shape[-2:] != target.shape[-2:]:
                raise DataError(
                    f"{files[name][index]}: the prediction is {tuple(prediction.shape[-2:])} but the "
                    f"image {ids[index]} is {tuple(target.shape[-2:])}; save predictions at the original "
                    "size (padding cropped away)"
                )
            metrics[name].update(prediction, target, **metric_context(metrics[name], task, batch, [ids[index]]))
    return results_report(
        metrics,
        None,
        {
            "name": config.name,
            "dataset": dataset_name,
            "split": split,
            "predictions": str(pred_root),
            "images": len(ids),
            "extra_predictions": extra,
        },
    )
