"""Partially annotated training data: which tasks are labelled on which image.

The settings of the partial-label literature (MTPSL, Li et al. CVPR 2022; DiffusionMTL, Ye & Xu
CVPR 2024):

- ``one-label``: every training image carries exactly one task's label; tasks are balanced
  (their counts differ by at most one: the images are shuffled with the seed and dealt to the
  tasks in turn; MTPSL's PASCAL file has 1,000 or 999 images per task);
- ``random-labels``: every image carries a random non-empty proper subset of the tasks (its size
  uniform in 1..T−1, then the subset uniform; with one task, that task). MTPSL's PASCAL file has
  1,538 / 1,529 / 1,541 / 390 images with 1 / 2 / 3 / 4 labels: importing it reproduces that
  split exactly, generating gives a fresh one of the same kind.

An availability map is ``{image id: [labelled task names]}``, stored as JSON
(``{"setting", "seed", "tasks", "labels"}``) so that runs can share it. The published maps
(DiffusionMTL's ``new_{onelabel,randomlabels}.pth``, MTPSL's ``onelabel.npy``: image id → 0/1 flags
in the order semseg, human_parts, sal, normals, edge for PASCAL) are imported with
``import_flags``. Evaluation always uses full labels.

Unlabelled targets are marked in the target itself, as the data contract says: ``PartialLabels``
replaces them with their task's marker (``Task.unlabelled``: a map filled with the task's ignore
value, ``Task.pad_value``; for 3D boxes an empty ``Boxes3D`` with ``labelled`` False, distinct from
an annotated image without objects), so no loss and no prior estimate ever reads them, and
``meta['labelled']`` lists the labelled tasks of each sample.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from pathlib import Path

import numpy as np
import torch

from scenemtl.data.base import DenseDataset
from scenemtl.fileio import ArrayUnpickler, read_torch
from scenemtl.errors import ConfigError, DataError

SETTINGS = ("one-label", "random-labels")
#: the task order of the published PASCAL-Context flag files (DiffusionMTL, MTPSL)
PASCAL_FLAG_ORDER = ("semseg", "human_parts", "saliency", "normals", "edge")


def generate(ids: Sequence[str], tasks: Sequence[str], setting: str, seed: int) -> dict[str, list[str]]:
    """A deterministic availability map for ``ids`` (see the module docstring)."""
    if setting not in SETTINGS:
        raise ConfigError(f"data.labels.setting: unknown setting '{setting}'; use full, {' or '.join(SETTINGS)}")
    if not tasks:
        raise ConfigError("partial labels need at least one task")
    rng = np.random.default_rng(seed)
    tasks = list(tasks)
    order = rng.permutation(len(ids))
    labels: dict[str, list[str]] = {}
    if setting == "one-label":
        for rank, index in enumerate(order):
            labels[ids[index]] = [tasks[rank % len(tasks)]]
        return {i: labels[i] for i in ids}
    for index in order:
        count = int(rng.integers(1, len(tasks))) if len(tasks) > 1 else 1
        chosen = sorted(rng.choice(len(tasks), size=count, replace=False))
        labels[ids[index]] = [tasks[c] for c in chosen]
    return {i: labels[i] for i in ids}


def write_availability(path: str | Path, labels: Mapping[str, Sequence[str]], tasks: Sequence[str], setting: str, seed: int | None) -> None:
    """Write an availability map as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"setting": setting, "seed": seed, "tasks": list(tasks), "labels": {k: list(v) for k, v in labels.items()}}
    path.write_text(json.dumps(body, indent=1))


def read_availability(path: str | Path, tasks: Sequence[str]) -> dict[str, list[str]]:
    """Read a JSON availability map; tasks it names that the run does not train are dropped."""
    path = Path(path)
    try:
        body = json.loads(path.read_text())
        labels = body["labels"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"cannot read the label availability file {path}: {error!r}; write it again with "
            "data.labels (or delete it to have it generated)"
        ) from None
    unknown = sorted({t for v in labels.values() for t in v} - set(body.get("tasks", tasks)) - set(tasks))
    if unknown:
        raise DataError(f"{path}: unknown task names {unknown}")
    return {str(k): [t for t in v if t in tasks] for k, v in labels.items()}


def _load_pickled_npy(path: Path):
    """The object stored in a ``.npy`` of a pickled object (``np.save`` of a dict), without executing code."""
    with path.open("rb") as file:
        version = np.lib.format.read_magic(file)
        _, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(file)
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)  # a plain array (not a map; the caller says so)
        array = ArrayUnpickler(file).load()
    return array.item() if isinstance(array, np.ndarray) and array.shape == () else array


def import_flags(path: str | Path, order: Sequence[str] = PASCAL_FLAG_ORDER) -> dict[str, list[str]]:
    """A published map (``.pth`` or ``.npy`` of ``{image id: 0/1 flags}``) as ``{id: [task names]}``.

    ``.npy`` files hold a pickled dict: it is read by an unpickler that builds dicts, lists and
    numpy arrays only, so a crafted file is refused instead of running code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label availability file not found: {path}")
    if path.suffix == ".npy":
        try:
            flags = _load_pickled_npy(path)
        except Exception as error:  # noqa: BLE001  (any unreadable file is reported the same way)
            raise DataError(f"cannot read the published label map {path}: {error}") from None
    else:
        flags = read_torch(path, "published label map", "use the file as published, or convert it to scenemtl's labels.json format")
    if not isinstance(flags, Mapping):
        raise DataError(f"{path}: expected a mapping image id → task flags, found {type(flags).__name__}")
    labels = {}
    for key, value in flags.items():
        value = [int(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
        if len(value) != len(order):
            raise DataError(f"{path}: image {key} has {len(value)} flags, expected {len(order)} ({', '.join(order)})")
        labels[str(key)] = [task for task, flag in zip(order, value) if flag]
    return labels


class PartialLabels(DenseDataset):
    """A training split where each image keeps only its available tasks' labels."""

    def __init__(self, dataset: DenseDataset, labels: Mapping[str, Sequence[str]], hide: Mapping[str, Callable[[Any], Any]]) -> None:
        """``hide``: per task, what replaces a withheld target (``Task.unlabelled``)."""
        self.dataset, self.hide = dataset, dict(hide)
        self.info, self.splits = dataset.info, dataset.splits
        self.root, self.split, self.tasks = dataset.root, dataset.split, list(dataset.tasks)
        self.variant, self.notes = dataset.variant, dataset.notes
        ids = [dataset.sample_id(i) for i in range(len(dataset))]
        missing = [i for i in ids if i not in labels]
        if missing:
            raise DataError(
                f"the label availability map lists {len(ids) - len(missing)} of the {len(ids)} training "
                f"images; missing e.g. {missing[:3]}. Generate it for this split (data.labels)."
            )
        self.available = [[t for t in self.tasks if t in labels[i]] for i in ids]

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_id(self, index: int) -> str:
        """The wrapped dataset's id."""
        return self.dataset.sample_id(index)

    def sample(self, index: int) -> dict:
        """The sample with every unavailable task's target replaced by its marker (``hide``)."""
        return self._hide(self.dataset.sample(index), index)

    def stored_sample(self, index: int) -> dict:
        """``sample`` from the wrapped dataset's ``stored_sample`` (available targets may stay ``Stored``)."""
        return self._hide(self.dataset.stored_sample(index), index)

    def _hide(self, sample: dict, index: int) -> dict:
        for task in self.tasks:
            if task not in self.available[index] and task in sample:
                sample[task] = self.hide[task](sample[task])
        sample.setdefault("meta", {})["labelled"] = list(self.available[index])
        return sample


def partial_losses(
    tasks: Sequence[str],
    batch: Mapping,
    rescale: bool,
    sample_loss: Callable[[str, int], torch.Tensor],
    zero: Callable[[str], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Each task's loss over the samples of ``batch`` that carry its label (DiffusionMTL's scheme).

    ``sample_loss(task, b)`` is the task's loss on sample ``b``; each is multiplied by (tasks /
    labelled tasks of that sample) when ``rescale`` is on, summed and divided by the batch size.
    ``zero(task)``: a zero in the graph of the task's outputs, so a batch without the task's
    label gives a zero loss with a zero gradient. The labelled tasks are ``PartialLabels``'
    ``meta['labelled']``; this module alone reads it.
    """
    labelled = [set(meta["labelled"]) for meta in batch["meta"]]
    size, count = len(labelled), len(tasks)
    losses = {}
    for name in tasks:
        loss = zero(name)
        for b, available in enumerate(labelled):
            if name in available:
                loss = loss + (count / len(available) if rescale else 1.0) * sample_loss(name, b)
        losses[name] = loss / size
    return losses
