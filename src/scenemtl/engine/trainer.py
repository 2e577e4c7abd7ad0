"""The training loop: config → data → model → task losses → balancer → optimiser, with exact resume."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from scenemtl.balancing import build_balancer
from scenemtl.config import Config
from scenemtl.data import DenseDataset
from scenemtl.engine import builder
from scenemtl.engine.checkpoint import (
    compare_to_config,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    read_meta,
    save_checkpoint,
)
from scenemtl.engine.evaluate import autocast, evaluate, format_table, load_reference, move, results_report, write_json
from scenemtl.engine.logging import RunLogger, progress as progress_bar
from scenemtl.engine.optim import build_optimizer, build_scheduler
from scenemtl.engine.priors import estimate_priors
from scenemtl.errors import CheckpointError, DataError, ScenemtlError
from scenemtl.models import ModelOutput, build_model


class Trainer:
    """Trains one experiment; ``fit()`` runs to ``train.steps``, evaluates and checkpoints.

    Everything random is seeded from ``config.seed``: model initialisation, the per-epoch data
    order and each sample's augmentation (see ``EpochSampler``). A checkpoint stores the
    optimiser, scheduler, balancer and RNG states and the position inside the epoch, so that on
    CPU a resumed run reaches the same weights as an uninterrupted one. SIGINT and SIGTERM
    finish the current step, write a checkpoint and return.
    """

    def __init__(
        self,
        config: Config,
        resume: bool = False,
        progress: bool = True,
        log: bool = True,
        datasets: tuple[DenseDataset, DenseDataset] | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.run_dir = config.run_dir
        self.checkpoint_dir = self.run_dir / "checkpoints"
        existing = list_checkpoints(self.checkpoint_dir)
        if existing and not resume:
            raise ScenemtlError(
                f"{self.run_dir} already holds checkpoints (latest {existing[-1].name}); pass --resume to continue "
                "that run, or choose another name / out_dir so nothing is overwritten"
            )
        if resume and not existing:
            raise CheckpointError(f"--resume: no checkpoint to resume in {self.checkpoint_dir}")
        if resume:
            compare_to_config(read_meta(existing[-1]), config, existing[-1])
        self.reference = load_reference(config.reference)
        self.device = builder.select_device(config.train.device)
        torch.manual_seed(config.seed)
        self.info = builder.dataset_info(config)
        self.tasks = builder.build_tasks(config, self.info)
        if datasets is None:
            datasets = (builder.build_dataset(config, config.data.train_split), builder.build_dataset(config, config.data.val_split))
        self.train_set, self.val_set = datasets
        self.model = build_model(config.model, self.tasks).to(self.device)
        weights = {name: cfg.weight for name, cfg in config.tasks.items()}
        self.balancer = build_balancer(config.balancer.name, list(self.tasks), weights, config.balancer.options)
        self.balancer.to(self.device)
        self.optimizer = build_optimizer(config.train, list(self.model.parameters()) + list(self.balancer.parameters()))
        self.scheduler = build_scheduler(config.train, self.optimizer)
        train_transform = builder.build_transform(config, self.tasks, self.info, train=True)
        self.loader, self.sampler = builder.train_loader(config, self.train_set, train_transform)
        eval_transform = builder.build_transform(config, self.tasks, self.info, train=False)
        self.val_loader = builder.eval_loader(config, self.val_set, eval_transform)
        builder.check_eval_pad(config, self.val_set)
        self.step, self.epoch, self.position = 0, 0, 0
        self.epoch_loss: dict[str, list[float]] = {}  # task → [sum, count] over the current epoch
        self._checked_labels = False
        self._stop_signal: str | None = None
        if resume:
            self._restore(existing[-1])
        elif config.train.init_output_bias:
            priors = estimate_priors(self.train_set, self.tasks, show_progress=progress, pixel_stride=4)
            self.model.init_output_bias({name: prior.to(self.device) for name, prior in priors.items()})
        self.logger = RunLogger(self.run_dir, enabled=log, resume_step=self.step if resume else None)
        if log and not (resume and (self.run_dir / "config.yaml").exists()):
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    # ------------------------------------------------------------------------------------
    def task_losses(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        """Each task's loss on the final prediction plus every deep-supervision stage."""
        losses = {}
        for name, task in self.tasks.items():
            target = batch[name]
            loss = task.loss(output.final[name], target)
            for stage in output.aux.values():
                if name in stage:
                    logits = stage[name]
                    if logits.shape[-2:] != target.shape[-2:]:
                        logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
                    loss = loss + task.loss(logits, target)
            losses[name] = loss
        finite = torch.isfinite(torch.stack([loss.detach() for loss in losses.values()]))
        if not bool(finite.all()):  # one device sync for all tasks
            name = list(losses)[int((~finite).nonzero()[0])]
            raise ScenemtlError(
                f"the loss of task '{name}' is {losses[name].item()} at step {self.step + 1}; lower train.lr, set "
                "train.grad_clip, or check that task's labels"
            )
        return losses

    def _check_labels(self, batch: dict) -> None:
        """Once: class ids of every classification target lie in 0..C−1 or are 255 (a bad id would crash CUDA)."""
        for name, task in self.tasks.items():
            if task.is_classification:
                target = batch[name]
                bad = (target != 255) & ((target < 0) | (target >= task.out_channels))
                if bool(bad.any()):
                    ids = sorted(set(target[bad].unique().tolist()))[:5]
                    raise DataError(
                        f"task '{name}' has class ids {ids} outside 0..{task.out_channels - 1} (255 = ignore) in "
                        f"samples {[m.get('id') for m in batch.get('meta', [])]}; check the dataset's label encoding"
                    )
        self._checked_labels = True

    def train_step(self, batch: dict) -> dict[str, Any]:
        """One optimiser step; returns the step's losses and weights."""
        if not self._checked_labels:
            self._check_labels(batch)
        batch = move(batch, self.device)
        with autocast(self.device, self.config.train.precision):
            output = self.model(batch["image"])
        losses = self.task_losses(output, batch)
        weights = self.balancer.backward(losses, self.model.shared_parameters())
        if self.config.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": {k: float(v.detach()) for k, v in losses.items()}, "weight": weights}

    def fit(self, stop_at: int | None = None) -> dict[str, Any] | None:
        """Train to ``train.steps``, evaluating and checkpointing as configured; return the final report.

        With ``stop_at``, stop after that step as an interrupted run would: write a checkpoint
        and return None (a later ``--resume`` continues on the same schedule). SIGINT/SIGTERM do
        the same after the step in progress.
        """
        cfg = self.config.train
        end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        self.model.train()
        bar = progress_bar(total=cfg.steps, initial=self.step, desc=f"train {self.config.name}", disable=not self.progress)
        window: dict[str, list[float]] = {}
        tick, samples = time.perf_counter(), 0
        with self._graceful_stop(), bar:
            while self.step < end and self._stop_signal is None:
                self.sampler.start(self.epoch, self.position)
                for batch in self.loader:
                    stats = self.train_step(batch)
                    self.step += 1
                    self.position += batch["image"].shape[0]
                    samples += batch["image"].shape[0]
                    for name, value in stats["loss"].items():
                        window.setdefault(name, []).append(value)
                        total = self.epoch_loss.setdefault(name, [0.0, 0])
                        total[0], total[1] = total[0] + value, total[1] + 1
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        elapsed = time.perf_counter() - tick
                        record = {
                            "epoch": self.epoch,
                            "lr": self.scheduler.get_last_lr()[0],
                            "loss": {k: sum(v) / len(v) for k, v in window.items()},
                            "weight": stats["weight"],
                            "samples_per_s": samples / max(elapsed, 1e-9),
                        }
                        self.logger.log("train", self.step, record)
                        bar.set_postfix(loss=f"{sum(record['loss'].values()):.3f}")
                        window, tick, samples = {}, time.perf_counter(), 0
                    if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                        self.evaluate()
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                        self.save()
                    if self.step >= end or self._stop_signal is not None:
                        break
                else:
                    self.balancer.end_epoch({k: s / max(n, 1) for k, (s, n) in self.epoch_loss.items()})
                    self.epoch_loss = {}
                    self.epoch, self.position = self.epoch + 1, 0
        folder = self.save()
        if self.step < cfg.steps:
            self.logger.close()
            if self._stop_signal is not None:
                print(f"stopped by {self._stop_signal} after step {self.step}; checkpoint {folder}. "
                      "Continue with the same command and --resume.")
            return None
        report = self.evaluate(final=True)
        self.logger.close()
        return report

    @contextmanager
    def _graceful_stop(self):
        """Turn SIGINT/SIGTERM into 'stop after this step' while training (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------------------------
    def evaluate(self, final: bool = False) -> dict[str, Any]:
        """Evaluate on the validation split; the final evaluation is written to ``results.json``."""
        metrics = evaluate(self.model, self.tasks, self.val_loader, self.device, self.config.train.precision, self.progress)
        report = results_report(
            metrics, self.reference, {"name": self.config.name, "step": self.step, "split": self.config.data.val_split}
        )
        self.logger.log("val", self.step, {"metrics": report["metrics"], "delta_m": report["delta_m"]})
        if final and self.logger.enabled:
            write_json(self.run_dir / "results.json", report)
            (self.run_dir / "results.md").write_text(format_table(report) + "\n")
        return report

    def state(self) -> dict[str, Any]:
        """Everything but the weights needed to continue exactly."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "epoch_loss": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.epoch_loss.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def save(self) -> Path:
        """Write a checkpoint of the current step."""
        return save_checkpoint(
            self.checkpoint_dir,
            self.step,
            self.model,
            self.config,
            self.info.class_names,
            self.info.palettes,
            self.info.mean,
            self.info.std,
            self.state(),
            keep=self.config.train.keep_checkpoints,
        )

    def _restore(self, folder: Path) -> None:
        load_weights(self.model, folder)
        state = load_trainer_state(folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.epoch_loss = {k: [float(v[0]), int(v[1])] for k, v in state.get("epoch_loss", {}).items()}
