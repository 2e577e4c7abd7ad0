"""The dataset protocol: raw samples in the data contract, plus what the tasks need to know."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from scenemtl.registry import Registry

DATASETS: Registry = Registry("dataset")
register_dataset = DATASETS.register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset tells the rest of the package: its tasks, classes, palettes and normalisation."""

    name: str
    tasks: tuple[str, ...]
    class_names: dict[str, list[str]] = field(default_factory=dict)
    palettes: dict[str, np.ndarray] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: the task type of each task whose name is not its type (the decathlon's domains: ``classification``)
    task_types: dict[str, str] = field(default_factory=dict)


class DenseDataset(Dataset):
    """Base class of datasets: ``sample(index)`` returns one un-augmented sample in the data contract.

    The sample holds ``image`` as uint8 ``[3,H,W]`` (normalisation is a transform), one target per
    requested task as DESIGN.md's table, and ``meta`` (``id``, ``size``, ``labelled`` tasks).
    Subclasses are registered with ``@register_dataset(name)`` and take ``(root, split, tasks,
    **options)``.
    """

    info: DatasetInfo
    splits: tuple[str, ...] = ("train", "val")
    # splits that are unions of others (e.g. 'all'): ``data check`` reads the others instead
    union_splits: tuple[str, ...] = ()
    # image sizes (H, W) of the release as distributed; ``data check`` warns about others
    release_sizes: tuple[tuple[int, int], ...] = ()
    # where it can be fetched and how (``scenemtl data download``): see data/download.py
    archives: tuple = ()
    # evaluation targets this dataset can provide (``Task.eval_target`` keys, e.g. ``edge_labels``)
    provides_eval: tuple[str, ...] = ()

    def __init__(self, root: str | None, split: str, tasks: list[str]) -> None:
        from scenemtl.errors import ConfigError, did_you_mean

        if split not in self.splits:
            raise ConfigError(f"dataset '{self.info.name}' has no split '{split}'.{did_you_mean(split, self.splits)}")
        missing = [t for t in tasks if t not in self.info.tasks]
        if missing:
            raise ConfigError(f"dataset '{self.info.name}' has no labels for task(s) {missing}; it provides {list(self.info.tasks)}")
        self.root = root
        self.split = split
        self.tasks = list(tasks)
        # the release recognised in ``root`` (datasets distributed in several forms say which)
        self.variant: str = self.info.name
        # remarks about the copy that do not make it unusable (``data check`` prints them)
        self.notes: list[str] = []
        # evaluation targets to add to each sample (set by the builder for evaluation splits)
        self.eval_keys: tuple[str, ...] = ()

    def request_eval_targets(self, keys) -> None:
        """Add these evaluation targets (those this dataset provides) to every sample from now on."""
        self.eval_keys = tuple(key for key in dict.fromkeys(keys) if key in self.provides_eval)

    def sample_id(self, index: int) -> str:
        """The release's id of sample ``index`` (file stem or split-list entry)."""
        return str(index)

    def sample(self, index: int) -> dict:
        """One raw sample (no augmentation, image not normalised)."""
        raise NotImplementedError

    def stored_sample(self, index: int) -> dict:
        """``sample(index)`` with targets that may still be ``fileio.Stored`` (8-bit values as the files
        hold them; the transforms pick, flip and pad the bytes, and ``Compose``, or the device after
        the batch is moved, decodes them). By default the sample itself."""
        return self.sample(index)

    def __getitem__(self, index: int) -> dict:
        return self.sample(index)

    def __len__(self) -> int:
        raise NotImplementedError


def channels_first(array: np.ndarray) -> torch.Tensor:
    """H×W×C array to a ``[C,H,W]`` tensor that is a view of the array's memory (channels last, as
    decoded): the transforms read it back without a copy, and stacking a batch makes it compact."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 array to a ``[3,H,W]`` uint8 tensor (``channels_first``)."""
    return channels_first(image)
