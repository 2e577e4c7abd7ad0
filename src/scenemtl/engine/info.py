"""``scenemtl info CONFIG``: a model's parameters (shared and per task) and its compute at a resolution.

Parameters are attributed by which tasks' outputs (final and deep-supervision) depend on them: a
parameter only one task's outputs depend on belongs to that task, one several tasks' outputs depend
on is shared, one none depends on is listed as unused. This works for every architecture without
it declaring anything (a cross-stitch column counts as one task's only if the other tasks truly do
not depend on it).

Compute is counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` over one forward
pass in evaluation mode at batch 1. It counts 2 FLOPs per multiply-add of convolutions and matrix
products; the tables of this field (fvcore's counter, e.g. InvPT's 555.57 "GFLOPs") count one per
multiply-add, so both are reported: ``gmacs`` (the papers' "GFLOPs") and ``gflops`` (= 2 × gmacs).

fvcore-style counters also count layer norms, batch norms and bilinear resizes, which PyTorch's
counter does not. The counts of the seed recipes against their published figures (parameters of
the MTAN paper's table, torchvision's ResNet-50, the transformers' quoted GFLOPs) are checked in
``tests/engine/test_info.py``; an architecture's published figures come from its registration
(``register_model(published=...)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dataclasses import dataclass, field

import torch

from scenemtl.config import Config
from scenemtl.errors import ConfigError


@dataclass
class ModelInfo:
    """Parameter counts (exact) and compute (multiply-adds) of one model at one input size."""

    arch: str
    backbone: str
    size: tuple[int, int]
    total: int
    shared: int
    per_task: dict[str, int] = field(default_factory=dict)
    unused: int = 0
    gmacs: float = 0.0
    #: the same model in its official checkpoint layout (InvPT, TaskPrompter), and published figures
    official: int | None = None
    published: str | None = None
    #: parameters the optimiser updates and those it does not (a frozen encoder, LoRA's base weights)
    trainable: int = 0
    frozen: int = 0

    @property
    def gflops(self) -> float:
        """2 FLOPs per multiply-add (PyTorch's convention)."""
        return 2 * self.gmacs

    def format(self) -> str:
        """A small table."""
        lines = [
            f"architecture {self.arch} (backbone {self.backbone}) at {self.size[0]}×{self.size[1]}",
            f"parameters: {self.total:,} ({self.total / 1e6:.2f} M)",
            f"  shared: {self.shared:,} ({self.shared / 1e6:.2f} M)",
        ]
        lines += [f"  {task}: {count:,} ({count / 1e6:.2f} M)" for task, count in self.per_task.items()]
        if self.frozen:
            lines.append(
                f"  trained: {self.trainable:,} ({self.trainable / 1e6:.2f} M); frozen: {self.frozen:,} ({self.frozen / 1e6:.2f} M)"
            )
        if self.unused:
            lines.append(f"  reached by no task's output: {self.unused:,}")
        if self.official is not None:
            lines.append(
                f"official checkpoint layout: {self.official:,} ({self.official / 1e6:.2f} M; "
                f"{self.official - self.total:+,}: parameters its forward never uses, two-class heads)"
            )
        if self.published:
            lines.append(f"published: {self.published}")
        lines.append(
            f"compute: {self.gmacs:.2f} GMACs (the papers' 'GFLOPs', fvcore's convention) = {self.gflops:.2f} GFLOPs (2 per multiply-add)"
        )
        return "\n".join(lines)


def input_size(config: Config) -> tuple[int, int]:
    """The config's training resolution: the crop, else the evaluation pad, else the dataset's options."""
    if config.data.augment.crop is not None:
        return tuple(config.data.augment.crop)
    if config.data.eval_pad is not None:
        return tuple(config.data.eval_pad)
    options = config.data.options
    if "height" in options and "width" in options:
        return int(options["height"]), int(options["width"])
    if "size" in options and options["size"] is not None:
        return tuple(options["size"])
    raise ConfigError(
        "the config sets no resolution (data.augment.crop, data.eval_pad or data.options height/width): give one with --size H W"
    )


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors inside an output: itself, or those of a list, tuple or dataclass (an instance task's output)."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for field in dataclasses.fields(value) for t in _tensors(getattr(value, field.name))]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def parameter_reach(model: torch.nn.Module, size: tuple[int, int]) -> dict[str, set[str]]:
    """Task → names of the parameters its outputs (final and aux) depend on, from one backward per task (frozen
    parameters included: their ``requires_grad`` is switched on for the count and back after)."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        return _reach(model, size)
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _reach(model: torch.nn.Module, size: tuple[int, int]) -> dict[str, set[str]]:
    names = {p: n for n, p in model.named_parameters() if p.requires_grad}
    model.eval()
    image = torch.randn(1, 3, *size)
    output = model(image)
    reach: dict[str, set[str]] = {}
    tasks = list(output.final)
    for k, task in enumerate(tasks):
        targets = [output.final[task]] + [stage[task] for stage in output.aux.values() if task in stage]
        total = sum(t.float().sum() for t in _tensors(targets))
        params = list(names)
        grads = torch.autograd.grad(total, params, retain_graph=k < len(tasks) - 1, allow_unused=True)
        reach[task] = {names[p] for p, g in zip(params, grads) if g is not None}
    return reach


def count_macs(model: torch.nn.Module, size: tuple[int, int]) -> float:
    """Multiply-adds (×1e9) of one evaluation-mode forward pass at batch 1.

    Attention runs through ``scaled_dot_product_attention``'s math backend here: PyTorch's counter
    has no formula for the fused CPU kernel and would leave attention out. Layers compute as the
    architecture writes them (``layers.as_written``: no algebraic shortcut such as InvPT's factored fusion).
    """
    from contextlib import nullcontext

    from torch.utils.flop_counter import FlopCounterMode

    from scenemtl.models.layers import as_written

    try:  # PyTorch ≥ 2.3; before it, attention stays uncounted
        from torch.nn.attention import SDPBackend, sdpa_kernel

        math_attention = sdpa_kernel(SDPBackend.MATH)
    except ImportError:
        math_attention = nullcontext()
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), math_attention, as_written(), counter:
        model(torch.randn(1, 3, *size))
    return counter.get_total_flops() / 2 / 1e9


def model_info(config: Config, size: tuple[int, int] | None = None, reach_size: tuple[int, int] = (64, 64)) -> ModelInfo:
    """Build the config's model (random weights) and count it; ``reach_size`` is the (small) input of
    the attribution passes, ``size`` (default: the config's resolution) that of the compute count."""
    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.models import build_model

    size = tuple(size) if size is not None else input_size(config)
    model_config = config.model.model_copy(deep=True)
    model_config.backbone.weights = None
    tasks = build_tasks(config, dataset_info(config))
    model = build_model(model_config, tasks)
    reach = parameter_reach(model, reach_size)
    counts = {n: p.numel() for n, p in model.named_parameters()}
    owners: dict[str, list[str]] = {n: [t for t, names in reach.items() if n in names] for n in counts}
    per_task = {t: sum(counts[n] for n, o in owners.items() if o == [t]) for t in tasks}
    from scenemtl.models.official import official_parameter_count

    return ModelInfo(
        arch=config.model.arch,
        backbone=config.model.backbone.name,
        size=size,
        total=sum(counts.values()),
        shared=sum(counts[n] for n, o in owners.items() if len(o) > 1),
        per_task=per_task,
        unused=sum(counts[n] for n, o in owners.items() if not o),
        gmacs=count_macs(model, size),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        frozen=sum(p.numel() for p in model.parameters() if not p.requires_grad),
        official=official_parameter_count(model),
        published=published(config.model.arch, config.model.backbone.name, config.data.name),
    )


def published(arch: str, backbone: str, dataset: str) -> str | None:
    """The published figures of an architecture on its backbone (its registration's ``published``), naming their
    dataset when it is another. Only NYUD figures exist so far (none found for PASCAL-Context)."""
    from scenemtl.models import MODELS

    found = getattr(MODELS.get(arch), "published", {}).get(backbone.split(".")[0])
    if found is None:
        return None
    where, text = found
    return text if where == dataset else f"none for {dataset}; on {where}: {text}"
