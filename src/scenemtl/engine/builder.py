"""Build the parts of an experiment from its config, in the order data flows."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from scenemtl.config import Config
from scenemtl.data import DATASETS, DatasetInfo, DenseDataset, transforms as T
from scenemtl import malloc
from scenemtl.data.loader import AugmentedDataset, EpochSampler, ShardSampler, collate, worker_init
from scenemtl.engine.checkpoint import CheckpointMeta, load_weights, read_meta
from scenemtl.errors import ConfigError, DataError
from scenemtl.tasks.protocols import task_options
from scenemtl.models import build_model
from scenemtl.models.layers.winograd import set_max_tile
from scenemtl.registry import check_options
from scenemtl.tasks import Task, build_task


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def select_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device that is absent is an error naming ``option``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{option}: unknown device '{name}'. Use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{option} is '{name}' but no CUDA device is available here. Use cpu or auto.")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{option} is '{name}' but only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1}).")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"{option} is 'mps' but MPS is not available here. Use cpu or auto.")
    return device


def dataset_info(config: Config) -> DatasetInfo:
    """The dataset's description, without loading it; its normalisation is the encoder's where
    ``model.backbone.normalisation`` asks for it (``input_normalisation``)."""
    return with_normalisation(DATASETS.get(config.data.name).info, config)


def input_normalisation(config: Config) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) the encoder's weights expect, when ``model.backbone.normalisation`` (auto: for a foundation
    encoder, ``models/backbones/presets.py``) says the images should be normalised so; else None (the dataset's)."""
    backbone = config.model.backbone
    if backbone.normalisation == "dataset":
        return None
    from scenemtl.models.backbones.presets import foundation

    if backbone.normalisation == "auto":
        found = foundation(backbone.name) if timm_name(backbone.name) else None
        return None if found is None else (found.mean, found.std)
    import timm

    cfg = timm.models.get_pretrained_cfg(backbone.name) if timm_name(backbone.name) else None
    if cfg is None:
        raise ConfigError(f"model.backbone.normalisation: weights, but timm records no normalisation for '{backbone.name}'")
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def timm_name(name: str) -> bool:
    """Whether timm knows ``name`` (architectures that build their own encoder keep the default name)."""
    import timm

    return bool(timm.is_model(name))


def with_normalisation(info: DatasetInfo, config: Config) -> DatasetInfo:
    """``info`` with the encoder's normalisation when ``input_normalisation`` gives one."""
    found = input_normalisation(config)
    if found is None:
        return info
    import dataclasses

    mean, std = found
    return dataclasses.replace(info, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def eval_info(config: Config) -> DatasetInfo:
    """The description of the dataset evaluation reads (``data.eval_dataset`` when set), checked against the training one."""
    info = dataset_info(config)
    ref = config.data.eval_dataset
    if ref is None:
        return info
    other = with_normalisation(DATASETS.get(ref.name).info, config)
    for task in config.tasks:
        if task not in other.tasks:
            raise ConfigError(f"data.eval_dataset: '{ref.name}' has no labels for task '{task}'; it provides {list(other.tasks)}")
        if info.class_names.get(task) != other.class_names.get(task):
            raise ConfigError(
                f"data.eval_dataset: '{ref.name}' names the classes of '{task}' {other.class_names.get(task)}, the training "
                f"dataset '{info.name}' {info.class_names.get(task)}; evaluation needs the same classes in the same order"
            )
    return other


def build_tasks(config: Config, info: DatasetInfo) -> dict[str, Task]:
    """One Task per configured task, with class names and palettes from the dataset."""
    missing = [name for name in config.tasks if name not in info.tasks]
    if missing:
        raise ConfigError(f"dataset '{info.name}' has no labels for task(s) {missing}; it provides {list(info.tasks)}")
    return {
        name: build_task(
            name,
            task_options(config.eval.protocol, info.name, name, cfg.options),
            info.class_names,
            info.palettes,
            protocol=config.eval.protocol,
            types=info.task_types,
        )
        for name, cfg in config.tasks.items()
    }


def build_dataset(config: Config, split: str, evaluation: bool | None = None) -> DenseDataset:
    """The configured dataset's ``split`` with the configured tasks.

    ``evaluation`` (default: any split but ``data.train_split``) adds the evaluation targets the
    tasks' metrics need and the dataset has (``Task.eval_target``, e.g. SEISM's label images).
    """
    from scenemtl.tasks import task_class

    evaluating = evaluation if evaluation is not None else split != config.data.train_split
    ref = config.data.eval_dataset if evaluating else None
    if ref is not None:
        eval_info(config)  # the same tasks and classes
        name, options, key = ref.name, ref.options, "data.eval_dataset"
        root = _expand_root(ref.root, f"{key}.root")
        split = ref.split or split
    else:
        name, options, key, root = config.data.name, config.data.options, "data", config.data_root
    cls = DATASETS.get(name)
    check_options(cls, options, f"{key}.options", ("root", "split", "tasks"), owner=name)
    if root is not None and not Path(root).is_dir():
        raise DataError(f"{key}.root: dataset folder not found: {root}. Give the folder the archive was extracted to.")
    dataset = cls(root=root, split=split, tasks=list(config.tasks), **options)
    if evaluating:
        types = dataset.info.task_types
        dataset.request_eval_targets(task_class(name, cfg.options, types).eval_target for name, cfg in config.tasks.items())
    return dataset


def _expand_root(root: str | None, key: str) -> str | None:
    """A dataset folder with environment variables expanded (as ``data.root``)."""
    from scenemtl.config import _expand

    return _expand(root, key) if root else None


def build_transform(config: Config, tasks: Mapping[str, Task], info: DatasetInfo, train: bool) -> T.Compose:
    """Training: scale, crop, flip, colour jitter, normalise, pad a short crop (the seeds' order, see
    ``data/transforms.py``). Evaluation: normalise and pad only."""
    augment = config.data.augment
    steps: list = []
    if train:
        crop = augment.crop if augment.crop is not None else ("original" if augment.scale is not None else None)
        if augment.scale is not None or crop is not None:
            steps.append(T.RandomScaleCrop(tasks, augment.scale, crop, augment.cat_max_ratio, augment.adjust_depth))
        if augment.flip:
            steps.append(T.RandomHorizontalFlip(tasks))
        if augment.photometric:
            steps.append(T.PhotometricDistortion())
    steps.append(T.Normalize(info.mean, info.std))
    if train and augment.crop is not None:
        steps.append(T.Pad(tasks, size=augment.crop))
    elif train and augment.scale is not None:
        steps.append(T.Pad(tasks, original=True))
    if not train and config.data.eval_pad is not None:
        steps.append(T.Pad(tasks, size=config.data.eval_pad))
    return T.Compose(steps)


def loader_options(config: Config, persistent: bool) -> dict:
    """The DataLoader settings shared by training and evaluation: ``collate`` (its batches leave the workers
    as ``data.worker_transfer`` says), workers (``persistent``: kept alive across epochs) with
    ``train.allocator``'s malloc settings, page-locked batches when the device is a GPU."""
    workers = config.data.num_workers
    tuned = config.train.allocator != "system"  # (lean: the trainer's process lean, the workers tuned)
    if tuned:
        malloc.tune(config.train.allocator)  # the main process loads the samples itself, or decodes the workers' batches
    pin = config.data.pin_memory and torch.cuda.is_available() and select_device(config.train.device).type == "cuda"
    transfer = config.data.worker_transfer
    pipe = workers > 0 and (transfer == "pipe" or (transfer == "auto" and not pin))
    return {
        "collate_fn": functools.partial(collate, pipe=True) if pipe else collate,
        "num_workers": workers,
        "worker_init_fn": functools.partial(worker_init, tuned=tuned) if workers > 0 else None,
        "persistent_workers": persistent and workers > 0,
        "pin_memory": pin,
    }


def _groups_of(config: Config, dataset: DenseDataset) -> list[list[int]] | None:
    """The dataset's groups when ``data.batching`` is grouped (else None)."""
    if config.data.batching != "grouped":
        return None
    source = getattr(dataset, "groups", None) or getattr(getattr(dataset, "dataset", None), "groups", None)
    if source is None:
        raise ConfigError(
            f"data.batching: grouped needs a dataset with groups (e.g. decathlon's domains); '{config.data.name}' has none, "
            "use batching: mixed"
        )
    groups: list[list[int]] = source()
    return groups


def epochs_to_steps(config: Config, dataset: DenseDataset, world: int = 1) -> Config:
    """``config`` with ``train.steps`` = ``train.epochs`` × optimiser steps per epoch of ``dataset`` (as the training
    sampler deals it: groups padded to whole batches, every process its share, ``train.accumulation`` micro-batches
    per step), and ``train.decay_every`` from ``train.decay_every_epochs``."""
    cfg = config.train
    if cfg.epochs is None:
        return config
    sampler = EpochSampler(len(dataset), config.seed, num_replicas=world, block=config.data.batch_size, groups=_groups_of(config, dataset))
    per_epoch = max(1, sampler.per_replica() // (config.data.batch_size * cfg.accumulation))
    update: dict[str, Any] = {"steps": cfg.epochs * per_epoch}
    if cfg.decay_every_epochs is not None:
        update["decay_every"] = cfg.decay_every_epochs * per_epoch
    return config.model_copy(update={"train": cfg.model_copy(update=update)})


def train_loader(config: Config, dataset: DenseDataset, transform: T.Compose, rank: int = 0, world: int = 1):
    """A loader over ``(index, seed)`` keys from a resumable per-epoch sampler."""
    if len(dataset) == 0:
        raise DataError(f"the training split '{dataset.split}' of dataset '{config.data.name}' is empty")
    groups = _groups_of(config, dataset)
    sampler = EpochSampler(
        len(dataset), config.seed, shuffle=True, rank=rank, num_replicas=world, block=config.data.batch_size, groups=groups
    )
    loader = DataLoader(
        AugmentedDataset(dataset, transform, keep_stored=config.data.decode_on_device),
        batch_size=config.data.batch_size,
        sampler=sampler,
        # a loader of its own RNG: creating an iterator must not draw from torch's global one,
        # or a resumed run (one more iterator) would drift from an uninterrupted one
        generator=torch.Generator().manual_seed(config.seed),
        drop_last=True,  # the sampler pads each rank's share to whole batches
        **loader_options(config, persistent=True),
    )
    return loader, sampler


def eval_loader(config: Config, dataset: DenseDataset, transform: T.Compose, rank: int = 0, world: int = 1) -> DataLoader:
    """A loader over this rank's share of the evaluation split, in order (every sample exactly once overall)."""
    return DataLoader(
        AugmentedDataset(dataset, transform),
        batch_size=config.data.eval_batch_size,
        sampler=ShardSampler(len(dataset), rank, world),
        generator=torch.Generator().manual_seed(config.seed),
        **loader_options(config, persistent=False),
    )


def check_eval_pad(config: Config, dataset: DenseDataset) -> None:
    """Before training: the first evaluation image must fit ``data.eval_pad`` (found out at the end otherwise)."""
    if config.data.eval_pad is None or len(dataset) == 0:
        return
    height, width = dataset.sample(0)["image"].shape[-2:]
    if height > config.data.eval_pad[0] or width > config.data.eval_pad[1]:
        raise ConfigError(
            f"data.eval_pad {list(config.data.eval_pad)} is smaller than the evaluation image {height}×{width}; "
            "evaluation pads and never resizes, so give a size at least as large"
        )


def tasks_from_meta(meta: CheckpointMeta) -> dict[str, Task]:
    """A model's tasks, rebuilt from what its checkpoint recorded (no dataset needed)."""
    config = meta.config
    palettes = {k: np.asarray(v, dtype=np.uint8) for k, v in meta.palettes.items()}
    from scenemtl.data import DATASETS

    types = DATASETS.get(config.data.name).info.task_types if config.data.name in DATASETS.names() else {}
    return {
        name: build_task(
            name,
            task_options(config.eval.protocol, config.data.name, name, cfg.options),
            meta.class_names,
            palettes,
            protocol=config.eval.protocol,
            types=types,
        )
        for name, cfg in config.tasks.items()
    }


def model_from_checkpoint(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Task], CheckpointMeta]:
    """Rebuild a model and its tasks from a checkpoint alone (no dataset or config file needed)."""
    meta = read_meta(path)
    config = meta.config.model_copy(deep=True)
    config.model.backbone.weights = None  # the checkpoint has the trained weights
    tasks = tasks_from_meta(meta)
    model = set_max_tile(build_model(config.model, tasks), config.train.winograd)
    load_weights(model, path)
    return model.to(device).eval(), tasks, meta


def partial_labels(config: Config, dataset: DenseDataset, tasks: Mapping[str, Task], write: bool = True) -> DenseDataset:
    """The training split under ``data.labels`` (unchanged with ``setting: full``).

    The availability map is read from ``data.labels.file`` when it exists (our JSON, or a
    published ``.pth``/``.npy`` flag file), else generated from the seed and written to that file,
    or to ``<run>/labels.json`` when no file is named (``write``: only the main process writes).
    """
    from scenemtl.data import partial

    labels_config = config.data.labels
    if labels_config.setting == "full":
        return dataset
    names = list(tasks)
    path = Path(labels_config.file) if labels_config.file else config.run_dir / "labels.json"
    if labels_config.file and path.exists():
        if path.suffix in (".pth", ".npy"):
            order = labels_config.flag_order or list(partial.PASCAL_FLAG_ORDER)
            labels = {k: [t for t in v if t in names] for k, v in partial.import_flags(path, order).items()}
        else:
            labels = partial.read_availability(path, names)
    else:
        ids = [dataset.sample_id(i) for i in range(len(dataset))]
        labels = partial.generate(ids, names, labels_config.setting, labels_config.seed)
        if write:
            partial.write_availability(path, labels, names, labels_config.setting, labels_config.seed)
    return partial.PartialLabels(dataset, labels, {name: task.unlabelled for name, task in tasks.items()})
