"""Training-set priors of each task: the trivial baseline, and where output heads start."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from scenemtl.data import DenseDataset
from scenemtl.engine.logging import progress
from scenemtl.tasks import Task


def estimate_priors(
    dataset: DenseDataset,
    tasks: Mapping[str, Task],
    max_samples: int = 256,
    show_progress: bool = True,
    pixel_stride: int = 1,
) -> dict[str, torch.Tensor]:
    """Each task's ``output_prior`` from up to ``max_samples`` evenly spaced, un-augmented training samples.

    Each sample is read once; with ``pixel_stride`` > 1 only every n-th pixel of each target is
    kept (the statistics barely change, and memory stays small on large images).
    """
    count = min(len(dataset), max_samples)
    indices = [int(i) for i in np.linspace(0, len(dataset) - 1, count).round()] if count else []
    maps = [name for name, task in tasks.items() if task.is_map]  # an instance task's head starts its own way
    targets: dict[str, list[torch.Tensor]] = {name: [] for name in maps}
    for i in progress(indices, desc="priors", leave=False, disable=not show_progress):
        sample = dataset.sample(i)
        for name in maps:
            targets[name].append(sample[name][None][..., ::pixel_stride, ::pixel_stride].clone())
    return {name: tasks[name].output_prior(targets[name]) for name in maps}
