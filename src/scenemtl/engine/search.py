"""ATRC's architecture search (``scenemtl search``): train ``atrc_search``, write the genotype.

As brdav/atrc's ``src/main_search.py`` and ``src/model/search_pl_model.py``: the network's
weights train with the experiment's optimiser and schedule (ATRC: SGD, poly, gradient clipping
10), the choice logits of every (target, source) pair with Adam (``model.options.arch_lr``,
5e-4, no weight decay), both from the same loss in the same step; the loss adds
``entropy_weight × mean entropy`` of the pairs' softmaxes; before each step the Gumbel
temperature and the entropy weight move linearly (1.0 → 0.05 and −0.02 → 0.06 over
``train.steps``). Evaluation uses the arg-max architecture. The genotype (the arg-max of every
pair, in the format of ATRC's released ``genotypes/*.json``) is written to
``<run>/genotype.json`` at every checkpoint and at the end; train ``atrc`` with it through
``model.options.genotype``.

Everything else is the ordinary training loop (``Trainer``): data, task losses, balancer,
mixed precision (fp32 or bf16), several processes, checkpoints and exact ``--resume`` (the
choice logits' optimiser state is saved with the rest). The choice logits stay out of the
weights' optimiser and out of DDP (their gradients are averaged over processes here);
``train.grad_clip`` clips their gradients together with the weights'.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from scenemtl.config import Config
from scenemtl.engine import distributed
from scenemtl.engine.checkpoint import load_trainer_state
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError
from scenemtl.models.atrc import genotype_json

GENOTYPE_FILE = "genotype.json"


class SearchTrainer(Trainer):
    """The training loop with ATRC's architecture step added (see the module docstring)."""

    def __init__(self, config: Config, resume: bool = False, progress: bool = True, log: bool = True,
                 datasets=None) -> None:
        if config.model.arch != "atrc_search":
            raise ConfigError(
                f"scenemtl search trains ATRC's search space: model.arch must be 'atrc_search', got '{config.model.arch}'"
            )
        if config.train.precision == "fp16":
            raise ConfigError("scenemtl search runs in train.precision fp32 or bf16 (not fp16)")
        if config.train.compile:
            raise ConfigError("scenemtl search does not support train.compile (the choices change the graph); set it to false")
        super().__init__(config, resume=resume, progress=progress, log=log, datasets=datasets)
        # the logits were kept out of the weights' optimiser and DDP; from now on they take gradients
        for p in self.arch_parameters:
            p.requires_grad_(True)
        self._parameters = self._parameters + self.arch_parameters

    def _build_model(self) -> torch.nn.Module:
        model = super()._build_model()
        self.search_model = model
        self.arch_parameters = list(model.arch_parameters())
        for p in self.arch_parameters:
            p.requires_grad_(False)
        self.arch_optimizer = torch.optim.Adam(self.arch_parameters, lr=model.arch_lr, weight_decay=0.0)
        return model

    def train_step(self, micro_batches: list[dict]) -> dict[str, Any]:
        """One step of weights and choice logits (ATRC: both optimisers step on the same loss)."""
        model = self.search_model
        model.set_search_progress(self.step, self.config.train.steps)
        for p in self.arch_parameters:
            p.grad = None
        # the entropy term depends on the logits only: its gradient goes in first, the task
        # losses' gradients accumulate onto it in the step (and gradient clipping sees both)
        regulariser = model.search_loss()
        regulariser.backward()
        stats = super().train_step(micro_batches)
        if not stats["skipped"]:
            distributed.all_reduce_grads(self.dist, self.arch_parameters)
            self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)
        if not stats["skipped"] and ((self.step + 1) % self.config.train.log_every == 0
                                     or self.step + 1 == self.config.train.steps):
            self.logger.log("search", self.step + 1, {
                "temperature": model.temperature, "entropy_weight": model.entropy_weight,
                "entropy": float(model.entropy().detach()), "frozen_pairs": model.frozen(),
            })
        return stats

    def state(self) -> dict[str, Any]:
        """The training state plus the choice logits' optimiser."""
        state = super().state()
        state["arch_optimizer"] = self.arch_optimizer.state_dict()
        return state

    def _restore(self, folder: Path) -> None:
        super()._restore(folder)
        state = load_trainer_state(folder)
        if "arch_optimizer" in state:
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])

    @property
    def genotype_path(self) -> Path:
        """Where the run's genotype is written."""
        return self.run_dir / GENOTYPE_FILE

    def genotype(self) -> dict[str, dict[str, int]]:
        """The current arg-max choice of every pair."""
        return self.search_model.genotype()

    def write_genotype(self, path: Path | None = None) -> Path:
        """Write the genotype in ATRC's released format (atomically); returns the path."""
        path = Path(path) if path is not None else self.genotype_path
        if self.dist.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(json.dumps(genotype_json(self.genotype(), self.step), indent=4) + "\n")
            os.replace(temporary, path)
        return path

    def save(self) -> Path:
        """A checkpoint, and the genotype at this step next to it."""
        folder = super().save()
        self.write_genotype()
        return folder


def run_search(config: Config, resume: bool = False, progress: bool = True, out: str | Path | None = None,
               log: bool = True) -> tuple[SearchTrainer, dict[str, Any] | None, Path]:
    """Search, then write the genotype (to ``out`` too when given); returns the trainer, final report and genotype path."""
    trainer = SearchTrainer(config, resume=resume, progress=progress, log=log)
    report = trainer.fit()
    path = trainer.write_genotype()
    if out is not None:
        path = trainer.write_genotype(Path(out))
    return trainer, report, path
