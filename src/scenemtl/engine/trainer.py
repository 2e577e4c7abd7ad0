"""The training loop: config → data → model → task losses → balancer → optimiser, with exact resume.

One process per device: under torchrun each process trains on its share of every batch
(DistributedDataParallel, NCCL on GPUs, Gloo on CPUs); rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import resource
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel

from scenemtl.balancing import StepContext, build_balancer
from scenemtl.config import Config
from scenemtl.data import DenseDataset
from scenemtl.engine import builder, distributed
from scenemtl.engine.checkpoint import (
    compare_to_config,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    read_meta,
    save_checkpoint,
)
from scenemtl.engine.evaluate import autocast, evaluate, format_report, load_reference, move, results_report, write_json
from scenemtl.engine.logging import RunLogger, progress as progress_bar
from scenemtl.engine.optim import build_optimizer, build_scheduler
from scenemtl.engine.priors import estimate_priors
from scenemtl.engine.snapshots import prediction_panels
from scenemtl.errors import CheckpointError, ConfigError, DataError, ScenemtlError
from scenemtl.models import ModelOutput, build_model


class Trainer:
    """Trains one experiment; ``fit()`` runs to ``train.steps``, evaluates and checkpoints.

    Everything random is seeded from ``config.seed``: model initialisation, the per-epoch data
    order and each sample's augmentation (see ``EpochSampler``). A checkpoint stores the
    optimiser, scheduler, gradient scaler, balancer and RNG states and the position inside the
    epoch, so that on CPU a resumed run reaches the same weights as an uninterrupted one.
    SIGINT and SIGTERM finish the current step, write a checkpoint and return.
    """

    def __init__(
        self,
        config: Config,
        resume: bool = False,
        progress: bool = True,
        log: bool = True,
        datasets: tuple[DenseDataset, DenseDataset] | None = None,
    ) -> None:
        cfg = config.train
        self.config = config
        self.dist = distributed.setup(cfg.device)
        self.device = self.dist.device
        self.progress = progress and self.dist.is_main
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
        torch.manual_seed(config.seed)
        self.info = builder.dataset_info(config)
        self.tasks = builder.build_tasks(config, self.info)
        if datasets is None:
            datasets = (builder.build_dataset(config, config.data.train_split), builder.build_dataset(config, config.data.val_split))
        self.train_set, self.val_set = datasets
        self.train_set = builder.partial_labels(config, self.train_set, self.tasks, write=self.dist.is_main)
        self.partial = config.data.labels.setting != "full"
        self.model = self._build_model()
        weights = {name: task.weight for name, task in config.tasks.items()}
        self.balancer = build_balancer(config.balancer.name, list(self.tasks), weights, config.balancer.options)
        self.balancer.to(self.device)
        self.optimizer = build_optimizer(cfg, self.model.parameters(), self.balancer.optimizer_groups())
        self._shared = self.model.shared_parameters()
        if self.balancer.needs_features and hasattr(self.model, "cut_features"):
            self.model.cut_features = True
        self._parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        rank, world = self.dist.rank, self.dist.world_size
        train_transform = builder.build_transform(config, self.tasks, self.info, train=True)
        self.loader, self.sampler = builder.train_loader(config, self.train_set, train_transform, rank, world)
        eval_transform = builder.build_transform(config, self.tasks, self.info, train=False)
        self.val_loader = builder.eval_loader(config, self.val_set, eval_transform, rank, world)
        builder.check_eval_pad(config, self.val_set)
        self.step, self.epoch, self.position, self.skipped = 0, 0, 0, 0
        self.epoch_loss: dict[str, list[float]] = {}  # task → [sum, count] over the current epoch
        self._checked_labels = False
        self._stop_signal: str | None = None
        if resume:
            self._restore(existing[-1])
        elif cfg.init_output_bias:
            priors = estimate_priors(self.train_set, self.tasks, show_progress=self.progress, pixel_stride=4)
            self.model.init_output_bias({name: prior.to(self.device) for name, prior in priors.items()})
        self.net: torch.nn.Module = self.model
        if self.dist.distributed:
            self.net = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters or self.model.needs_unused_parameters,
            )
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.global_batch = config.data.batch_size * world * cfg.accumulation
        self.logger = RunLogger(
            self.run_dir, enabled=log and self.dist.is_main, resume_step=self.step if resume else None,
            wandb_project=cfg.wandb, config=config.to_dict(),
        )
        if self.logger.enabled and not (resume and (self.run_dir / "config.yaml").exists()):
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    def _build_model(self) -> torch.nn.Module:
        cfg = self.config.train
        model = build_model(self.config.model, self.tasks)
        if cfg.activation_checkpointing:
            model.set_activation_checkpointing(True)
        if cfg.sync_bn and self.dist.distributed:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm); set it to false on CPU")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if cfg.channels_last else model

    # ------------------------------------------------------------------------------------
    def task_losses(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        """Each task's loss on the final prediction plus every deep-supervision stage.

        With partial labels (``data.labels``) the loss is taken per sample over the samples that
        carry the task's label, each multiplied by (tasks / labelled tasks of that sample) when
        ``rescale`` is on, summed and divided by the batch size (DiffusionMTL's scheme); a batch
        without the task's label gives a zero loss with a zero gradient.
        """
        if self.partial:
            return self._partial_losses(output, batch)
        return {name: self._task_loss(name, task, output, batch[name]) for name, task in self.tasks.items()}

    @staticmethod
    def _task_loss(name: str, task, output: ModelOutput, target: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        pick = (lambda x: x) if rows is None else (lambda x: x[rows])  # noqa: E731
        loss = task.loss(pick(output.final[name]), target)
        for key, stage in output.aux.items():
            if name in stage:
                logits = pick(stage[name])
                if logits.shape[-2:] != target.shape[-2:]:
                    logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
                loss = loss + output.aux_weights.get(key, 1.0) * task.loss(logits, target)
        return loss

    def _partial_losses(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        labelled = [set(meta["labelled"]) for meta in batch["meta"]]
        size, count = len(labelled), len(self.tasks)
        losses = {}
        for name, task in self.tasks.items():
            loss = output.final[name].sum() * 0.0  # in the graph, so the head gets a (zero) gradient
            for b, available in enumerate(labelled):
                if name in available:
                    scale = count / len(available) if self.config.data.labels.rescale else 1.0
                    loss = loss + scale * self._task_loss(name, task, output, batch[name][b : b + 1], slice(b, b + 1))
            losses[name] = loss / size
        return losses

    def _non_finite(self, losses: dict[str, torch.Tensor]) -> str | None:
        """The first task whose loss is not finite on any process (all processes agree), or None."""
        finite = torch.isfinite(torch.stack([loss.detach().float() for loss in losses.values()]))
        if self.dist.distributed:
            flags = (~finite).float().to(self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            finite = flags == 0
        if bool(finite.all()):  # one device sync for all tasks
            return None
        return list(losses)[int((~finite).nonzero()[0])]

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

    def _context(self, count: int) -> StepContext:
        # fp16: the scaler's current factor (scaling a unit tensor also starts the scaler, as scale(loss) would)
        grad_scale = float(self.scaler.scale(torch.ones((), device=self.device))) if self.scaler.is_enabled() else 1.0
        return StepContext(
            shared=self._shared,
            parameters=self._parameters,
            scale=grad_scale / count,
            grad_scale=grad_scale,
            step=self.step + 1,
            seed=self.config.seed,
            device=self.device,
            all_reduce_mean=lambda tensor: distributed.all_reduce_mean(self.dist, tensor),
        )

    def _forward_losses(self, batch: dict) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
        image = batch["image"]
        if self.config.train.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.config.train.precision):
            output = self.net(image)
        return output, self.task_losses(output, batch)

    def train_step(self, micro_batches: list[dict]) -> dict[str, Any]:
        """One optimiser step over ``train.accumulation`` micro-batches; returns losses, weights, skipped.

        The balancer back-propagates each micro-batch's losses and completes the step's gradients
        in ``finish``. A balancer that synchronises gradients itself (gradient aggregation) runs
        every micro-batch outside DDP's hooks; the gradients it did not synchronise are then
        averaged here.
        """
        cfg = self.config.train
        if not self._checked_labels:
            self._check_labels(micro_batches[0])
        totals: dict[str, float] = {}
        count = len(micro_batches)
        ctx = self._context(count)
        manual_sync = self.balancer.synchronizes_gradients and self.dist.distributed
        try:
            for i, batch in enumerate(micro_batches):
                batch = move(batch, self.device)
                last = i == count - 1
                hooks_off = manual_sync or not last
                sync = self.net.no_sync() if (self.dist.distributed and hooks_off and hasattr(self.net, "no_sync")) else nullcontext()
                with sync:
                    output, losses = self._forward_losses(batch)
                    bad = self._non_finite(losses)
                    if bad is not None:
                        return self._bad_step(bad, losses[bad])
                    ctx.features, ctx.feature_sources = output.features, output.feature_sources
                    self.balancer.backward(losses, ctx)
                    ctx.features, ctx.feature_sources = (), ()
                for name, loss in losses.items():
                    totals[name] = totals.get(name, 0.0) + float(loss.detach()) / count
            weights = self.balancer.finish(ctx)
        except torch.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            self.balancer.discard()
            raise ScenemtlError(
                f"out of memory at step {self.step + 1} with data.batch_size={self.config.data.batch_size}: lower "
                "data.batch_size (raise train.accumulation to keep the global batch), or set train.precision=bf16 "
                "or train.activation_checkpointing=true"
            ) from None
        if self.dist.distributed:
            done = self.balancer.synchronized()
            todo = [p for p in self.balancer.parameters() if p.requires_grad and p not in done]
            if manual_sync:
                todo += [p for p in self._parameters if p not in done]
            distributed.all_reduce_grads(self.dist, todo)
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.balancer.after_step(lambda: self._recompute_losses(micro_batches))
        return {"loss": totals, "weight": weights, "skipped": False}

    @torch.no_grad()
    def _recompute_losses(self, batches: list[dict]) -> dict[str, torch.Tensor]:
        """The step's losses (mean over its micro-batches) under the updated parameters, for balancers that compare."""
        sums: dict[str, torch.Tensor] = {}
        for batch in batches:
            batch = move(batch, self.device)
            with (self.net.no_sync() if hasattr(self.net, "no_sync") else nullcontext()):
                _, losses = self._forward_losses(batch)
            for name, loss in losses.items():
                sums[name] = sums.get(name, 0) + loss.detach().float() / len(batches)
        return sums

    def _bad_step(self, task: str, loss: torch.Tensor) -> dict[str, Any]:
        self.optimizer.zero_grad(set_to_none=True)
        self.balancer.discard()
        if self.config.train.nonfinite == "error":
            raise ScenemtlError(
                f"the loss of task '{task}' is {loss.item()} at step {self.step + 1}; lower train.lr, set "
                "train.grad_clip, check that task's labels, or set train.nonfinite=skip to skip such steps"
            )
        self.skipped += 1
        return {"loss": {}, "weight": {}, "skipped": True}

    def _end_epoch(self) -> None:
        """Hand the balancer the epoch-averaged unweighted losses, averaged over processes."""
        names = sorted(self.epoch_loss)
        if names:
            means = torch.tensor([self.epoch_loss[k][0] / max(self.epoch_loss[k][1], 1) for k in names], dtype=torch.float64)
            means = distributed.all_reduce_mean(self.dist, means)
            self.balancer.end_epoch(dict(zip(names, means.tolist())))
        self.epoch_loss = {}

    def _micro_batches(self) -> Iterator[dict]:
        """Batches across epochs; the position advances as each batch is handed out (for exact resume)."""
        while True:
            self.sampler.start(self.epoch, self.position)
            for batch in self.loader:
                self.position += batch["image"].shape[0]
                yield batch
            self._end_epoch()
            self.epoch, self.position = self.epoch + 1, 0

    def fit(self, stop_at: int | None = None) -> dict[str, Any] | None:
        """Train to ``train.steps``, evaluating and checkpointing as configured; return the final report.

        With ``stop_at``, stop after that step as an interrupted run would: write a checkpoint
        and return None (a later ``--resume`` continues on the same schedule). SIGINT/SIGTERM do
        the same after the step in progress.
        """
        cfg = self.config.train
        end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        self.net.train()
        if self.step == 0:
            self.logger.log("run", 0, {"global_batch": self.global_batch, "processes": self.dist.world_size,
                                       "accumulation": cfg.accumulation, "device": str(self.device)})
        bar = progress_bar(total=cfg.steps, initial=self.step, desc=f"train {self.config.name}", disable=not self.progress)
        window: dict[str, list[float]] = {}
        tick, samples = time.perf_counter(), 0
        batches = self._micro_batches()
        with self._graceful_stop(), bar:
            while self.step < end and not self._should_stop():
                stats = self.train_step([next(batches) for _ in range(cfg.accumulation)])
                self.step += 1
                samples += self.global_batch
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
                        "memory_mib": self._peak_memory_mib(),
                        "skipped_steps": self.skipped,
                    }
                    if cfg.precision == "fp16":
                        record["grad_scale"] = self.scaler.get_scale()
                    self.logger.log("train", self.step, record)
                    if record["loss"]:
                        bar.set_postfix(loss=f"{sum(record['loss'].values()):.3f}")
                    window, tick, samples = {}, time.perf_counter(), 0
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    self.evaluate()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
        folder = self.save()
        if self.step < cfg.steps:
            self.logger.close()
            if self._stop_signal is not None and self.dist.is_main:
                print(f"stopped by {self._stop_signal} after step {self.step}; checkpoint {folder}. "
                      "Continue with the same command and --resume.")
            return None
        report = self.evaluate(final=True)
        self.logger.close()
        return report

    def _should_stop(self) -> bool:
        """A stop signal on any process stops all of them after the same step."""
        stop = self._stop_signal is not None
        if self.dist.distributed:
            stop = distributed.any_process(self.dist, stop)
            if stop and self._stop_signal is None:
                self._stop_signal = "a signal to another process"
        return stop

    def _peak_memory_mib(self) -> float:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)
            return peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak resident set, KiB on Linux

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
        """Evaluate on the validation split (each process its share, metrics summed); the final report is saved."""
        metrics = evaluate(self.model, self.tasks, self.val_loader, self.device, self.config.train.precision, self.progress)
        report = results_report(
            metrics, self.reference, {"name": self.config.name, "step": self.step, "split": self.config.data.val_split}
        )
        self.logger.log("val", self.step, {"metrics": report["metrics"], "delta_m": report["delta_m"]})
        if self.logger.enabled and self.config.train.log_images and len(self.val_set):
            for tag, picture in prediction_panels(self.model, self.tasks, self.val_set, self.val_loader.dataset,
                                                  self.device).items():
                self.logger.log_image(f"val/{tag}", self.step, picture)
        if final and self.logger.enabled:
            write_json(self.run_dir / "results.json", report)
            (self.run_dir / "results.md").write_text(format_report(report))
        self.net.train()
        return report

    def state(self) -> dict[str, Any]:
        """Everything but the weights needed to continue exactly."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "skipped": self.skipped,
            "epoch_loss": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.epoch_loss.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def save(self) -> Path:
        """Write a checkpoint of the current step (rank 0 writes; the others wait)."""
        folder = self.checkpoint_dir / f"step_{self.step:07d}"
        if self.dist.is_main:
            folder = save_checkpoint(
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
        distributed.barrier(self.dist)
        return folder

    def _restore(self, folder: Path) -> None:
        load_weights(self.model, folder)
        state = load_trainer_state(folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.balancer.load_state_dict(state["balancer"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.skipped = int(state.get("skipped", 0))
        self.epoch_loss = {k: [float(v[0]), int(v[1])] for k, v in state.get("epoch_loss", {}).items()}
