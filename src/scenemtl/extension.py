"""Training extensions: parameters and objectives a model (or a setting) adds to the training loop.

The engine knows no architecture or setting by name. A model that trains more than its task losses
(ATRC's architecture search: choice logits with their own optimiser, an entropy regulariser,
schedules, a genotype file) returns a ``TrainingExtension`` from
``MultiTaskModel.training_extension()``; a training setting (self-supervised depth from video,
domain adaptation) is an **objective**: a ``TrainingExtension`` registered with
``register_objective(name)`` and named in the config's ``objectives`` list, built by
``build_objectives`` with the run's config, tasks, model and device. The trainer calls their hooks:

* ``check(config)`` once, before anything is built that the extension cannot run with;
* ``parameters()``: its own parameters, kept out of the weights' optimiser and of DDP (the
  engine averages their gradients over processes itself) and clipped with the weights';
* ``before_step(step, total)``: set schedules; may return a regulariser whose gradient goes in
  before the task losses' (so gradient clipping sees both);
* ``step()`` after a step that was not skipped, ``zero_grad()`` after every step;
* ``log_values()`` every ``train.log_every`` steps, logged under ``name``;
* ``state_dict()``/``load_state_dict()`` saved with the training state (exact resume);
* ``write_artifacts(run_dir, step, out=None)`` at every checkpoint and at the end (rank 0);
* ``summary(run_dir)``: the lines ``scenemtl search`` prints at the end;
* ``losses(output, batch, step)`` per micro-batch: the loss of every task in ``replaces`` (the
  tasks whose loss the extension computes instead of the task's own, e.g. self-supervised depth);
  they enter the balancer as those tasks' losses;
* ``extra_loss(net, output, batch, step)`` per micro-batch, after the balancer's backward: a term
  back-propagated into the weights and the extension's parameters outside the balancer (e.g. an
  adversarial term on another domain's images), or None.

An objective's parameters are clipped together with the model's (``train.grad_clip``), their
gradients averaged over processes before that, and its ``step`` runs after the weights' step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from scenemtl.registry import Registry

#: training settings that add to the task losses (``config.objectives``)
OBJECTIVES: Registry = Registry("objective")
register_objective = OBJECTIVES.register


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

    #: tasks whose loss ``losses`` computes in place of the task's own
    replaces: tuple[str, ...] = ()

    def losses(self, output: Any, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """The losses of the tasks in ``replaces`` on one micro-batch (``output``: the model's ``ModelOutput``)."""
        return {}

    def extra_loss(self, net: nn.Module, output: Any, batch: dict, step: int) -> torch.Tensor | None:
        """A term to back-propagate after the balancer's backward on this micro-batch, or None."""
        return None


def build_objectives(config: Any, tasks: dict, model: nn.Module, device: torch.device) -> list[TrainingExtension]:
    """The objectives ``config.objectives`` names, each built by its factory with its checked options."""
    from scenemtl.registry import check_options

    built = []
    for index, entry in enumerate(config.objectives):
        factory = OBJECTIVES.get(entry.name)
        key = f"objectives[{index}].options"
        options = check_options(factory, entry.options, key, ("config", "tasks", "model", "device"), owner=entry.name)
        built.append(factory(config=config, tasks=tasks, model=model, device=device, **options))
    return built
