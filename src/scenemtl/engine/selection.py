"""Model selection for the trainer (``train.selection``): keep the checkpoint that scores best on
selection data that is never the reported split.

The selection data is a dataset split other than the reported one, or ``holdout`` training images
drawn with their own seed and removed from training (their ids go to ``<run>/selection_ids.json``).
``SelectionMixin`` holds the trainer's selection methods (it reads the trainer's state: config,
model, loaders, run folder); the training loop itself is in ``trainer.py``.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from scenemtl.config import Config
from scenemtl.data import DATASETS, DenseDataset
from scenemtl.engine import distributed
from scenemtl.engine.checkpoint import BEST_DIR, MODEL_FILE, load_weights, read_meta, save_checkpoint
from scenemtl.engine.evaluate import evaluate, format_report, results_report, write_json
from scenemtl.errors import CheckpointError, ConfigError, did_you_mean
from scenemtl.tasks import Task

SELECTION_IDS_FILE = "selection_ids.json"


def check_selection(config: Config, tasks: dict[str, Task]) -> bool | None:
    """Check ``train.selection`` against the rest of the config before any data is read.

    Returns whether higher selection scores are better (None without ``train.selection``).
    The selection data must never be the reported split (``data.val_split``) nor the training
    split; the metric must be ``delta_m`` with a ``reference:``, or one a task reports.
    """
    selection, data = config.train.selection, config.data
    if selection is None:
        return None
    if selection.split is not None:
        if selection.split == data.val_split:
            raise ConfigError(
                f"train.selection.split is '{selection.split}', the same split as data.val_split, which the final "
                "report is computed on: the checkpoint would be chosen on the images it is scored on. Name another "
                f"split of dataset '{data.name}' in train.selection.split, or use train.selection.holdout: N "
                "(training images set aside) instead of a split"
            )
        if selection.split == data.train_split:
            raise ConfigError(
                f"train.selection.split is '{selection.split}', the same split as data.train_split: the model "
                "trains on those images. Use train.selection.holdout: N instead (N training images set aside)"
            )
        splits = DATASETS.get(data.name).splits
        if selection.split not in splits:
            raise ConfigError(
                f"train.selection.split: dataset '{data.name}' has no split '{selection.split}'.{did_you_mean(selection.split, splits)}"
            )
    if selection.metric == "delta_m":
        if config.reference is None:
            raise ConfigError(
                "train.selection.metric is 'delta_m', which needs single-task reference numbers: set 'reference:' "
                "(a results file or task → metric → value), or select on one task's metric, e.g. semseg.miou"
            )
        return True
    task, name = selection.metric.split(".", 1)
    if task not in tasks:
        raise ConfigError(
            f"train.selection.metric is '{selection.metric}' but this experiment has no task '{task}'.{did_you_mean(task, tasks)}"
        )
    directions = tasks[task].metric().directions
    if name not in directions:
        raise ConfigError(
            f"train.selection.metric is '{selection.metric}' but task '{task}' reports no metric '{name}'."
            f"{did_you_mean(name, directions)} Write it as {task}.<metric>, or delta_m."
        )
    return bool(directions[name])


class IndexSubset(DenseDataset):
    """Some samples of a dataset, in the given order (the training images left after a holdout)."""

    def __init__(self, dataset: DenseDataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.info, self.splits = dataset.info, dataset.splits
        self.root, self.split, self.tasks = dataset.root, dataset.split, list(dataset.tasks)
        self.variant, self.notes = getattr(dataset, "variant", dataset.info.name), getattr(dataset, "notes", [])

    def __len__(self) -> int:
        return len(self.indices)

    def sample_id(self, index: int) -> str:
        """The wrapped dataset's id."""
        return self.dataset.sample_id(self.indices[index])

    def sample(self, index: int) -> dict:
        """The wrapped dataset's sample."""
        return self.dataset.sample(self.indices[index])


class SelectionMixin:
    """The trainer's model-selection methods (``Trainer`` inherits them)."""

    # attributes the trainer sets (declared for readers and type checkers)
    config: Config
    selection: Any
    best_step: int | None
    best_score: float | None
    higher_is_better: bool | None

    def selection_source(self) -> str:
        """The selection data in words (report headers, messages)."""
        selection = self.selection
        if selection is None:
            return "none"
        if selection.split is not None:
            return f"the split '{selection.split}'"
        return (
            f"{selection.holdout} images held out of the training split '{self.config.data.train_split}' "
            f"by seed {selection.seed}, listed in {SELECTION_IDS_FILE}"
        )

    def _selection_data(self) -> dict[str, Any]:
        selection = self.selection
        if selection.split is not None:
            return {"split": selection.split}
        return {
            "holdout": selection.holdout,
            "from_split": self.config.data.train_split,
            "seed": selection.seed,
            "ids_file": SELECTION_IDS_FILE,
        }

    def _selection_meta(self) -> dict[str, Any]:
        """What chose the best checkpoint: stored in ``best/``'s metadata and in the reports."""
        return {
            "metric": self.selection.metric,
            "higher_is_better": self.higher_is_better,
            "score": self.best_score,
            "step": self.best_step,
            "data": self._selection_data(),
        }

    def _hold_out(self, dataset: DenseDataset, resume: bool) -> tuple[DenseDataset, DenseDataset]:
        """Split off ``train.selection.holdout`` training images by a seeded draw; record their ids."""
        selection, size = self.selection, len(dataset)
        if selection.holdout >= size:
            raise ConfigError(
                f"train.selection.holdout is {selection.holdout} but the training split '{dataset.split}' has "
                f"{size} images: hold out fewer (the rest are trained on), or select on a split (train.selection.split)"
            )
        order = np.random.default_rng(selection.seed).permutation(size)
        held, kept = sorted(order[: selection.holdout].tolist()), sorted(order[selection.holdout :].tolist())
        record = {
            "split": dataset.split,
            "size": size,
            "seed": selection.seed,
            "holdout": selection.holdout,
            "indices": held,
            "ids": [dataset.sample_id(i) for i in held],
        }
        path = self.run_dir / SELECTION_IDS_FILE
        if resume and path.is_file():
            stored = json.loads(path.read_text())
            if {k: stored.get(k) for k in record} != record:
                raise ConfigError(
                    f"train.selection: {path} lists other held-out images than train.selection.holdout/seed now draw "
                    f"from the {size} images of '{dataset.split}' (the resumed run trained on the rest): restore the "
                    "run's train.selection and data settings, or start a new run under another name"
                )
        elif self.dist.is_main:
            write_json(path, record)
        return IndexSubset(dataset, kept), IndexSubset(dataset, held)

    def _score(self, report: dict[str, Any]) -> float | None:
        """The report's selection score (None when missing or not finite: never the best)."""
        if self.selection.metric == "delta_m":
            value = report.get("delta_m")
        else:
            task, name = self.selection.metric.split(".", 1)
            value = report["metrics"].get(task, {}).get(name)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def select(self) -> dict[str, Any]:
        """Score the selection data now; keep the weights in ``checkpoints/best/`` when they beat the best so far.

        Logged as kind ``select`` (apart from ``val``). Ties keep the earlier step.
        """
        metrics = evaluate(self.model, self.tasks, self.select_loader, self.device, self.config.train.precision, self.progress)
        report = results_report(
            metrics, self.reference, {"name": self.config.name, "step": self.step, "selection_data": self._selection_data()}
        )
        score = self._score(report)
        best = self.best_score
        if score is not None and (best is None or (score > best if self.higher_is_better else score < best)):
            self.best_step, self.best_score = self.step, score
            self._save_best(self.step)
        self.logger.log(
            "select",
            self.step,
            {
                "metric": self.selection.metric,
                "score": score,
                "best_step": self.best_step,
                "best_score": self.best_score,
                "metrics": report["metrics"],
                "delta_m": report["delta_m"],
            },
        )
        self.net.train()
        return report

    def _save_best(self, step: int) -> Path:
        """Write the model's weights as ``checkpoints/best`` (rank 0 writes; the others wait)."""
        folder = self.checkpoint_dir / BEST_DIR
        if self.dist.is_main:
            info = self.info
            save_checkpoint(
                self.checkpoint_dir,
                step,
                self.model,
                self.config,
                info.class_names,
                info.palettes,
                info.mean,
                info.std,
                None,
                name=BEST_DIR,
                selection=self._selection_meta(),
            )
        distributed.barrier(self.dist)
        return folder

    def _restore_selection(self, state: dict[str, Any], folder: Path) -> None:
        """Take the best-so-far from the resumed state and make ``checkpoints/best`` agree with it.

        A hard crash can leave a ``best/`` written after the checkpoint resumed from: it is
        replaced by the state's best step when that step's checkpoint still exists, and removed
        when the state has no best yet.
        """
        selection = self.selection
        if selection is None:
            return
        saved = state.get("selection")
        if saved is None:
            if selection.holdout is not None and state["step"]:
                raise ConfigError(
                    f"train.selection.holdout: the run in {self.run_dir} trained {state['step']} steps without a "
                    "holdout, on the images it would now set aside for selection. Start a new run (another name), or select "
                    "on a split (train.selection.split)"
                )
            saved = {"metric": selection.metric, "data": self._selection_data(), "best_step": None, "best_score": None}
        if saved["metric"] != selection.metric or saved["data"] != self._selection_data():
            raise ConfigError(
                f"train.selection changed since the run in {self.run_dir} started (it selected {saved['metric']} on "
                f"{saved['data']}): scores are not comparable. Restore train.selection, or start a new run"
            )
        self.best_step, self.best_score = saved["best_step"], saved["best_score"]
        best = self.checkpoint_dir / BEST_DIR
        on_disk = read_meta(best).step if (best / MODEL_FILE).is_file() else None
        if on_disk == self.best_step:
            return
        distributed.barrier(self.dist)  # every process has read best/ before it changes
        if self.best_step is None:
            if self.dist.is_main:
                shutil.rmtree(best, ignore_errors=True)  # written after the checkpoint being resumed
            distributed.barrier(self.dist)
            return
        source = self.checkpoint_dir / f"step_{self.best_step:07d}"
        if (source / MODEL_FILE).is_file():
            load_weights(self.model, source)  # the resumed weights are loaded after this
            self._save_best(self.best_step)
            return
        if on_disk is None:
            if self.dist.is_main:
                warnings.warn(
                    f"{best} is missing: the best selection score so far (step {self.best_step}) is "
                    "forgotten; selection goes on from the resumed step",
                    stacklevel=2,
                )
            self.best_step, self.best_score = None, None
            return
        raise CheckpointError(
            f"{best} holds step {on_disk}, written after the checkpoint {folder.name} being resumed, which "
            f"records step {self.best_step} as the best; those weights are no longer on disk. Delete {best} to "
            "resume with the best so far forgotten (selection then restarts from the resumed step)"
        )

    def _report_selected(self) -> dict[str, Any]:
        """The final reports, with the best weights: on ``data.val_split`` (the result) and on the selection data."""
        if self.best_step is None:
            if self.dist.is_main:
                warnings.warn(
                    f"train.selection: no finite {self.selection.metric} on the selection data at any "
                    "evaluation; the final weights are reported",
                    stacklevel=2,
                )
            return self.evaluate(final=True)
        best = self.checkpoint_dir / BEST_DIR
        meta = read_meta(best)
        if meta.step != self.best_step:
            raise CheckpointError(f"{best} holds step {meta.step} but the training state chose step {self.best_step}")
        load_weights(self.model, best)
        selection = self._selection_meta()
        arrow = "↑" if self.higher_is_better else "↓"
        chosen = (
            f"checkpoint `checkpoints/{BEST_DIR}` = step {self.best_step} of {self.step}, chosen by the best "
            f"{self.selection.metric} {arrow} ({self.best_score:.4g}) on the selection data: "
            f"{self.selection_source()}"
        )
        common = {
            "name": self.config.name,
            "step": self.best_step,
            "checkpoint": f"checkpoints/{BEST_DIR}",
            "trained_steps": self.step,
            "selection": selection,
        }
        precision = self.config.train.precision
        metrics = evaluate(self.model, self.tasks, self.val_loader, self.device, precision, self.progress)
        report = results_report(metrics, self.reference, {**common, "split": self.config.data.val_split, "weights": chosen})
        on_selection = results_report(
            evaluate(self.model, self.tasks, self.select_loader, self.device, precision, self.progress),
            self.reference,
            {
                **common,
                "split": self.selection.split or f"{self.config.data.train_split} (held out)",
                "selection_data": self._selection_data(),
                "note": "selection data: these images chose the checkpoint; not a test result",
            },
        )
        self.logger.log(
            "val_selected", self.step, {"weights_step": self.best_step, "metrics": report["metrics"], "delta_m": report["delta_m"]}
        )
        if self.logger.enabled:
            name = self.config.name
            write_json(self.run_dir / "results.json", report)
            (self.run_dir / "results.md").write_text(
                f"# {name}: split '{self.config.data.val_split}', selected weights (step {self.best_step})\n\n"
                f"Weights: {chosen}. The reported split never took part in the choice.\n\n" + format_report(report)
            )
            write_json(self.run_dir / "results_selection.json", on_selection)
            (self.run_dir / "results_selection.md").write_text(
                f"# {name}: SELECTION DATA, not a test result (step {self.best_step})\n\n"
                f"These numbers are on the selection data ({self.selection_source()}), the images that chose "
                f"the checkpoint, so they flatter it. The result is results.md (split "
                f"'{self.config.data.val_split}').\n\n" + format_report(on_selection)
            )
        self.net.train()
        return report
