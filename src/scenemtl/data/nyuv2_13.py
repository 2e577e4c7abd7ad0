"""NYUv2 with 13 classes, depth and normals, in MTAN's preprocessed ``.npy`` release (288×384).

Layout (``lorenmt/mtan``'s ``create_dataset.py``): ``root/{train,val}/{image,label,depth,normal}/<i>.npy``
with i = 0..N−1 (795 train and 654 val images):

- ``image``: H×W×3 float in [0, 1] → uint8 (×255, rounded; the dataset's normalisation is
  mean 0 / std 1, so the network sees MTAN's [0, 1] input);
- ``label``: H×W float, classes 0..12, −1 unlabelled → int64 with 255;
- ``depth``: H×W×1 metres, 0 invalid (kept: 0 is the contract's invalid depth);
- ``normal``: H×W×3 in [−1, 1], all-zero invalid.

The class names are the usual 13-class NYUv2 grouping (Couprie et al., 2013) in id order. The
"val" split is the 654-image test split MTAN evaluates on every epoch.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from scenemtl.data.base import DatasetInfo, DenseDataset, image_to_tensor, register_dataset
from scenemtl.data.download import Archive
from scenemtl.fileio import read_npy
from scenemtl.errors import ConfigError, DataError

CLASS_NAMES = ["bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv", "wall", "window"]
FOLDERS = {"semseg": "label", "depth": "depth", "normals": "normal"}
HELP = (
    "download MTAN's preprocessed NYUv2 (linked from the lorenmt/mtan README, 'nyuv2.zip') and set data.root "
    "to the folder holding train/ and val/"
)


def _palette() -> np.ndarray:
    rng = np.random.default_rng(13)
    return rng.integers(0, 256, size=(len(CLASS_NAMES), 3), dtype=np.uint8)


def load_npy(path: Path, what: str) -> np.ndarray:
    """One file of the release; a missing or unreadable file names itself."""
    return read_npy(path, what, f"the copy is incomplete: {HELP}")


@register_dataset("nyuv2_13")
class NYUv2Thirteen(DenseDataset):
    """MTAN's NYUv2: semseg (13 classes), depth, normals."""

    info = DatasetInfo(
        name="nyuv2_13",
        tasks=("semseg", "depth", "normals"),
        class_names={"semseg": CLASS_NAMES},
        palettes={"semseg": _palette()},
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    release_sizes = ((288, 384),)
    archives = (
        Archive(
            "nyuv2.zip",
            manual="MTAN's README (lorenmt/mtan) links the preprocessed NYUv2 from a Dropbox folder, which has no "
            "direct address; download nyuv2.zip from there",
        ),
    )

    def __init__(self, root: str | None, split: str, tasks: list[str]) -> None:
        super().__init__(root, split, tasks)
        if root is None:
            raise ConfigError(f"data.root is not set for dataset 'nyuv2_13': {HELP}")
        self.folder = Path(root) / split
        if not self.folder.is_dir():
            raise DataError(f"no folder {self.folder} (expected {split}/ inside data.root {root}): {HELP}")
        images = self.folder / "image"
        if not images.is_dir():
            raise DataError(f"no folder {images}: {HELP}")
        ids = sorted(int(m.group(1)) for p in images.iterdir() if (m := re.fullmatch(r"(\d+)\.npy", p.name)))
        if not ids:
            raise DataError(f"no <i>.npy files in {images}: {HELP}")
        if ids != list(range(len(ids))):
            gap = next(i for i, j in enumerate(ids) if i != j)
            raise DataError(f"{images} should hold 0.npy..{len(ids) - 1}.npy but {gap}.npy is missing; re-extract the release")
        self.count = len(ids)
        for task in self.tasks:
            folder = self.folder / FOLDERS[task]
            if not folder.is_dir():
                raise DataError(f"no folder {folder} for task '{task}': {HELP}")
            n = sum(1 for p in folder.iterdir() if p.suffix == ".npy")
            if n != self.count:
                raise DataError(f"{folder} holds {n} .npy files but {images} holds {self.count}; re-extract the release")

    def __len__(self) -> int:
        return self.count

    def sample(self, index: int) -> dict:
        """One sample in the data contract."""
        image = load_npy(self.folder / "image" / f"{index}.npy", "H×W×3 float image in [0, 1]")
        if image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"{self.folder / 'image' / f'{index}.npy'}: expected H×W×3, got shape {image.shape}")
        height, width = image.shape[:2]
        sample: dict = {"image": image_to_tensor(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))}
        for task in self.tasks:
            path = self.folder / FOLDERS[task] / f"{index}.npy"
            array = load_npy(path, task)
            expected = {"semseg": (height, width), "depth": (height, width, 1), "normals": (height, width, 3)}[task]
            if array.shape != expected and not (task == "depth" and array.shape == (height, width)):
                raise DataError(f"{path}: expected shape {expected} to match the image, got {array.shape}")
            if task == "semseg":
                labels = np.rint(array).astype(np.int64)
                labels[labels < 0] = 255
                sample[task] = torch.from_numpy(labels)
            elif task == "depth":
                sample[task] = torch.from_numpy(np.asarray(array, dtype=np.float32).reshape(height, width))[None]
            else:
                sample[task] = torch.from_numpy(np.ascontiguousarray(np.asarray(array, dtype=np.float32).transpose(2, 0, 1)))
        sample["meta"] = {"id": f"{self.split}_{index:04d}", "size": (height, width), "labelled": list(self.tasks)}
        return sample
