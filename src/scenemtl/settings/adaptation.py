"""Unsupervised domain adaptation (DenseMTL's DA setting): the objectives ``adversarial`` and ``min_entropy``.

The labelled source is the run's dataset (``data``); the target domain's unlabelled training
images come from the objective's ``target`` (a dataset name, root, options and split, read without
labels); evaluation and model selection read ``data.eval_dataset`` (the target's val split).
Each training step, after the source losses' backward, the objective draws a batch of target
images (its own resumable stream: epoch and position are saved), runs the network on it and adds
its term; the engine knows none of this (``TrainingExtension.extra_loss``).

``adversarial`` (ADVENT-style output-space alignment, as DenseMTL's ``training/da_train.py``):
one discriminator per (task, output stage) (``settings/adversarial_parts.py``: spectral-norm
4×4 convolutions behind a batch-level random flip) reads, upsampled to the target images' size
(bilinear, ``align_corners=True``), the entropy map of a classification task's softmax
(``-p·log2 p / log2 C`` per class) or a depth output min-max normalised by the source batch's
valid ground truth. The network gets ``lambda_adv`` × the mean over discriminators of
BCE(D(target map), source label) with the discriminators frozen; after the weights' step each
discriminator learns BCE(D(source map), 0) + BCE(D(target map), 1) (means over discriminators)
with Adam (lr 1e-4, betas (0.9, 0.99)) and ADVENT's poly decay (power 0.9 over the run's steps).
DenseMTL's recipe: ``tasks: [semseg, depth]``, ``stages: [scale1, final]``, ``lambda_adv: 0.005``.

``min_entropy`` (ADVENT's MinEnt): ``weight`` × the mean normalised entropy of the target
predictions of a classification task (ADVENT's ``entropy_loss``; its λ is 0.001).

Differences from DenseMTL, and why: its depth head predicts the "normalised inverse depth"
``65536/(cm + 1)`` and its discriminator reads that prediction normalised by the source batch's
ground-truth range; here the depth output is metric (or whatever the task's ``output`` decodes)
and the decoded depth is normalised by the source batch's valid depth range (the same min-max
map on another parameterisation of depth). The target stream runs on its own (DenseMTL zips the
two loaders per epoch, so the shorter one sets the epoch); the discriminators' random flips draw
from a generator seeded by (seed, step), so a resumed run flips the same batches. Under several
processes the discriminators' gradients are averaged before their step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from scenemtl.data import DATASETS
from scenemtl.errors import ConfigError
from scenemtl.extension import TrainingExtension, register_objective
from scenemtl.registry import check_options
from scenemtl.settings.adversarial_parts import (
    Discriminator,
    da_input,
    depth_map,
    discriminator_loss,
    entropy_map,
    frozen,
    generator_adversarial_loss,
    min_entropy_loss,
    poly_lr,
)


class TargetStream:
    """An endless, resumable stream of target-domain training batches (images only) for this process."""

    def __init__(self, config: Any, target: dict, rank: int, world: int) -> None:
        from scenemtl.engine import builder

        unknown = set(target) - {"name", "root", "options", "split"}
        if "name" not in target or unknown:
            raise ConfigError(
                "objectives: target must be {name, root, options, split} (the target domain's dataset, read without labels)"
                + (f"; unknown keys {sorted(unknown)}" if unknown else "")
            )
        cls = DATASETS.get(target["name"])
        options = target.get("options") or {}
        check_options(cls, options, "objectives.target.options", ("root", "split", "tasks"), owner=target["name"])
        root = builder._expand_root(target.get("root"), "objectives.target.root")
        self.dataset = cls(root=root, split=target.get("split", "train"), tasks=[], **options)
        if len(self.dataset) == 0:
            raise ConfigError(f"objectives: the target dataset '{target['name']}' has no images in its split")
        transform = builder.build_transform(config, {}, self.dataset.info, train=True)
        # a seed of its own: the target images are drawn independently of the source's
        shifted = config.model_copy(update={"seed": config.seed + 7919})
        self.loader, self.sampler = builder.train_loader(shifted, self.dataset, transform, rank, world)
        self.epoch, self.position = 0, 0
        self._iterator: Any = None

    def next(self) -> dict:
        """The next batch (a new epoch starts when one runs out)."""
        for _ in range(2):
            if self._iterator is None:
                self.sampler.start(self.epoch, self.position)
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
                continue
            self.position += batch["image"].shape[0]
            return batch
        raise RuntimeError("the target loader gives no batch")

    def state_dict(self) -> dict[str, int]:
        """Where the stream stands."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state_dict()``."""
        self.epoch, self.position, self._iterator = int(state["epoch"]), int(state["position"]), None


class TargetDomain(TrainingExtension):
    """What both adaptation objectives share: the target stream and the network's run on its images."""

    def __init__(self, config: Any, tasks: dict, device: torch.device, target: dict, stages: list[str]) -> None:
        spread = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if spread else (0, 1)
        self.stream = TargetStream(config, target, rank, world)
        self.device, self.precision, self.seed = device, config.train.precision, int(config.seed)
        self.stages = list(stages)
        if not self.stages:
            raise ConfigError("objectives: stages must name at least one output ('final', or a deep-supervision stage)")
        self._log: dict[str, list[float]] = {}

    def parameters(self) -> list[nn.Parameter]:
        """None that the weights' optimiser, clipping or averaging should see."""
        return []

    def _target_output(self, net: nn.Module) -> tuple[Any, tuple[int, int]]:
        from scenemtl.engine.evaluate import autocast, move

        batch = move(self.stream.next(), self.device)
        image = batch["image"]
        with autocast(self.device, self.precision):
            return net(image), tuple(image.shape[-2:])

    def _pick(self, output: Any, stage: str, task: str) -> torch.Tensor:
        if stage == "final":
            return output.final[task]
        if stage not in output.aux or task not in output.aux[stage]:
            raise ConfigError(
                f"objectives: the model has no output '{stage}' for task '{task}' (it has 'final' and {list(output.aux)}); "
                "set the objective's stages"
            )
        return output.aux[stage][task]

    def _note(self, **values: float) -> None:
        for key, value in values.items():
            entry = self._log.setdefault(key, [0.0, 0])
            entry[0] += value
            entry[1] += 1

    def log_values(self) -> dict[str, float]:
        """Means since the last log."""
        values = {key: total / count for key, (total, count) in self._log.items() if count}
        self._log = {}
        return values


class AdversarialAdaptation(TargetDomain):
    """ADVENT-style output-space adversarial adaptation per task and output stage (see the module docstring)."""

    name = "adversarial"

    def __init__(
        self,
        config: Any,
        tasks: dict,
        device: torch.device,
        target: dict,
        adapt: list[str],
        stages: list[str],
        lambda_adv: float,
        discriminator_lr: float,
        discriminator_betas: tuple[float, float],
        poly_power: float,
        ndf: int,
    ) -> None:
        super().__init__(config, tasks, device, target, stages)
        unknown = [t for t in adapt if t not in tasks]
        if unknown or not adapt:
            raise ConfigError(f"objectives: adversarial adapts tasks the config has ({list(tasks)}), got {adapt}")
        self.kinds: dict[str, str] = {}
        channels = {}
        for name in adapt:
            task = tasks[name]
            if task.is_classification:
                self.kinds[name], channels[name] = "entropy", task.out_channels
            elif getattr(task, "output_kind", None) in ("metric_depth", "inverse_depth"):
                self.kinds[name], channels[name] = "depth", 1
            else:
                raise ConfigError(f"objectives: adversarial maps classification and depth outputs, not task '{name}'")
        self.tasks = tasks
        self.lambda_adv, self.total = float(lambda_adv), int(config.train.steps)
        self.base_lr, self.power = float(discriminator_lr), float(poly_power)
        self.flips = torch.Generator()
        self.discriminators = nn.ModuleDict(
            {
                self._key(name, stage): Discriminator(channels[name], ndf=ndf, generator=self.flips)
                for name in adapt
                for stage in self.stages
            }
        ).to(device)
        self.optimizers = {
            key: torch.optim.Adam(d.parameters(), lr=self.base_lr, betas=tuple(discriminator_betas))  # type: ignore[arg-type]
            for key, d in self.discriminators.items()
        }
        self._pending: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        self._power_start: dict[str, torch.Tensor] = {}
        self._power_middle: dict[str, torch.Tensor] = {}
        self._step = 0

    @staticmethod
    def _key(task: str, stage: str) -> str:
        return f"{task}@{stage}"

    def check(self, config: Any) -> None:
        """fp16's gradient scaler would not reach the discriminators."""
        if config.train.precision == "fp16":
            raise ConfigError("objectives: adversarial trains in fp32 or bf16, not fp16 (set train.precision)")

    def _maps(self, output: Any, size: tuple[int, int], depth_range: tuple[torch.Tensor, torch.Tensor] | None) -> list[torch.Tensor]:
        maps = []
        for key in self.discriminators:
            task, stage = key.split("@")
            values = da_input(self._pick(output, stage, task).float(), size)
            if self.kinds[task] == "entropy":
                maps.append(entropy_map(values))
            else:
                assert depth_range is not None
                maps.append(depth_map(self.tasks[task].decode(values), *depth_range))
        return maps

    def _depth_range(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        depth = [t for t, kind in self.kinds.items() if kind == "depth"]
        if not depth:
            return None
        target = batch[depth[0]]
        valid = self.tasks[depth[0]].valid_mask(target)[:, None] & torch.isfinite(target)
        if not bool(valid.any()):
            return torch.zeros((), device=target.device), torch.ones((), device=target.device)
        values = target[valid]
        return values.min(), values.max()

    def extra_loss(self, net: nn.Module, output: Any, batch: dict, step: int) -> torch.Tensor | None:
        """λ_adv × the generator's BCE on the target images' maps (discriminators frozen)."""
        self._step = step
        target_output, size = self._target_output(net)
        depth_range = self._depth_range(batch)
        source_maps = [m.detach() for m in self._maps(output, size, depth_range)]
        target_maps = self._maps(target_output, size, depth_range)
        # spectral norm's power iteration advances at every forward in training mode: every micro-batch of a
        # step starts from the step's u, v, as each process does with its one micro-batch (so accumulation
        # equals processes, and one micro-batch per step is DenseMTL's sequence)
        if not self._pending:
            self._power_start = self._power_state()
        else:
            self._load_power_state(self._power_start)
        self._pending.append((source_maps, [m.detach() for m in target_maps]))
        self.flips.manual_seed(self.seed * 1_000_003 + 2 * step)
        discriminators = list(self.discriminators.values())
        with frozen(discriminators):
            loss = generator_adversarial_loss(discriminators, target_maps, self.lambda_adv)
        self._power_middle = self._power_state()
        self._note(adversarial=float(loss.detach()) / max(self.lambda_adv, 1e-12))
        return loss

    def step(self) -> None:
        """One step of every discriminator on this step's source and target maps (poly-decayed Adam)."""
        if not self._pending:
            return
        lr = poly_lr(self.base_lr, self._step, self.total, self.power)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
        discriminators = list(self.discriminators.values())
        losses = []
        for source, target in self._pending:  # each micro-batch flips and iterates as a process holding only it would
            self._load_power_state(self._power_middle)
            self.flips.manual_seed(self.seed * 1_000_003 + 2 * self._step + 1)
            losses.append(discriminator_loss(discriminators, source, target))
        total = torch.stack(losses).mean()
        total.backward()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for p in self.discriminators.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        for optimizer in self.optimizers.values():
            optimizer.step()
        self._note(discriminator=float(total.detach()), discriminator_lr=lr)
        self._pending = []

    def _power_state(self) -> dict[str, torch.Tensor]:
        """The discriminators' power-iteration vectors (spectral norm's ``_u``, ``_v``)."""
        return {k: v.clone() for k, v in self.discriminators.state_dict().items() if k.endswith(("._u", "._v"))}

    def _load_power_state(self, state: dict[str, torch.Tensor]) -> None:
        buffers = dict(self.discriminators.named_buffers())
        with torch.no_grad():
            for key, value in state.items():
                buffers[key].copy_(value)

    def zero_grad(self) -> None:
        """Forget maps of a step that was skipped."""
        self._pending = []

    def state_dict(self) -> dict[str, Any]:
        """The discriminators, their optimisers and the target stream."""
        return {
            "discriminators": self.discriminators.state_dict(),
            "optimizers": {key: o.state_dict() for key, o in self.optimizers.items()},
            "stream": self.stream.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.discriminators.load_state_dict(state["discriminators"])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self.stream.load_state_dict(state["stream"])


class MinEntropy(TargetDomain):
    """ADVENT's MinEnt: the target predictions' normalised entropy, minimised (see the module docstring)."""

    name = "min_entropy"

    def __init__(self, config: Any, tasks: dict, device: torch.device, target: dict, task: str, stages: list[str], weight: float) -> None:
        super().__init__(config, tasks, device, target, stages)
        if task not in tasks or not tasks[task].is_classification:
            raise ConfigError(f"objectives: min_entropy needs a classification task of the config ({list(tasks)}), got '{task}'")
        self.task, self.weight = task, float(weight)

    def extra_loss(self, net: nn.Module, output: Any, batch: dict, step: int) -> torch.Tensor | None:
        """``weight`` × the mean over stages of the mean normalised entropy of the target predictions."""
        target_output, size = self._target_output(net)
        terms = [min_entropy_loss(da_input(self._pick(target_output, stage, self.task).float(), size)) for stage in self.stages]
        entropy = torch.stack(terms).mean()
        self._note(entropy=float(entropy.detach()))
        return self.weight * entropy

    def state_dict(self) -> dict[str, Any]:
        """The target stream."""
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.stream.load_state_dict(state["stream"])


@register_objective("adversarial")
def adversarial(
    config: Any,
    tasks: dict,
    model: nn.Module,
    device: torch.device,
    target: dict,
    adapt: list[str] | None = None,
    stages: list[str] | None = None,
    lambda_adv: float = 0.005,
    discriminator_lr: float = 1e-4,
    discriminator_betas: tuple[float, float] = (0.9, 0.99),
    poly_power: float = 0.9,
    ndf: int = 64,
) -> AdversarialAdaptation:
    """Output-space adversarial adaptation toward ``target`` images (ADVENT, DenseMTL's DA).

    ``adapt``: the tasks (default: every classification and depth task); ``stages``: the outputs
    (default ``['final']``; DenseMTL: ``['scale1', 'final']``)."""
    picked = adapt if adapt is not None else [n for n, t in tasks.items() if t.is_classification or t.output_kind == "metric_depth"]
    return AdversarialAdaptation(
        config, tasks, device, target, picked, stages or ["final"], lambda_adv, discriminator_lr, discriminator_betas, poly_power, ndf
    )


@register_objective("min_entropy")
def min_entropy(
    config: Any,
    tasks: dict,
    model: nn.Module,
    device: torch.device,
    target: dict,
    task: str = "semseg",
    stages: list[str] | None = None,
    weight: float = 0.001,
) -> MinEntropy:
    """Entropy minimisation of a classification task on ``target`` images (ADVENT's MinEnt)."""
    return MinEntropy(config, tasks, device, target, task, stages or ["final"], weight)
