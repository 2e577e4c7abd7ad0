"""The training loop: config → data → model → task losses → balancer → optimiser, with exact resume.

One process per device: under torchrun each process trains on its share of every batch
(DistributedDataParallel, NCCL on GPUs, Gloo on CPUs); rank 0 logs and writes checkpoints.

The result is the last checkpoint, unless ``train.selection`` asks for the best one by a metric
on selection data that is never the reported split (``engine/selection.py``, ``Trainer.select``).

Over 400 lines because the loop, its state and exact resume belong together: set-up, the step
(micro-batches, balancer, non-finite checks), the loop with its stops and signals, evaluation,
and the checkpoint state that resumes all of them bit for bit.
"""

from __future__ import annotations

import resource
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils._pytree import tree_leaves

from scenemtl.balancing import StepContext, build_balancer
from scenemtl.config import Config
from scenemtl.data import DenseDataset
from scenemtl.data.partial import partial_losses
from scenemtl import malloc
from scenemtl.engine import builder, distributed
from scenemtl.engine.storage import RunLock
from scenemtl.extension import TrainingExtension, build_objectives
from scenemtl.engine.checkpoint import (
    checkpoint_problem,
    clean_leftovers,
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
from scenemtl.engine.selection import SelectionMixin, check_selection
from scenemtl.engine.snapshots import prediction_panels
from scenemtl.errors import CheckpointError, ConfigError, DataError, ScenemtlError
from scenemtl.models import ModelOutput, build_model
from scenemtl.models.base import SharedCut
from scenemtl.models.layers.winograd import set_max_tile


def native_cpu_precision(precision: str) -> bool:
    """Whether this CPU computes ``precision`` (bf16, fp16) natively (oneDNN's check; True when torch cannot tell)."""
    check = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}.get(precision)
    try:
        return bool(getattr(torch.ops.mkldnn, check)()) if check else True
    except (AttributeError, RuntimeError):
        return True


class Trainer(SelectionMixin):
    """Trains one experiment; ``fit()`` runs to ``train.steps``, evaluates and checkpoints.

    Everything random is seeded from ``config.seed``: model initialisation, the per-epoch data
    order and each sample's augmentation (see ``EpochSampler``). A checkpoint stores the
    optimiser, scheduler, gradient scaler, balancer and RNG states and the position inside the
    epoch, so that on CPU a resumed run reaches the same weights as an uninterrupted one.
    SIGINT and SIGTERM finish the current step, write a checkpoint and return.

    With ``train.selection`` the selection data is scored every ``train.eval_every`` steps and
    at the last step, the best weights are kept in ``checkpoints/best/`` (the best score and
    step are part of the training state, so a resumed run keeps them), and the final report on
    ``data.val_split`` is that of the best weights.
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
        if config.train.allocator != "system":  # tuned: freed memory is reused by the next step, not faulted in
            malloc.tune(config.train.allocator)  # again; lean: large blocks go back to the system (scenemtl/malloc.py)
        self.dist = distributed.setup(config.train.device)
        self.device = self.dist.device
        self.progress = progress and self.dist.is_main
        self.run_dir = config.run_dir
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self._lock: RunLock | None = None
        try:
            existing, resume = self._own_run_folder(resume)
            self._setup(config, existing, resume, progress, log, datasets)
        except BaseException:
            if self._lock is not None:  # nothing started: a folder made only for the lock goes again
                self._lock.release(discard=True)
                self._lock = None
            raise

    def _own_run_folder(self, resume: bool) -> tuple[list[Path], bool]:
        """Lock the run folder (rank 0), clean what a crash left, and choose the checkpoint to resume from.

        ``resume`` with nothing to resume starts a new run (and says so). A checkpoint that cannot
        be read is set aside as ``step_N.corrupt`` and the newest readable one is resumed, with a
        warning naming both.
        """
        if self.dist.is_main:
            self._lock = RunLock(self.run_dir).acquire()
            if self._lock.previous:
                owner = self._lock.previous
                print(
                    f"note: {self.run_dir} was left locked by process {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}, which is gone; taking it over",
                    file=sys.stderr,
                )
            removed = clean_leftovers(self.checkpoint_dir)
            if removed:
                print(f"note: removed what an interrupted run left in {self.checkpoint_dir}: {', '.join(removed)}", file=sys.stderr)
        distributed.barrier(self.dist)
        existing = list_checkpoints(self.checkpoint_dir)
        if existing and not resume:
            raise ScenemtlError(
                f"{self.run_dir} already holds checkpoints (latest {existing[-1].name}); pass --resume to continue "
                "that run, or choose another name / out_dir so nothing is overwritten"
            )
        if resume and not existing:
            if self.dist.is_main:
                print(f"note: --resume: no checkpoint in {self.checkpoint_dir}; starting a new run", file=sys.stderr)
            return existing, False
        if resume:
            if self.dist.is_main:
                self._set_aside_unreadable(existing)
            distributed.barrier(self.dist)
            existing = list_checkpoints(self.checkpoint_dir)
            compare_to_config(read_meta(existing[-1]), self.config, existing[-1])
        return existing, resume

    def _set_aside_unreadable(self, existing: list[Path]) -> None:
        """Rename unreadable newest checkpoints to ``step_N.corrupt`` until a readable one is the newest."""
        skipped: list[tuple[Path, str]] = []
        for folder in reversed(existing):
            problem = checkpoint_problem(folder)
            if problem is None:
                break
            skipped.append((folder, problem))
        else:
            folder, problem = skipped[0]
            raise CheckpointError(f"no checkpoint in {self.checkpoint_dir} can be resumed; the newest, {folder.name}: {problem}")
        for bad, problem in skipped:
            aside = bad.with_name(bad.name + ".corrupt")
            shutil.rmtree(aside, ignore_errors=True)
            bad.rename(aside)
            warnings.warn(
                f"checkpoint {bad.name} cannot be read ({problem}); resuming from {folder.name} instead "
                f"(the damaged one is kept as {aside.name})",
                stacklevel=3,
            )

    def close(self) -> None:
        """Release the run folder (at the end of ``fit``; also when construction fails)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __del__(self) -> None:
        lock = self.__dict__.get("_lock")
        if lock is not None:
            lock.release()

    def _setup(
        self,
        config: Config,
        existing: list[Path],
        resume: bool,
        progress: bool,
        log: bool,
        datasets: tuple[DenseDataset, DenseDataset] | None,
    ) -> None:
        cfg = config.train
        self.reference = load_reference(config.reference)
        torch.manual_seed(config.seed)
        self.info = builder.dataset_info(config)
        self.tasks = builder.build_tasks(config, self.info)
        self.selection = cfg.selection
        self.higher_is_better = check_selection(config, self.tasks)
        if datasets is None:
            datasets = (builder.build_dataset(config, config.data.train_split), builder.build_dataset(config, config.data.val_split))
        self.train_set, self.val_set = datasets
        # the selection data: a split of its own, or training images set aside before anything trains on them
        self.select_set: DenseDataset | None = None
        if self.selection is not None and self.selection.holdout is not None:
            self.train_set, self.select_set = self._hold_out(self.train_set, resume)
        elif self.selection is not None:
            self.select_set = builder.build_dataset(config, self.selection.split)
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.train_set = builder.partial_labels(config, self.train_set, self.tasks, write=self.dist.is_main)
        self.partial = config.data.labels.setting != "full"
        if cfg.epochs is not None:  # steps (and the step schedule's period) from the training split's batches per epoch
            config = self.config = builder.epochs_to_steps(config, self.train_set, self.dist.world_size)
            cfg = config.train
        self.model = self._build_model()
        if config.model.weights is not None and not resume:
            from scenemtl.engine.checkpoint import load_weights

            load_weights(self.model, config.model.weights)
        # what the model adds to training (e.g. an architecture search): its own parameters stay out
        # of the weights' optimiser and of DDP until both are built
        self.extension = self.model.training_extension()
        # training settings (config.objectives): parameters, optimisers and losses of their own
        self.objectives = build_objectives(config, self.tasks, self.model, self.device)
        self._replaced = {name for objective in self.objectives for name in objective.replaces}
        if self._replaced - set(self.tasks):
            raise ConfigError(f"objectives compute the loss of task(s) {sorted(self._replaced - set(self.tasks))} the config does not have")
        for hooks in self._hooks():
            hooks.check(config)
            for p in hooks.parameters():
                p.requires_grad_(False)
        weights = {name: task.weight for name, task in config.tasks.items()}
        self.balancer = build_balancer(config.balancer.name, list(self.tasks), weights, config.balancer.options)
        self.balancer.to(self.device)
        scales = None
        if cfg.layer_decay is not None:
            from scenemtl.models.backbones.tuning import layer_decay_scales

            scales = layer_decay_scales(self.model, cfg.layer_decay)
        self.optimizer = build_optimizer(
            cfg,
            self.model.parameters(),
            self.balancer.optimizer_groups(),
            self.model.shared_parameters() if cfg.backbone_lr else (),
            layer_scales=scales,
        )
        self._shared = self.model.shared_parameters()
        self._parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        if self.device.type == "cpu" and cfg.precision in ("bf16", "fp16") and not native_cpu_precision(cfg.precision):
            warnings.warn(
                f"train.precision={cfg.precision} on this CPU runs without native {cfg.precision} instructions (AVX-512 BF16/FP16 "
                "or AMX): it is emulated and slower than fp32 here (an InvPT step about 15x slower on an AVX2 machine, "
                "benchmarks/results/train_vs_official_cpu.md); set train.precision=fp32",
                stacklevel=2,
            )
        rank, world = self.dist.rank, self.dist.world_size
        train_transform = builder.build_transform(config, self.tasks, self.info, train=True)
        self.train_transform = train_transform
        self.loader, self.sampler = builder.train_loader(config, self.train_set, train_transform, rank, world)
        eval_transform = builder.build_transform(config, self.tasks, builder.eval_info(config), train=False)
        self.eval_transform = eval_transform
        self.val_loader = builder.eval_loader(config, self.val_set, eval_transform, rank, world)
        builder.check_eval_pad(config, self.val_set)
        self.select_loader = None
        if self.select_set is not None:
            if len(self.select_set) == 0:
                raise DataError(f"train.selection: the selection data ({self.selection_source()}) has no images")
            self.select_loader = builder.eval_loader(config, self.select_set, eval_transform, rank, world)
            builder.check_eval_pad(config, self.select_set)
        self.step, self.epoch, self.position, self.skipped = 0, 0, 0, 0
        self.epoch_loss: dict[str, list[float]] = {}  # task → [sum, count] over the current epoch
        self._checked_labels = False
        self._stop_signal: str | None = None
        self._unlabelled_steps: dict[str, int] = {}
        self._warned_unlabelled: set[str] = set()
        if resume:
            self._restore(existing[-1])
        elif cfg.init_output_bias:
            # (not from the labels of a task an objective trains without them, e.g. self-supervised depth)
            own = {name: task for name, task in self.tasks.items() if name not in self._replaced}
            priors = estimate_priors(self.train_set, own, show_progress=self.progress, pixel_stride=4)
            self.model.init_output_bias({name: prior.to(self.device) for name, prior in priors.items()})
        # a balancer that aggregates at the shared representation gets it cut out of the graph
        # (models without one: the Jacobian over the shared parameters)
        cut = self.balancer.needs_features and self.model.has_shared_representation()
        self.net: torch.nn.Module = SharedCut(self.model) if cut else self.model
        if self.dist.distributed:
            self.net = DistributedDataParallel(
                self.net,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters or self.model.needs_unused_parameters,
            )
        self.route = self._routing(cut)
        if cfg.compile:
            self.net = torch.compile(self.net)
        for hooks in self._hooks():  # from now on their parameters take gradients (averaged in train_step)
            for p in hooks.parameters():
                p.requires_grad_(True)
            self._parameters = self._parameters + hooks.parameters()
        self.global_batch = config.data.batch_size * world * cfg.accumulation
        self.logger = RunLogger(
            # a new run in a folder an earlier attempt left logs in (it crashed before its first checkpoint):
            # those records describe nothing that survives, so they are dropped (-1)
            self.run_dir,
            enabled=log and self.dist.is_main,
            resume_step=self.step if resume else -1,
            wandb_project=cfg.wandb,
            config=config.to_dict(),
        )
        if self.logger.enabled and not (resume and (self.run_dir / "config.yaml").exists()):
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    def _hooks(self) -> list[TrainingExtension]:
        """The model's training extension (if any), then the objectives."""
        return ([self.extension] if self.extension is not None else []) + self.objectives

    def _build_model(self) -> torch.nn.Module:
        cfg = self.config.train
        model = set_max_tile(build_model(self.config.model, self.tasks), cfg.winograd)
        if cfg.activation_checkpointing:
            model.set_activation_checkpointing(True)
        if cfg.sync_bn and self.dist.distributed:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm); set it to false on CPU")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if cfg.channels_last else model

    # ------------------------------------------------------------------------------------
    def task_losses(self, output: ModelOutput, batch: dict, only: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Each task's loss on the final prediction plus every deep-supervision stage.

        With partial labels (``data.labels``) the loss is taken per sample over the samples that
        carry the task's label, each multiplied by (tasks / labelled tasks of that sample) when
        ``rescale`` is on, summed and divided by the batch size (DiffusionMTL's scheme); a batch
        without the task's label gives a zero loss with a zero gradient. ``only``: the losses of these
        tasks (those the output holds, ``train.route_tasks``).
        """
        names = [name for name in self.tasks if name not in self._replaced and (only is None or name in only)]
        if self.partial:
            own = self._partial_losses(output, batch, names)
        else:
            own = {name: self._task_loss(name, self.tasks[name], output, batch[name]) for name in names}
        if not self._replaced:
            return own
        given: dict[str, torch.Tensor] = {}
        for objective in self.objectives:
            given.update(objective.losses(output, batch, self.step))
        missing = self._replaced - set(given)
        if missing:
            raise ScenemtlError(f"the objectives returned no loss for task(s) {sorted(missing)}")
        return {name: given[name] if name in self._replaced else own[name] for name in self.tasks}

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

    def _partial_losses(self, output: ModelOutput, batch: dict, names: list[str]) -> dict[str, torch.Tensor]:
        return partial_losses(
            names,
            batch,
            self.config.data.labels.rescale,
            lambda name, b: self._task_loss(name, self.tasks[name], output, batch[name][b : b + 1], slice(b, b + 1)),
            lambda name: self.tasks[name].zero_loss(output.final[name]),
        )

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
        """Once: every target's values are what its task accepts (``Task.check_target``; e.g. a class id outside
        0..C−1 would crash CUDA's loss)."""
        for name, task in self.tasks.items():
            if name in batch:
                problem = task.check_target(batch[name])
                if problem is not None:
                    raise DataError(
                        f"{problem} in samples {[m.get('id') for m in batch.get('meta', [])]}; check the dataset's label encoding"
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

    def _routing(self, cut: bool) -> bool:
        """Whether each micro-batch computes only its labelled tasks (``train.route_tasks``; see there)."""
        setting = self.config.train.route_tasks
        blockers = []
        if not self.model.routes_tasks:
            blockers.append(f"model '{self.config.model.arch}' computes every task in one pass")
        if self._replaced:
            blockers.append("objectives compute task losses from the whole output")
        if cut:
            blockers.append(f"balancer '{self.config.balancer.name}' aggregates at the shared representation")
        if self.dist.distributed:
            blockers.append("a distributed run's DDP would find the other tasks' parameters unused")
        if setting is None:
            return not blockers and self.config.data.batching == "grouped"
        if setting and blockers:
            raise ConfigError(f"train.route_tasks: true cannot be used here: {blockers[0]}; set train.route_tasks to false or null")
        return setting

    def _labelled(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per task in the batch, whether it has a labelled pixel (a device tensor each; no sync)."""
        return {name: self.tasks[name].valid_mask(batch[name]).any() for name in self.tasks if name in batch}

    def _route(self, batch: dict, labelled: dict[str, torch.Tensor] | None) -> list[str] | None:
        """The tasks a micro-batch carries a label of (None: all, also when it carries none; one device sync)."""
        if not self.route:
            return None
        flags = self._labelled(batch) if labelled is None else labelled
        carried = [name for name, flag in zip(flags, torch.stack(list(flags.values())).tolist()) if flag] if flags else []
        return carried if carried and len(carried) < len(self.tasks) else None

    def _forward_losses(self, batch: dict, labelled: dict[str, torch.Tensor] | None = None) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
        """The output and the task losses; ``labelled``: the batch's ``_labelled`` flags, when already computed."""
        image = batch["image"]
        if self.config.train.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        route = self._route(batch, labelled)
        with autocast(self.device, self.config.train.precision):
            output = self.net(image) if route is None else self.net(image, tasks=route)
        if route is None:
            return output, self.task_losses(output, batch)
        # the tasks not computed: a zero in the graph of those computed (the losses' values as without routing)
        losses = self.task_losses(output, batch, route)
        leaves = [x for name in route for x in tree_leaves(output.final[name]) if isinstance(x, torch.Tensor) and x.is_floating_point()]
        zero = torch.stack([x.sum() for x in leaves]).sum() * 0.0 if leaves else image.new_zeros(())
        return output, {name: losses.get(name, zero) for name in self.tasks}

    def train_step(self, micro_batches: list[dict]) -> dict[str, Any]:
        """One step; with training extensions (the model's, the objectives), their regularisers go in first and
        their parameters step after the weights."""
        hooks = self._hooks()
        if not hooks:
            return self._train_step(micro_batches)
        for extension in hooks:
            extension.zero_grad()
            regulariser = extension.before_step(self.step, self.config.train.steps)
            if regulariser is not None:
                regulariser.backward()
        stats = self._train_step(micro_batches)
        done = self.step + 1
        for extension in hooks:
            if not stats["skipped"]:
                if extension is self.extension:  # (objectives' gradients are averaged before clipping, in _train_step)
                    distributed.all_reduce_grads(self.dist, extension.parameters())
                extension.step()
            extension.zero_grad()
            if not stats["skipped"] and (done % self.config.train.log_every == 0 or done == self.config.train.steps):
                values = extension.log_values()
                if values:
                    self.logger.log(extension.name, done, values)
        return stats

    def _train_step(self, micro_batches: list[dict]) -> dict[str, Any]:
        """One optimiser step over ``train.accumulation`` micro-batches; returns losses, weights, skipped.

        The balancer back-propagates each micro-batch's losses and completes the step's gradients
        in ``finish``. A balancer that synchronises gradients itself (gradient aggregation) runs
        every micro-batch outside DDP's hooks; the gradients it did not synchronise are then
        averaged here.
        """
        cfg = self.config.train
        totals: dict[str, float] = {}
        labelled: list[dict[str, torch.Tensor]] = []
        count = len(micro_batches)
        ctx = self._context(count)
        manual_sync = self.balancer.synchronizes_gradients and self.dist.distributed
        try:
            for i, batch in enumerate(micro_batches):
                batch = move(batch, self.device)  # decodes stored batches on the device (data.decode_on_device)
                if not self._checked_labels:
                    self._check_labels(batch)
                labelled.append(self._labelled(batch))
                last = i == count - 1
                hooks_off = manual_sync or not last
                sync = self.net.no_sync() if (self.dist.distributed and hooks_off and hasattr(self.net, "no_sync")) else nullcontext()
                with sync:
                    output, losses = self._forward_losses(batch, labelled[-1])
                    bad = self._non_finite(losses)
                    if bad is not None:
                        self._track_labels(labelled)
                        return self._bad_step(bad, losses[bad])
                    ctx.features, ctx.feature_sources = output.features, output.feature_sources
                    self.balancer.backward(losses, ctx)
                    ctx.features, ctx.feature_sources = (), ()
                    for objective in self.objectives:
                        extra = objective.extra_loss(self.net, output, batch, self.step)
                        if extra is not None:
                            self.scaler.scale(extra / count).backward()
                for name, loss in losses.items():
                    totals[name] = totals.get(name, 0.0) + float(loss.detach()) / count
            self._track_labels(labelled)
            weights = self.balancer.finish(ctx)
        except torch.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            self.balancer.discard()
            raise ScenemtlError(
                f"out of memory at step {self.step + 1} with data.batch_size={self.config.data.batch_size}: lower "
                "data.batch_size (raise train.accumulation to keep the global batch), or set train.precision=bf16 "
                "or train.activation_checkpointing=true"
            ) from None
        if self.route:  # the tasks not computed: a zero gradient (weight decay and momentum as without routing)
            for p in self.model.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
        objective_parameters = [p for objective in self.objectives for p in objective.parameters()]
        if self.dist.distributed:
            done = self.balancer.synchronized()
            todo = [p for p in self.balancer.parameters() if p.requires_grad and p not in done]
            if manual_sync:
                todo += [p for p in self._parameters if p not in done]
            todo += [p for p in objective_parameters if p not in todo]
            distributed.all_reduce_grads(self.dist, todo)
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([*self.model.parameters(), *objective_parameters], cfg.grad_clip)
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
            with self.net.no_sync() if hasattr(self.net, "no_sync") else nullcontext():
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

        With ``train.selection`` the final report is that of the best weights, which ``self.model``
        then holds (``checkpoints/step_N`` keeps the last ones).

        With ``stop_at``, stop after that step as an interrupted run would: write a checkpoint
        and return None (a later ``--resume`` continues on the same schedule). SIGINT/SIGTERM do
        the same after the step in progress.
        """
        try:
            return self._fit(stop_at)
        finally:
            self.close()

    def _fit(self, stop_at: int | None) -> dict[str, Any] | None:
        cfg = self.config.train
        end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        deadline = time.monotonic() + cfg.time_limit if cfg.time_limit is not None else None
        self.net.train()
        if self.step == 0:
            self.logger.log(
                "run",
                0,
                {
                    "global_batch": self.global_batch,
                    "processes": self.dist.world_size,
                    "accumulation": cfg.accumulation,
                    "device": str(self.device),
                },
            )
        bar = progress_bar(total=cfg.steps, initial=self.step, desc=f"train {self.config.name}", disable=not self.progress)
        window: dict[str, list[float]] = {}
        tick, samples = time.perf_counter(), 0
        batches = self._micro_batches()
        with self._graceful_stop(), bar:
            while self.step < end and not self._should_stop():
                micro_batches = [next(batches) for _ in range(cfg.accumulation)]
                stats = self.train_step(micro_batches)
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
                scheduled = bool(cfg.eval_every) and self.step % cfg.eval_every == 0
                if scheduled and self.step < cfg.steps:
                    try:
                        self.evaluate()
                    except ScenemtlError:
                        self.save()  # e.g. a task without any labelled pixel in the validation split: keep the steps
                        raise
                if self.selection is not None and (scheduled or self.step == cfg.steps):
                    self.select()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
                if deadline is not None and time.monotonic() > deadline and self._stop_signal is None:
                    self._stop_signal = f"the time limit (train.time_limit={cfg.time_limit:g} s)"
        folder = self.save()
        if self.step < cfg.steps:
            self.logger.close()
            if self._stop_signal is not None and self.dist.is_main:
                print(
                    f"stopped by {self._stop_signal} after step {self.step}; checkpoint {folder}. "
                    "Continue with the same command and --resume.",
                    file=sys.stderr,
                )
            return None
        report = self.evaluate(final=True) if self.selection is None else self._report_selected()
        self.logger.close()
        return report

    #: steps in a row without one labelled pixel of a task before the warning
    unlabelled_patience = 100

    def _track_labels(self, labelled: list[dict[str, torch.Tensor]]) -> None:
        """Warn once per task that has had no labelled pixel for ``unlabelled_patience`` steps in a row (its loss is
        then 0 and it does not learn). ``labelled``: per micro-batch, whether each task had a labelled pixel (device
        tensors, read together with the step's losses)."""
        for name in self.tasks:
            if any(name in flags and bool(flags[name]) for flags in labelled):
                self._unlabelled_steps[name] = 0
                continue
            count = self._unlabelled_steps[name] = self._unlabelled_steps.get(name, 0) + 1
            if count == self.unlabelled_patience and name not in self._warned_unlabelled:
                self._warned_unlabelled.add(name)
                if self.dist.is_main:
                    warnings.warn(
                        f"task '{name}' has had no labelled pixel in the last {count} steps (steps "
                        f"{self.step + 2 - count}–{self.step + 1}): its loss is 0 and it does not learn; check its "
                        f"labels (the dataset's {name} files, data.labels)",
                        stacklevel=2,
                    )

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
        if self.config.eval.recalibrate_bn:
            from scenemtl.engine.recalibrate import evaluate_recalibrated

            data = self.config.data
            metrics = evaluate_recalibrated(
                self.model,
                self.tasks,
                self.train_set,
                self.train_transform,
                self.val_set,
                self.eval_transform,
                self.device,
                data.batch_size,
                data.eval_batch_size,
                self.config.train.precision,
                self.progress,
                self.dist.rank,
                self.dist.world_size,
                self.config.seed,
            )
        else:
            metrics = evaluate(self.model, self.tasks, self.val_loader, self.device, self.config.train.precision, self.progress)
        report = results_report(metrics, self.reference, {"name": self.config.name, "step": self.step, "split": self.config.data.val_split})
        self.logger.log("val", self.step, {"metrics": report["metrics"], "delta_m": report["delta_m"]})
        if self.logger.enabled and self.config.train.log_images and len(self.val_set):
            for tag, picture in prediction_panels(self.model, self.tasks, self.val_set, self.val_loader.dataset, self.device).items():
                self.logger.log_image(f"val/{tag}", self.step, picture)
        if final and self.logger.enabled:
            write_json(self.run_dir / "results.json", report)
            (self.run_dir / "results.md").write_text(format_report(report))
        self.net.train()
        return report

    # ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything but the weights needed to continue exactly."""
        state = {
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
        if self.selection is not None:
            state["selection"] = {
                "metric": self.selection.metric,
                "data": self._selection_data(),
                "best_step": self.best_step,
                "best_score": self.best_score,
            }
        if self.extension is not None:
            state["extension"] = self.extension.state_dict()
        if self.objectives:
            state["objectives"] = [objective.state_dict() for objective in self.objectives]
        return state

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
        if self.dist.is_main:
            for hooks in self._hooks():
                hooks.write_artifacts(self.run_dir, self.step)
        distributed.barrier(self.dist)
        return folder

    def _restore(self, folder: Path) -> None:
        state = load_trainer_state(folder)
        if self.extension is not None:
            # (checkpoints written before extensions kept their state at the top level)
            self.extension.load_state_dict(state.get("extension", state))
        saved = state.get("objectives", [])
        if len(saved) != len(self.objectives):
            raise CheckpointError(
                f"{folder}: the checkpoint holds the state of {len(saved)} objective(s), the config names {len(self.objectives)}; "
                "resume with the config it was trained with"
            )
        for objective, objective_state in zip(self.objectives, saved):
            objective.load_state_dict(objective_state)
        self._restore_selection(state, folder)
        load_weights(self.model, folder)
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
