"""Batch-norm recalibration per group before scoring it (MTAN's Visual Decathlon test protocol).

MTAN's ``visual_decathlon/model_wrn_eval.py`` gives every domain "dataset-specific BN statistics" before
predicting its test images: one more epoch of SGD on the domain's training (then validation) images,
in training mode. ``evaluate_recalibrated`` keeps the statistics part and leaves the weights alone: for
each group of the evaluation split (a dataset's ``groups()``, the decathlon's domains) it re-estimates
every batch norm's running mean and variance from the same group of the training split (a cumulative
average over one pass with the training transform, as ``torch.optim.swa_utils.update_bn``; a model
that ``routes_tasks`` runs only that group's task, so statistics shared by the tasks' branches see
that branch alone), scores the group's evaluation images, and restores the statistics. Differences:
no gradient steps (MTAN's extra epoch also moves the weights, at a small learning rate), and every
group starts from the trained statistics (MTAN does not reload between domains; statistics that are
re-estimated from scratch do not depend on that).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from scenemtl.data.loader import AugmentedDataset, ShardSampler, collate
from scenemtl.engine.evaluate import autocast, evaluate, move, task_metrics
from scenemtl.engine.selection import IndexSubset
from scenemtl.errors import ConfigError
from scenemtl.metrics.base import StreamingMetric
from scenemtl.tasks import Task

_NORMS = (nn.modules.batchnorm._BatchNorm,)


def batch_norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every batch norm's running statistics (and its count of batches)."""
    return {
        name: value.detach().clone()
        for name, value in model.named_buffers()
        if name.rsplit(".", 1)[-1].startswith(("running_", "num_batches"))
    }


@torch.no_grad()
def recalibrate_batch_norm(
    model: nn.Module, batches: Any, device: torch.device, precision: str = "fp32", tasks: Sequence[str] | None = None
) -> int:
    """Re-estimate every batch norm's running statistics from ``batches`` (a cumulative average of one pass in
    training mode; the weights do not change). ``tasks``: the only task branches to run, for a model that
    ``routes_tasks``. Returns the number of images seen."""
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    seen = 0
    try:
        for batch in batches:
            batch = move(batch, device)
            with autocast(device, precision):
                if tasks is not None and getattr(model, "routes_tasks", False):
                    model(batch["image"], tasks=list(tasks))
                else:
                    model(batch["image"])
            seen += int(batch["image"].shape[0])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return seen


def evaluate_recalibrated(
    model: nn.Module,
    tasks: Mapping[str, Task],
    train_set: Any,
    train_transform: Any,
    val_set: Any,
    val_transform: Any,
    device: torch.device,
    batch_size: int,
    eval_batch_size: int,
    precision: str = "fp32",
    progress: bool = False,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    writers: Mapping[str, Any] | None = None,
) -> dict[str, StreamingMetric]:
    """Each task's metric over ``val_set``, every group scored after recalibrating the batch norms on the
    training split's same group (see the module docstring). Groups pair by the task their samples are
    labelled for (``meta['labelled']`` of the group's first sample). ``writers``: as ``evaluate``'s."""
    train_groups, val_groups = _groups(train_set, "training"), _groups(val_set, "evaluation")
    by_task = {_task_of(train_set, group): group for group in train_groups}
    saved = batch_norm_state(model)
    metrics = task_metrics(tasks)
    try:
        for group in val_groups:
            task = _task_of(val_set, group)
            if task not in by_task:  # (e.g. MTAN's second phase trains without imagenet12): the trained statistics
                warnings.warn(
                    f"eval.recalibrate_bn: no training images of '{task}'; it is scored with the trained statistics", stacklevel=2
                )
                part = evaluate(
                    model,
                    tasks,
                    _loader(val_set, group, val_transform, eval_batch_size, rank, world),
                    device,
                    precision,
                    progress,
                    writers,
                    require_labels=False,
                )
                for name, metric in metrics.items():
                    metric.merge(part[name])
                continue
            source = DataLoader(
                AugmentedDataset(IndexSubset(train_set, by_task[task]), train_transform),
                batch_size=batch_size,
                sampler=[(index, seed + index) for index in range(len(by_task[task]))],
                collate_fn=collate,
            )
            recalibrate_batch_norm(model, source, device, precision, tasks=[task])
            batches = _loader(val_set, group, val_transform, eval_batch_size, rank, world)
            part = evaluate(model, tasks, batches, device, precision, progress, writers, require_labels=False)
            for name, metric in metrics.items():
                metric.merge(part[name])
            model.load_state_dict({**model.state_dict(), **saved})
    finally:
        model.load_state_dict({**model.state_dict(), **saved})
    return metrics


def _loader(dataset: Any, group: Sequence[int], transform: Any, batch_size: int, rank: int, world: int) -> DataLoader:
    """This rank's share of the evaluation images ``group``, in order."""
    target = IndexSubset(dataset, group)
    return DataLoader(
        AugmentedDataset(target, transform), batch_size=batch_size, sampler=ShardSampler(len(target), rank, world), collate_fn=collate
    )


def _groups(dataset: Any, what: str) -> list[list[int]]:
    source = getattr(dataset, "groups", None) or getattr(getattr(dataset, "dataset", None), "groups", None)
    if source is None:
        raise ConfigError(f"eval.recalibrate_bn needs a dataset with groups (e.g. decathlon's domains); the {what} split has none")
    return [list(group) for group in source() if len(group)]


def _task_of(dataset: Any, group: Sequence[int]) -> str:
    labelled = dataset.sample(group[0]).get("meta", {}).get("labelled") or []
    if len(labelled) != 1:
        raise ConfigError(f"eval.recalibrate_bn: a group's samples must be labelled for one task each, found {labelled}")
    return str(labelled[0])
