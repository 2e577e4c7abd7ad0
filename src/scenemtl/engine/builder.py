"""Build the parts of an experiment from its config, in the order data flows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from scenemtl.config import Config
from scenemtl.data import DATASETS, DatasetInfo, DenseDataset, transforms as T
from scenemtl.data.loader import AugmentedDataset, EpochSampler, collate
from scenemtl.engine.checkpoint import CheckpointMeta, load_weights, read_meta
from scenemtl.errors import ConfigError, DataError
from scenemtl.models import build_model
from scenemtl.registry import check_options
from scenemtl.tasks import Task, build_task


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device '{name}'. Use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available here. Use train.device=cpu or auto.")
    return device


def dataset_info(config: Config) -> DatasetInfo:
    """The dataset's description, without loading it."""
    return DATASETS.get(config.data.name).info


def build_tasks(config: Config, info: DatasetInfo) -> dict[str, Task]:
    """One Task per configured task, with class names and palettes from the dataset."""
    missing = [name for name in config.tasks if name not in info.tasks]
    if missing:
        raise ConfigError(f"dataset '{info.name}' has no labels for task(s) {missing}; it provides {list(info.tasks)}")
    return {name: build_task(name, cfg.options, info.class_names, info.palettes) for name, cfg in config.tasks.items()}


def build_dataset(config: Config, split: str) -> DenseDataset:
    """The configured dataset's ``split`` with the configured tasks."""
    cls = DATASETS.get(config.data.name)
    check_options(cls, config.data.options, "data.options", ("root", "split", "tasks"), owner=config.data.name)
    root = config.data_root
    if root is not None and not Path(root).is_dir():
        raise DataError(f"data.root: dataset folder not found: {root}. Give the folder the archive was extracted to.")
    return cls(root=config.data_root, split=split, tasks=list(config.tasks), **config.data.options)


def build_transform(config: Config, tasks: Mapping[str, Task], info: DatasetInfo, train: bool) -> T.Compose:
    """Training: scale, crop, flip, colour jitter, normalise. Evaluation: normalise and pad only."""
    augment = config.data.augment
    steps: list = [T.ToFloatImage()]
    if train:
        if augment.scale is not None:
            steps.append(T.RandomScale(tasks, augment.scale[0], augment.scale[1], augment.adjust_depth))
        if augment.crop is not None or augment.scale is not None:
            steps.append(T.RandomCrop(tasks, augment.crop, augment.cat_max_ratio))
        if augment.flip:
            steps.append(T.RandomHorizontalFlip(tasks))
        if augment.photometric:
            steps.append(T.PhotometricDistortion())
    steps.append(T.Normalize(info.mean, info.std))
    if not train and config.data.eval_pad is not None:
        steps.append(T.Pad(tasks, size=config.data.eval_pad))
    return T.Compose(steps)


def train_loader(config: Config, dataset: DenseDataset, transform: T.Compose, rank: int = 0, world: int = 1):
    """A loader over ``(index, seed)`` keys from a resumable per-epoch sampler."""
    sampler = EpochSampler(len(dataset), config.seed, shuffle=True, rank=rank, num_replicas=world)
    loader = DataLoader(
        AugmentedDataset(dataset, transform),
        batch_size=config.data.batch_size,
        sampler=sampler,
        num_workers=config.data.num_workers,
        collate_fn=collate,
        drop_last=len(dataset) >= config.data.batch_size * world,
        persistent_workers=config.data.num_workers > 0,
    )
    return loader, sampler


def eval_loader(config: Config, dataset: DenseDataset, transform: T.Compose) -> DataLoader:
    """A loader over the evaluation split in order."""
    return DataLoader(
        AugmentedDataset(dataset, transform),
        batch_size=config.data.eval_batch_size,
        shuffle=False,
        num_workers=config.data.num_workers,
        collate_fn=collate,
    )


def model_from_checkpoint(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Task], CheckpointMeta]:
    """Rebuild a model and its tasks from a checkpoint alone (no dataset or config file needed)."""
    meta = read_meta(path)
    config = meta.config.model_copy(deep=True)
    config.model.backbone.weights = None  # the checkpoint has the trained weights
    palettes = {k: np.asarray(v, dtype=np.uint8) for k, v in meta.palettes.items()}
    tasks = {name: build_task(name, cfg.options, meta.class_names, palettes) for name, cfg in config.tasks.items()}
    model = build_model(config.model, tasks)
    load_weights(model, path)
    return model.to(device).eval(), tasks, meta
