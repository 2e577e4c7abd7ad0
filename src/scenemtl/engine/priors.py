"""Training-set priors of each task: the trivial baseline, and where output heads start."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from scenemtl.data import DenseDataset
from scenemtl.engine.logging import progress
from scenemtl.tasks import Task


def estimate_priors(
    dataset: DenseDataset, tasks: Mapping[str, Task], max_samples: int = 256, show_progress: bool = True
) -> dict[str, torch.Tensor]:
    """Each task's ``output_prior`` from up to ``max_samples`` evenly spaced, un-augmented training samples."""
    count = min(len(dataset), max_samples)
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int) if count else []
    samples = [dataset.sample(int(i)) for i in progress(indices, desc="priors", leave=False, disable=not show_progress)]
    return {name: task.output_prior(s[name][None] for s in samples) for name, task in tasks.items()}
