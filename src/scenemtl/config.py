"""Typed, validated experiment configuration: YAML with ``base:`` inheritance and dotted overrides.

Inheritance. A config file may name ``base:`` (a file, or a list of files, relative to it). The
bases are read first (each following its own ``base:``), later bases merged over earlier ones, and
the file's own mapping is merged over the result:

- mappings deep-merge, key by key: a child that writes ``train: {steps: 20}`` keeps the base's
  ``train.lr``, and a child that writes ``tasks: {semseg: {weight: 2}}`` keeps *every* task of the
  base, changing only semseg's weight;
- everything else (lists, scalars, null) replaces the base's value: ``scale: [0.5, 1.0]`` over
  ``scale: [0.75, 1.5]`` is ``[0.5, 1.0]``, never a concatenation.

Replacing a mapping. To replace a base's mapping wholesale instead of merging into it, mark it in
the child, in either of two equivalent ways::

    tasks:                              # the reserved key, inside the mapping
      _replace_: true
      semseg: {weight: 1}

    tasks: !replace {semseg: {weight: 1}}              # the YAML tag, on the mapping
    data: {augment: !replace {crop: [256, 256]}}       # nested: augment's other keys go back to defaults

Only the marked mapping is replaced; its siblings and parents still merge (``data.batch_size`` of
the base survives above). ``_replace_`` must be exactly ``true``; it is removed before validation
and is therefore reserved in every mapping of a config file. ``!replace`` may also tag a list
(``scale: !replace [0.5, 1.0]``), where it changes nothing since lists always replace. Both are
no-ops in a file without a base, and a marker replaces what the file's own bases give (between
several files listed under ``base:``, later ones still merge over earlier ones). Files are read with
a ``yaml.SafeLoader`` subclass that knows only the ``!replace`` tag.

Narrowing the tasks. Because mappings merge, a child cannot drop tasks by listing fewer of them:
write ``tasks: !replace {...}`` (or ``_replace_: true`` inside ``tasks``) to train exactly the
tasks the child names. On the command line, ``--set tasks={depth: {weight: 2}}`` already replaces
the task set (overrides assign, they never merge).

Over 400 lines because the schema is one file: every section's pydantic model with its checks,
so that one page shows every key a config may have.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scenemtl.errors import ConfigError, did_you_mean


class Strict(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(BaseModel):
    """One task: its loss weight and task-specific options (e.g. ``pos_weight`` for edges)."""

    model_config = ConfigDict(extra="allow")
    weight: float = Field(1.0, ge=0)

    @property
    def options(self) -> dict[str, Any]:
        """Everything but the weight, passed to the task's constructor."""
        return dict(self.model_extra or {})


class AugmentConfig(Strict):
    """Training augmentation (evaluation only normalises and pads)."""

    scale: tuple[float, float] | None = None
    adjust_depth: bool = False
    crop: tuple[int, int] | None = None  # None: the original image size
    cat_max_ratio: float = Field(0.75, gt=0, le=1)
    flip: bool = True
    photometric: bool = False

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, scale: tuple[float, float] | None) -> tuple[float, float] | None:
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise ValueError(f"must be [low, high] with 0 < low ≤ high, got {list(scale)}")
        return scale

    @field_validator("crop")
    @classmethod
    def _crop_size(cls, crop: tuple[int, int] | None) -> tuple[int, int] | None:
        if crop is not None and min(crop) < 1:
            raise ValueError(f"must be [height, width] of positive sizes, got {list(crop)}")
        return crop


class LabelsConfig(Strict):
    """Which training labels are used: all, or a partial-label setting (see data/partial.py)."""

    setting: Literal["full", "one-label", "random-labels"] = "full"
    seed: int = 0
    # a JSON availability map to read (written there when missing), or a published .pth/.npy
    # flag file to import; None: generated from the seed and written to <run>/labels.json
    file: str | None = None
    # task order of an imported flag file (default: the published PASCAL-Context order)
    flag_order: list[str] | None = None
    # the per-sample loss is multiplied by (number of tasks / number of labelled tasks), as
    # DiffusionMTL's SemiSupervisedMultiTaskLoss does
    rescale: bool = True


class DatasetRef(Strict):
    """Another dataset: its registered name, folder and options (as ``data``'s)."""

    name: str
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    split: str | None = None


class DataConfig(Strict):
    """Which dataset, where it lives, and how it is batched."""

    name: str = "synthetic"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(16, ge=1)
    num_workers: int = Field(0, ge=0)
    # page-locked batches for faster host-to-GPU copies (only with a CUDA device)
    pin_memory: bool = True
    # training batches travel as the 8-bit values of the files and the colour jitter, and the
    # table lookups that decode them (targets, normalisation) run on the training device; the
    # values are those of decoding in the loader (data/loader.py: StoredBatch)
    decode_on_device: bool = True
    # how a worker's batch reaches the main process: 'pipe' (pickled bytes through the worker's result
    # pipe: no fresh shared-memory pages to fault in per batch; data/loader.py: Shipment), 'shared'
    # (torch's shared memory), 'auto': the pipe unless batches are page-locked for a GPU
    worker_transfer: Literal["auto", "pipe", "shared"] = "auto"
    # 'grouped': batches never mix the dataset's groups (its ``groups()``, e.g. the decathlon's domains),
    # which each epoch visits one after another (MTAN's many-to-many loop); 'mixed': one shuffle of all
    batching: Literal["mixed", "grouped"] = "mixed"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    eval_pad: tuple[int, int] | None = None
    # evaluate on another dataset with the same tasks and classes (domain adaptation: train on the
    # labelled source, select and score on the target's val split); its split defaults to the one asked
    eval_dataset: DatasetRef | None = None
    labels: LabelsConfig = Field(default_factory=LabelsConfig)


class LoraConfig(Strict):
    """LoRA adapters on the encoder's linear layers (``models/backbones/tuning.py``)."""

    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    # last name components of the linear layers to adapt (timm: qkv, proj, fc1, fc2); None: every linear layer of the blocks
    targets: list[str] | None = None


class BackboneConfig(Strict):
    """A timm backbone: name, weights (None, 'timm' for the hub, or a local file) and timm options."""

    name: str = "test_resnet"
    weights: str | None = None
    out_indices: tuple[int, ...] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # 'concat': every level of stride ≥ 4 upsampled to 1/4 and concatenated into one map (the HRNet
    # representation of ATRC, MTI-Net's PAD-Net baseline and HRNet segmentation heads)
    fuse: Literal["none", "concat"] = "none"
    # a ViT's maps (one stride, the patch's) as a pyramid at strides 4/8/16/32 of the input ('multilevel':
    # models/backbones/features.py MultiLevelNeck); 'auto': for the architectures built on a pyramid
    # (mtinet, padnet, atrc), not for those that read a ViT's one stride (hps, xtam, invpt)
    neck: Literal["auto", "none", "multilevel"] = "auto"
    # the input normalisation: the dataset's, the one the weights expect (timm's pretrained_cfg mean/std), or auto:
    # the weights' for foundation encoders (DINOv2/v3, SigLIP 2, EVA-02, PE: models/backbones/presets.py), else the dataset's
    normalisation: Literal["auto", "dataset", "weights"] = "auto"
    # train the decoders on a fixed encoder (its parameters get no gradient)
    freeze: bool = False
    # LoRA adapters on the encoder (its own weights frozen): {rank, alpha, targets}
    lora: LoraConfig | None = None


class ModelConfig(Strict):
    """The architecture, its backbone and its options (checked and typed by the architecture's factory:
    ``head_channels`` and ``decoder_stride`` are options of the architectures that have them)."""

    arch: str = "hps"
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    options: dict[str, Any] = Field(default_factory=dict)
    # start from the weights of a scenemtl checkpoint of this model (a run folder, step_N/, model.safetensors):
    # a new optimiser and schedule on trained weights (MTAN's decathlon phase 2); resuming a run ignores it
    weights: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        for key in ("head_channels", "decoder_stride"):
            if isinstance(data, dict) and key in data:
                raise ConfigError(
                    f"model.{key} is now an option of the architectures that use it: write "
                    f"model.options.{key} (model.arch=hps, stl, padnet, mtinet, atrc, cross_stitch, "
                    "mtan_deeplab take it; the others have their own widths)"
                )
        return data


class BalancerConfig(Strict):
    """How per-task losses become gradients (``fixed`` uses the tasks' weights)."""

    name: str = "fixed"
    options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(Strict):
    """Optimisation and the training loop."""

    class Selection(Strict):
        """``train.selection``: keep the checkpoint that scores best on selection data, never the reported split.

        The selection data is either a dataset split other than ``data.val_split`` (and
        ``data.train_split``), or ``holdout`` training images drawn with ``seed`` and removed from
        training (their ids go to ``<run>/selection_ids.json``). It is scored every
        ``train.eval_every`` steps and at the last step; the best weights go to
        ``checkpoints/best/`` and the final report on ``data.val_split`` uses them.
        """

        # 'delta_m' (needs 'reference:') or '<task>.<metric>', e.g. 'semseg.miou' (direction from the metric)
        metric: str
        split: str | None = None
        holdout: int | None = Field(None, ge=1)
        seed: int = 0  # the holdout draw (its own seed: every run seed holds out the same images)

        @model_validator(mode="before")
        @classmethod
        def _known_keys(cls, data: Any) -> Any:
            if isinstance(data, dict):
                for key in data:
                    if key not in cls.model_fields:
                        raise ValueError(f"unknown key '{key}'.{did_you_mean(str(key), cls.model_fields)}")
            return data

        @field_validator("metric")
        @classmethod
        def _metric_form(cls, metric: str) -> str:
            if metric != "delta_m" and not re.fullmatch(r"[^.\s]+\.\S+", metric):
                raise ValueError("must be 'delta_m' (needs 'reference:') or '<task>.<metric>' such as 'semseg.miou'")
            return metric

        @model_validator(mode="after")
        def _one_source(self) -> TrainConfig.Selection:
            if (self.split is None) == (self.holdout is None):
                given = "both" if self.split is not None else "neither"
                raise ValueError(
                    f"give exactly one of split (a dataset split other than data.val_split) or holdout (a number "
                    f"of training images to set aside), not {given}: e.g. train.selection.holdout=100"
                )
            return self

    steps: int = Field(500, ge=1)
    # train for this many passes over the training split instead (steps = epochs × batches per epoch, counted
    # from the dataset when training starts: MTAN's decathlon schedules are in epochs of uneven domains)
    epochs: int | None = Field(None, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    # SGD with Nesterov momentum (MTAN's decathlon recipe)
    nesterov: bool = False
    lr: float = Field(3e-3, gt=0)
    # the learning rate of the shared encoder (the model's shared parameters), when it differs from lr
    # (DenseMTL: 1e-5 for the backbone, 5e-5 for the rest); the schedule scales both
    backbone_lr: float | None = Field(None, gt=0)
    # layer-wise learning-rate decay of the encoder: block k of L at (base rate) × layer_decay^(L − k), as timm's
    # param_groups_layer_decay (BEiT, MAE fine-tuning of foundation encoders); None: off
    layer_decay: float | None = Field(None, gt=0, le=1)
    # Adam's and AdamW's (beta1, beta2)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0)
    warmup_steps: int = Field(20, ge=0)
    # learning-rate schedule after warm-up: poly (InvPT, ATRC) or step decay (MTAN's StepLR)
    schedule: Literal["poly", "step"] = "poly"
    poly_power: float = Field(0.9, ge=0)
    # step schedule: multiply the rate by decay_gamma every decay_every optimiser steps
    decay_every: int | None = Field(None, ge=1)
    # the same in epochs (with train.epochs; MTAN's decathlon StepLR(50 epochs))
    decay_every_epochs: int | None = Field(None, ge=1)
    decay_gamma: float = Field(0.5, gt=0)
    grad_clip: float | None = Field(None, gt=0)
    init_output_bias: bool = True
    # fp16 uses a gradient scaler; bf16 needs none
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # "tuned": glibc malloc keeps freed memory for the next step and sample, in the trainer and its
    # loader workers (scenemtl/malloc.py; about 1.4× on a CPU step); "system": malloc's defaults; "lean": the
    # trainer's blocks of 1 MiB or more are given back to the system when freed (the resident set follows the
    # live tensors, for runs bound by memory, with activation checkpointing; slower: each is faulted in again),
    # its loader workers tuned
    allocator: Literal["tuned", "system", "lean"] = "tuned"
    # micro-batches per optimiser step: global batch = data.batch_size × processes × accumulation
    accumulation: int = Field(1, ge=1)
    channels_last: bool = False
    compile: bool = False
    activation_checkpointing: bool = False
    # wide 3×3 convolutions on a CPU in float32 (layers.winograd): "f4", Winograd's F(4×4, 3×3) where it pays
    # and F(2×2, 3×3) on small maps (F(4×4)'s rounding error about the direct convolution's); "f2", F(2×2) only
    # (less rounding error than the direct convolution); "off", the direct convolution. Also used by evaluate
    # and predict from this run's checkpoints
    winograd: Literal["f4", "f2", "off"] = "f4"
    # several processes (torchrun): SyncBatchNorm (CUDA only), and DDP's unused-parameter search
    # (on by itself for architectures that need it)
    sync_bn: bool = False
    find_unused_parameters: bool = False
    # compute only the tasks labelled in each micro-batch (models that route tasks: mtan_wrn, stl): null =
    # with data.batching grouped (one domain per batch, MTAN's decathlon loop, which runs only the batch's
    # domain's branch). The other tasks' parameters get a zero gradient (weight decay and momentum as when
    # every task is computed); only their batch norms no longer see the batch. Off in distributed runs
    route_tasks: bool | None = None
    # a non-finite loss: stop with an error naming the task, or skip the step and count it
    nonfinite: Literal["error", "skip"] = "error"
    device: str = "auto"
    log_every: int = Field(20, ge=1)
    eval_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, ge=1)
    log_images: bool = True
    # Weights & Biases project name (needs `pip install 'scenemtl[wandb]'`); None: off
    wandb: str | None = None
    # None: the last checkpoint is the result. Else {metric, split | holdout, seed}: see Selection
    selection: Selection | None = None
    # wall-clock budget of this process: after the step that exceeds it, save and stop as SIGTERM
    # does (exit code 75, resumable); seconds, or "H:MM:SS"
    time_limit: float | None = Field(None, gt=0)

    @field_validator("time_limit", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        if isinstance(value, str) and ":" in value:
            parts = value.split(":")
            if len(parts) > 3 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(f"must be seconds or 'H:MM:SS', got {value!r}")
            seconds = 0
            for part in parts:
                seconds = 60 * seconds + int(part)
            return seconds
        return value

    @model_validator(mode="after")
    def _selection_needs_evaluations(self) -> TrainConfig:
        if self.selection is not None and self.eval_every == 0:
            raise ValueError(
                "train.selection scores the selection data every train.eval_every steps, which is 0: "
                "set train.eval_every to a positive number of steps (e.g. 100)"
            )
        return self


class EvalConfig(Strict):
    """How results are scored: a named protocol (``tasks/protocols.py``) sets every metric variant."""

    # None: each task's own defaults; a name (invpt, mtinet, atrc, densemtl, mtan, sak) sets the
    # variants of that codebase's tables; options written under tasks.<name> still override
    protocol: str | None = None
    # re-estimate the batch-norm statistics per group of the evaluation split (the decathlon's domains) on the
    # training split's same group before scoring it (MTAN's decathlon test protocol, statistics only:
    # engine/recalibrate.py)
    recalibrate_bn: bool = False

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, protocol: str | None) -> str | None:
        from scenemtl.tasks.protocols import PROTOCOLS

        if protocol is not None and protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol '{protocol}'.{did_you_mean(protocol, list(PROTOCOLS))} Known: {', '.join(PROTOCOLS)}")
        return protocol


class ObjectiveConfig(Strict):
    """A training setting that adds to the task losses (``scenemtl.extension``: ``register_objective``)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_objective(cls, name: str) -> str:
        import scenemtl.settings  # noqa: F401  (registers the objectives)
        from scenemtl.extension import OBJECTIVES

        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective '{name}'.{did_you_mean(name, OBJECTIVES.names())}")
        return name


class Config(Strict):
    """A whole experiment. The defaults are the embedded one: five tasks on synthetic scenes, HPS."""

    name: str = "experiment"
    seed: int = 0
    out_dir: str = "runs/{name}"
    tasks: dict[str, TaskConfig] = Field(
        default_factory=lambda: {
            "semseg": TaskConfig(weight=1.0),
            "depth": TaskConfig(weight=1.0),
            "normals": TaskConfig(weight=1.0),
            "edge": TaskConfig(weight=10.0, pos_weight=0.95),
            "saliency": TaskConfig(weight=1.0),
        }
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    balancer: BalancerConfig = Field(default_factory=BalancerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    reference: str | dict[str, dict[str, float]] | None = None
    # training settings beyond the task losses (self_supervised_depth, adversarial, min_entropy)
    objectives: list[ObjectiveConfig] = Field(default_factory=list)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        from scenemtl.tasks import TASKS

        if not tasks:
            raise ValueError("at least one task is needed")
        from scenemtl.data import DATASETS

        # a task is named by its type, or by a dataset's task of a declared type (the decathlon's domains), or
        # carries its type (tasks.<name>.type)
        declared = {name for dataset in DATASETS.names() for name in DATASETS.get(dataset).info.task_types}
        for name, task in tasks.items():
            kind = task.options.get("type")
            if kind is not None and kind not in TASKS:
                raise ValueError(f"tasks.{name}.type: unknown task type '{kind}'.{did_you_mean(str(kind), TASKS.names())}")
            if name not in TASKS and name not in declared and kind is None:
                raise ValueError(f"unknown task '{name}'.{did_you_mean(name, [*TASKS.names(), *sorted(declared)])}")
        return tasks

    @property
    def run_dir(self) -> Path:
        """The output folder of this experiment."""
        return Path(_expand(self.out_dir.replace("{name}", self.name), "out_dir"))

    @property
    def data_root(self) -> str | None:
        """``data.root`` with environment variables expanded."""
        return _expand(self.data.root, "data.root") if self.data.root else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what checkpoints store)."""
        return self.model_dump(mode="json")


_ENV = re.compile(r"\$\{?(\w+)\}?")


def _expand(value: str, key: str) -> str:
    missing = [name for name in _ENV.findall(value) if name not in os.environ]
    if missing:
        raise ConfigError(f"'{key}' uses environment variable ${missing[0]}, which is not set. Set it or write the path.")
    return os.path.expanduser(os.path.expandvars(value))


# --------------------------------------------------------------------------------------------
# loading


_REPLACE_KEY = "_replace_"
_REPLACE_TAG = "!replace"


class _ReplaceDict(dict[Any, Any]):
    """A mapping marked by ``!replace`` or ``_replace_: true``: ``_merge`` puts it in place of the base's."""


class _ReplaceList(list[Any]):
    """A list tagged ``!replace``: a marker only, since ``_merge`` replaces every list anyway."""


class _ReplaceScalar:
    """A scalar tagged ``!replace``: kept so the error can name its file and key path."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _construct_replace(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return _ReplaceDict(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return _ReplaceList(loader.construct_sequence(node, deep=True))
    return _ReplaceScalar(loader.construct_scalar(node))


class _ConfigLoader(yaml.SafeLoader):  # type: ignore[misc]  # yaml is untyped here (no types-PyYAML)
    """``yaml.SafeLoader`` plus the ``!replace`` tag (no other tags, nothing unsafe)."""


_ConfigLoader.add_constructor(_REPLACE_TAG, _construct_replace)


def _mark_replacements(value: Any, path: Path, keys: tuple[str, ...] = ()) -> Any:
    """Turn ``_replace_: true`` into ``_ReplaceDict`` (dropping the key), checking every marker.

    ``keys`` is the key path of ``value`` in the file (empty at the top level); errors name the
    file and that path.
    """
    where = ".".join(keys)
    if isinstance(value, _ReplaceScalar):
        raise ConfigError(
            f"config {path}: {where} is tagged {_REPLACE_TAG} but is {value.value!r}; {_REPLACE_TAG} applies "
            f"to a mapping or a list (a single value always replaces the base's): remove the tag"
        )
    if isinstance(value, dict):
        replace = isinstance(value, _ReplaceDict)
        if _REPLACE_KEY in value:
            flag = value[_REPLACE_KEY]
            dotted = f"{where}.{_REPLACE_KEY}" if where else _REPLACE_KEY
            if flag is not True:
                raise ConfigError(
                    f"config {path}: {dotted} must be true (got {flag!r}); write '{_REPLACE_KEY}: true' to replace "
                    f"the base's {where or 'mapping'} wholesale, or remove the key to merge into it"
                )
            replace = True
        if replace and not keys:
            raise ConfigError(
                f"config {path}: {_REPLACE_KEY} / {_REPLACE_TAG} on the whole file would discard everything its "
                f"'base:' gives; mark the mappings to replace (e.g. 'tasks: {_REPLACE_TAG} {{...}}'), or drop 'base:'"
            )
        items = {k: _mark_replacements(v, path, keys + (str(k),)) for k, v in value.items() if k != _REPLACE_KEY}
        return _ReplaceDict(items) if replace else items
    if isinstance(value, list):
        entries = [_mark_replacements(v, path, (*keys[:-1], f"{keys[-1] if keys else ''}[{i}]")) for i, v in enumerate(value)]
        return _ReplaceList(entries) if isinstance(value, _ReplaceList) else entries
    return value


def _plain(value: Any) -> Any:
    """A deep copy with the replace markers turned back into plain dicts and lists."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return copy.deepcopy(value)


def _merge(base: dict[Any, Any], override: dict[Any, Any]) -> dict[Any, Any]:
    """``override`` over ``base``: mappings merge key by key, unless marked replace (``_ReplaceDict``);
    every other value (lists included) replaces the base's. The result holds no markers."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and not isinstance(value, _ReplaceDict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = _plain(value)
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"config {path} inherits from itself through 'base:'")
    if not path.is_file():
        where = f" (named as base by {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        data = yaml.load(path.read_text(), Loader=_ConfigLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values, got {type(data).__name__}")
    data = _mark_replacements(data, path)
    bases = _plain(data.pop("base", None)) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config {path}: 'base' must be a file name or a list of file names, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, _read_yaml(path.parent / base, chain + (path,)))
    return _merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value (e.g. train.lr=1e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config mapping."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
    return data


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The valid keys of the config section at ``loc`` (for 'did you mean' hints)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


def _format(error: ValidationError, source: str) -> str:
    messages = []
    for item in error.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc)
        if item["type"] == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), _fields_at(Config, loc[:-1]))
            messages.append(f"unknown key '{key}'.{hint}")
        else:
            value = item.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            message = item["msg"].removeprefix("Value error, ")
            messages.append(f"'{key}': {message}{shown}")
    return f"invalid config {source}: " + "; ".join(messages)


def validate(data: dict[str, Any], source: str = "") -> Config:
    """Turn a raw mapping into a Config; errors name each bad key and the nearest valid one."""
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format(error, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (following ``base:``), apply ``key=value`` overrides, validate.

    A file's mappings deep-merge over its bases' (lists and single values replace), so a child
    that lists fewer ``tasks`` than its base still trains all of the base's tasks. To narrow the
    tasks, or to replace any other mapping of the base wholesale, mark it in the child:
    ``tasks: !replace {semseg: {weight: 1}}``, or ``_replace_: true`` inside the mapping (see the
    module docstring). A ``_replace_`` other than ``true``, or ``!replace`` on a single value, is a
    ConfigError naming the file and the key path.

    Overrides apply to the complete config (defaults filled in), so ``tasks.edge.weight=5``
    changes one task of the default task set instead of replacing the set, while
    ``tasks={depth: {}}`` assigns a new set; overrides know no replace markers.
    """
    source = str(path) if path else "(defaults)"
    config = validate(_read_yaml(Path(path)) if path is not None else {}, source)
    if not overrides:
        return config
    return validate(apply_overrides(config.to_dict(), overrides), f"{source} with --set overrides")
