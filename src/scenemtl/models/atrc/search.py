"""ATRC's architecture search: the search-space model and the training extension that runs ``scenemtl search``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.extension import TrainingExtension
from scenemtl.models.atrc.context import ContextChoice
from scenemtl.models.atrc.genotype import Genotype, format_genotype, genotype_json
from scenemtl.models.atrc.model import RelationalContextNet
from scenemtl.tasks import Task


class ATRCSearch(RelationalContextNet):
    """ATRC's search space: every pair mixes all its candidate contexts (see the module docstring).

    ``set_search_progress(step, total)`` sets the Gumbel temperature and the entropy weight of
    ``search_loss`` on their linear schedules; ``scenemtl search`` calls it before every step.
    """

    needs_unused_parameters = True  # frozen choices: their logits and unchosen blocks get no gradient

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        temperature: Sequence[float],
        entropy_weight: Sequence[float],
        arch_lr: float,
        **options: Any,
    ) -> None:
        super().__init__(config, tasks, search=True, genotype=None, **options)
        self.temperature_schedule = _pair(temperature, "temperature", positive=True)
        self.entropy_schedule = _pair(entropy_weight, "entropy_weight")
        if not arch_lr > 0:
            raise ConfigError(f"model.options.arch_lr must be > 0, got {arch_lr}")
        self.arch_lr = float(arch_lr)
        self.entropy_weight = self.entropy_schedule[0]
        self.context.temperature = self.temperature_schedule[0]

    @property
    def temperature(self) -> float:
        """The current Gumbel-softmax temperature."""
        return self.context.temperature

    def set_search_progress(self, step: int, total: int) -> None:
        """Temperature and entropy weight at ``step`` (0-based, before it is taken) of ``total``."""
        left = 1.0 - step / max(total, 1)
        (t0, t1), (e0, e1) = self.temperature_schedule, self.entropy_schedule
        self.context.temperature = left * (t0 - t1) + t1
        self.entropy_weight = left * (e0 - e1) + e1

    def choices(self) -> dict[str, dict[str, ContextChoice]]:
        """The ``ContextChoice`` of every (target, source) pair."""
        return {t: dict(row.items()) for t, row in self.context.choices.items()}

    def arch_parameters(self) -> list[nn.Parameter]:
        """The choice logits (ATRC trains them with their own optimiser)."""
        return [c.arch_param for row in self.choices().values() for c in row.values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def entropy(self) -> torch.Tensor:
        """Mean over pairs of the entropy of the softmax of their logits."""
        terms = [-(c.arch_param.softmax(-1) * c.arch_param.log_softmax(-1)).sum() for row in self.choices().values() for c in row.values()]
        return torch.stack(terms).mean()

    def search_loss(self) -> torch.Tensor:
        """The entropy term added to the loss: ``entropy_weight × entropy`` (negative weight: explore)."""
        return self.entropy_weight * self.entropy()

    def genotype(self) -> Genotype:
        """The arg-max choice of every pair."""
        return {t: {s: c.choice() for s, c in row.items()} for t, row in self.choices().items()}

    def frozen(self) -> int:
        """How many pairs are frozen."""
        return sum(c.frozen for row in self.choices().values() for c in row.values())

    def training_extension(self) -> ArchitectureSearch:
        """ATRC's search step (one instance per model)."""
        if "_search" not in self.__dict__:
            self.__dict__["_search"] = ArchitectureSearch(self)  # not a submodule
        return self.__dict__["_search"]


GENOTYPE_FILE = "genotype.json"


class ArchitectureSearch(TrainingExtension):
    """ATRC's search as ``src/main_search.py`` and ``src/model/search_pl_model.py`` run it.

    The network's weights train with the experiment's optimiser and schedule (ATRC: SGD, poly,
    gradient clipping 10), the choice logits of every (target, source) pair with Adam
    (``model.options.arch_lr``, 5e-4, no weight decay), both from the same loss in the same step;
    the loss adds ``entropy_weight × mean entropy`` of the pairs' softmaxes; before each step the
    Gumbel temperature and the entropy weight move linearly (1.0 → 0.05 and −0.02 → 0.06 over
    ``train.steps``). Evaluation uses the arg-max architecture. The genotype (the arg-max of every
    pair, in the format of ATRC's released ``genotypes/*.json``) is written to
    ``<run>/genotype.json`` at every checkpoint and at the end; train ``atrc`` with it through
    ``model.options.genotype``. The choice logits' optimiser state is saved for ``--resume``.
    """

    name = "search"

    def __init__(self, model: ATRCSearch) -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=model.arch_lr, weight_decay=0.0)

    def check(self, config: Any) -> None:
        """fp16 and torch.compile are not supported (the choices change the graph)."""
        if config.train.precision == "fp16":
            raise ConfigError("ATRC's search runs in train.precision fp32 or bf16 (not fp16)")
        if config.train.compile:
            raise ConfigError("ATRC's search does not support train.compile (the choices change the graph); set it to false")

    def parameters(self) -> list[nn.Parameter]:
        """The choice logits."""
        return self.model.arch_parameters()

    def before_step(self, step: int, total: int) -> torch.Tensor:
        """Schedules at this step; the entropy term (it depends on the logits only)."""
        self.model.set_search_progress(step, total)
        return self.model.search_loss()

    def step(self) -> None:
        """Adam on the choice logits."""
        self.optimizer.step()

    def zero_grad(self) -> None:
        """Clear the choice logits' gradients."""
        self.optimizer.zero_grad(set_to_none=True)

    def log_values(self) -> dict[str, Any]:
        """Temperature, entropy weight and entropy, and how many pairs are frozen."""
        model = self.model
        return {
            "temperature": model.temperature,
            "entropy_weight": model.entropy_weight,
            "entropy": float(model.entropy().detach()),
            "frozen_pairs": model.frozen(),
        }

    def state_dict(self) -> dict[str, Any]:
        """The choice logits' optimiser."""
        return {"arch_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the choice logits' optimiser."""
        if "arch_optimizer" in state:
            self.optimizer.load_state_dict(state["arch_optimizer"])

    def write_artifacts(self, run_dir: Path, step: int, out: Path | None = None) -> list[Path]:
        """The genotype in ATRC's released format, atomically, to ``<run>/genotype.json`` (and ``out``)."""
        text = json.dumps(genotype_json(self.model.genotype(), step), indent=4) + "\n"
        paths = [run_dir / GENOTYPE_FILE] + ([Path(out)] if out is not None else [])
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)
        return paths

    def summary(self, run_dir: Path) -> list[str]:
        """The genotype table and how to train ATRC with it."""
        path = run_dir / GENOTYPE_FILE
        return [
            format_genotype(self.model.genotype()),
            f"genotype: {path}",
            f"train ATRC with it: --set model.arch=atrc --set model.options.genotype={path}",
        ]


def _pair(value: Sequence[float], name: str, positive: bool = False) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"model.options.{name} must be [start, end] (linear over the steps), got {value!r}") from None
    if positive and (start <= 0 or end <= 0):
        raise ConfigError(f"model.options.{name} must be positive, got {[start, end]}")
    return start, end
