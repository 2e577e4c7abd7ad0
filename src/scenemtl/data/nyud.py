"""NYUD-v2 as the multi-task seeds read it: 795 train / 654 val images, 40 classes, depth, normals, edges.

Two releases exist and are told apart by the image files (``variant``):

**NYUDv2.tar.gz** (ATRC's first release, read the same way by InvPT, TaskPrompter and DenseMTL),
extracting to ``NYUDv2/``, images 425×560:

- ``gt_sets/{train,val}.txt``: one id per line;
- ``images/<id>.png``: RGB;
- ``segmentation/<id>.png``: uint8 0..40 with 0 unlabelled → ``label − 1``, so 40 classes 0..39
  and 0 becomes 255 (ignored);
- ``depth/<id>.npy``: float metres, H×W; 0 is invalid (InvPT's ``AddIgnoreRegions`` turns 0
  into 255; our contract keeps 0);
- ``normals/<id>.png``: RGB uint8 → ``2x/255 − 1`` (not re-normalised, as the seeds);
- ``edge/<id>.png``: uint8 0/255 → ``/255``.

**NYUD_MT** (MTI-Net's release, ``NYUD_MT.tgz``; ATRC's loader switched to it later), images
480×640: the same folders with ``images/<id>.jpg``, ``edge/<id>.npy`` (float 0/1),
``normals/<id>.npy`` (float H×W×3 in [−1, 1]), ``segmentation/<id>.png`` (shifted as above) and
``depth/<id>.npy``. MTI-Net resizes an edge, label, normal or depth map whose size differs from
its image (nearest; cubic for normals); this loader reports such a map as an error instead,
since no map of either release needs it.

The InvPT recipe pads to 448×576, which the 480×640 images do not fit (Multi-Task-Transformer
issue #22): with NYUD_MT set ``data.eval_pad: [480, 640]`` (``data check`` says so).

Class names: the 40 NYU classes (Gupta et al. 2013) in id order, as InvPT's evaluation lists
them; the palette is a fixed random one (NYUD has no official colours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scenemtl.data.base import DatasetInfo, DenseDataset, channels_first, image_to_tensor, register_dataset
from scenemtl.data.download import Archive
from scenemtl.fileio import Stored, decode_stored, read_image, read_label_png, read_npy, read_split, require_folder
from scenemtl.errors import ConfigError, DataError

CLASS_NAMES = [
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "blinds",
    "desk",
    "shelves",
    "curtain",
    "dresser",
    "pillow",
    "mirror",
    "floor mat",
    "clothes",
    "ceiling",
    "books",
    "refridgerator",
    "television",
    "paper",
    "towel",
    "shower curtain",
    "box",
    "whiteboard",
    "person",
    "night stand",
    "toilet",
    "sink",
    "lamp",
    "bathtub",
    "bag",
    "otherstructure",
    "otherfurniture",
    "otherprop",
]
PNG_RELEASE = "NYUDv2 (ATRC/InvPT PNG release, 425×560)"
MT_RELEASE = "NYUD_MT (MTI-Net JPG+NPY release, 480×640)"
HELP = (
    "download NYUDv2.tar.gz (`scenemtl data download nyud --root DIR`, or the link in the InvPT README) and "
    "set data.root to the extracted NYUDv2/ folder (MTI-Net's NYUD_MT/ folder works too)"
)
FIX = "re-extract the file from the release archive (NYUDv2.tar.gz or NYUD_MT.tgz)"
FOLDERS = {"semseg": "segmentation", "depth": "depth", "normals": "normals", "edge": "edge"}


# stored byte → contract value, computed with the seeds' float32 arithmetic (normals 2·x/255 − 1,
# edges x/255, labels x − 1 with 0 → 255); one table lookup per pixel
NORMALS_LUT = 2 * np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(1)
EDGE_LUT = np.arange(256, dtype=np.float32) / np.float32(255)
LABEL_LUT = np.concatenate([[255], np.arange(255)]).astype(np.int64)


def _palette(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3), dtype=np.uint8)


@register_dataset("nyud")
class NYUD(DenseDataset):
    """NYUD-v2 (40 classes): semseg, depth, normals, edge; either release, recognised by its image files."""

    info = DatasetInfo(
        name="nyud",
        tasks=("semseg", "depth", "normals", "edge"),
        class_names={"semseg": CLASS_NAMES},
        palettes={"semseg": _palette(40, 40)},
    )
    # SEISM draws the boundary ground truth from this label image (metrics/boundary.py)
    provides_eval = ("edge_labels",)
    archives = (
        Archive(
            "NYUDv2.tar.gz",
            url="https://data.vision.ee.ethz.ch/brdavid/atrc/NYUDv2.tar.gz",
            manual="if the ETH address no longer answers, InvPT's README (prismformore/Multi-Task-Transformer) links a re-hosted copy",
        ),
    )

    def __init__(self, root: str | None, split: str, tasks: list[str]) -> None:
        super().__init__(root, split, tasks)
        if root is None:
            raise ConfigError(f"data.root is not set for dataset 'nyud': {HELP}")
        self.folder = Path(root)
        if not (self.folder / "gt_sets").is_dir() and (self.folder / "NYUDv2" / "gt_sets").is_dir():
            self.folder = self.folder / "NYUDv2"  # the folder the archive was extracted into
        require_folder(self.folder / "gt_sets", "the split lists", HELP)
        self.ids = read_split(self.folder / "gt_sets" / f"{split}.txt", HELP)
        images = require_folder(self.folder / "images", "the RGB images", HELP)
        self.mt = self._is_mt(images)
        self.variant = MT_RELEASE if self.mt else PNG_RELEASE
        self.release_sizes = ((480, 640),) if self.mt else ((425, 560),)
        if self.mt:
            self.notes.append(
                "NYUD_MT images are 480×640: set data.eval_pad to [480, 640] (the InvPT recipe pads "
                "to 448×576, which only the NYUDv2 PNG release fits)"
            )
        for task in self.tasks:
            require_folder(self.folder / FOLDERS[task], f"the {task} labels", HELP)

    def _is_mt(self, images: Path) -> bool:
        """NYUD_MT when the images are JPGs (the first listed id decides; else what the folder holds)."""
        first = self.ids[0]
        if (images / f"{first}.png").is_file() or (images / f"{first}.jpg").is_file():
            return (images / f"{first}.jpg").is_file() and not (images / f"{first}.png").is_file()
        pngs, jpgs = any(images.glob("*.png")), any(images.glob("*.jpg"))
        if pngs == jpgs:
            raise DataError(
                f"{images} holds {'both' if pngs else 'neither'} <id>.png (NYUDv2 release) "
                f"{'and' if pngs else 'nor'} <id>.jpg (NYUD_MT release) files; {HELP}"
            )
        return jpgs

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, index: int) -> str:
        """The id from ``gt_sets/<split>.txt``."""
        return self.ids[index]

    def _path(self, folder: str, index: int, suffix: str) -> Path:
        return self.folder / folder / f"{self.ids[index]}{suffix}"

    def _file(self, task: str, index: int) -> Path:
        """The file holding ``task``'s label of sample ``index`` in this release."""
        suffix = ".npy" if task == "depth" or (self.mt and task in ("normals", "edge")) else ".png"
        return self._path(FOLDERS[task], index, suffix)

    def sample(self, index: int) -> dict:
        """One sample in the data contract."""
        return decode_stored(self.stored_sample(index))

    def stored_sample(self, index: int) -> dict:
        """One sample, its 8-bit label files (segmentation, PNG normals and edges) still ``Stored``."""
        image_path = self._path("images", index, ".jpg" if self.mt else ".png")
        image = read_image(image_path, "NYUD image", FIX)
        size = image.shape[:2]
        sample: dict = {"image": image_to_tensor(image)}
        for task in self.tasks:
            sample[task] = getattr(self, f"_{task}")(index)
            if tuple(sample[task].shape[-2:]) != size:
                raise DataError(
                    f"{self._file(task, index)}: the {task} map is {tuple(sample[task].shape[-2:])} but "
                    f"its image {image_path.name} is {size}; {FIX}"
                )
        if "edge_labels" in self.eval_keys:
            labels = self._edge_labels(index)
            if tuple(labels.shape[-2:]) != size:
                raise DataError(
                    f"{self._file('edge', index)}: the edge map is {tuple(labels.shape[-2:])} but its image "
                    f"{image_path.name} is {size}; {FIX}"
                )
            sample["edge_labels"] = labels
        sample["meta"] = {"id": self.ids[index], "size": size, "labelled": list(self.tasks)}
        return sample

    def _semseg(self, index: int) -> Stored:
        path = self._file("semseg", index)
        labels = read_label_png(path, "NYUD label map (0..40)", FIX)
        if labels.max(initial=0) > 40:
            raise DataError(f"{path}: label ids go up to {labels.max()}, NYUD's are 0..40 (0 unlabelled); {FIX}")
        return Stored(labels, [LABEL_LUT])

    def _depth(self, index: int) -> torch.Tensor:
        path = self._file("depth", index)
        depth = np.asarray(read_npy(path, "NYUD depth in metres", FIX), dtype=np.float32)
        if depth.ndim == 3 and depth.shape[-1] == 1:
            depth = depth[..., 0]
        if depth.ndim != 2:
            raise DataError(f"{path}: depth must be H×W, got shape {depth.shape}; {FIX}")
        return torch.from_numpy(np.ascontiguousarray(depth))[None]

    def _normals(self, index: int) -> torch.Tensor | Stored:
        if self.mt:
            path = self._path("normals", index, ".npy")
            normals = np.asarray(read_npy(path, "NYUD normals (H×W×3 in [−1, 1])", FIX), dtype=np.float32)
        else:
            path = self._path("normals", index, ".png")
            return Stored(read_image(path, "NYUD normals PNG", FIX, mode="RGBX"), [NORMALS_LUT] * 3)
        if normals.ndim != 3 or normals.shape[-1] != 3:
            raise DataError(f"{path}: normals must be H×W×3, got shape {normals.shape}; {FIX}")
        return channels_first(normals)

    def _edge_labels(self, index: int) -> torch.Tensor:
        """The edge map read as a label image, SEISM's NYUD ground truth (``db_gt``: ``uint32(imread(edge png))``).

        NYUD_MT stores 0/1 floats: rounded to integers, they separate the same regions.
        """
        if self.mt:
            path = self._path("edge", index, ".npy")
            labels = np.rint(np.asarray(read_npy(path, "NYUD edge map (0/1)", FIX), dtype=np.float64)).astype(np.int64)
        else:
            path = self._path("edge", index, ".png")
            labels = read_label_png(path, "NYUD edge PNG (0/255)", FIX).astype(np.int64)
        if labels.ndim != 2:
            raise DataError(f"{path}: an edge map must be H×W, got shape {labels.shape}; {FIX}")
        return torch.from_numpy(labels)[None]

    def _edge(self, index: int) -> torch.Tensor | Stored:
        if self.mt:
            path = self._path("edge", index, ".npy")
            edge = np.asarray(read_npy(path, "NYUD edge map (0/1)", FIX), dtype=np.float32)
        else:
            path = self._path("edge", index, ".png")
            edge = read_label_png(path, "NYUD edge PNG (0/255)", FIX)
        if edge.ndim != 2:
            raise DataError(f"{path}: an edge map must be H×W, got shape {edge.shape}; {FIX}")
        return Stored(edge, [EDGE_LUT], channel_axis=True) if edge.dtype == np.uint8 else torch.from_numpy(np.ascontiguousarray(edge))[None]
