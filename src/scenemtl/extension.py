"""Training extensions: parameters and objectives a model (or a setting) adds to the training loop.

The engine knows no architecture by name. A model that trains more than its task losses (ATRC's
architecture search: choice logits with their own optimiser, an entropy regulariser, schedules,
a genotype file) returns a ``TrainingExtension`` from ``MultiTaskModel.training_extension()``,
and the trainer calls its hooks:

* ``check(config)`` once, before anything is built that the extension cannot run with;
* ``parameters()``: its own parameters, kept out of the weights' optimiser and of DDP (the
  engine averages their gradients over processes itself) and clipped with the weights';
* ``before_step(step, total)``: set schedules; may return a regulariser whose gradient goes in
  before the task losses' (so gradient clipping sees both);
* ``step()`` after a step that was not skipped, ``zero_grad()`` after every step;
* ``log_values()`` every ``train.log_every`` steps, logged under ``name``;
* ``state_dict()``/``load_state_dict()`` saved with the training state (exact resume);
* ``write_artifacts(run_dir, step, out=None)`` at every checkpoint and at the end (rank 0);
* ``summary(run_dir)``: the lines ``scenemtl search`` prints at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class TrainingExtension:
    """The hooks (all optional but ``parameters``); see the module docstring."""

    #: the log kind of ``log_values`` and the word the CLI uses for what the extension does
    name: str = "extension"

    def check(self, config: Any) -> None:
        """Raise a ConfigError for settings the extension cannot train with."""

    def parameters(self) -> list[nn.Parameter]:
        """The extension's own parameters (not in the weights' optimiser, not in DDP)."""
        raise NotImplementedError

    def before_step(self, step: int, total: int) -> torch.Tensor | None:
        """Called before step ``step`` (0-based) of ``total``; a regulariser to back-propagate, or None."""
        return None

    def step(self) -> None:
        """Update the extension's parameters (after a step that was not skipped)."""

    def zero_grad(self) -> None:
        """Clear the gradients of ``parameters()``."""
        for p in self.parameters():
            p.grad = None

    def log_values(self) -> dict[str, Any]:
        """Scalars to log every ``train.log_every`` steps."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What exact resume needs beyond the model's weights."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""

    def write_artifacts(self, run_dir: Path, step: int, out: Path | None = None) -> list[Path]:
        """Write the extension's results (e.g. a genotype) into ``run_dir`` (and to ``out``); the paths written."""
        return []

    def summary(self, run_dir: Path) -> list[str]:
        """Lines for the command line at the end of training."""
        return []
