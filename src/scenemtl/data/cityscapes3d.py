"""Cityscapes-3D (``cityscapes3d``): semseg, disparity or depth, and monocular 3D boxes, as TaskPrompter reads them.

The official release, extracted into one folder (https://www.cityscapes-dataset.com/downloads/, a login):

- ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``: RGB, 1024×2048; train (2975) and
  val (500); the id of a sample is ``<city>_<seq>_<frame>``, samples in id order;
- ``gtFine/<split>/<city>/<id>_gtFine_labelIds.png``: label ids → the 19 train ids (void → 255), as
  ``scenemtl.data.cityscapes``;
- ``disparity/<split>/<city>/<id>_disparity.png``: uint16 p, disparity d = (p − 1) / 256 px for p > 0;
- ``camera/<split>/<city>/<id>_camera.json``: ``extrinsic.baseline`` (m), ``intrinsic.fx`` (px);
- ``gtBbox3d/<split>/<city>/<id>_gtBbox3d.json`` (``gtBbox3d_trainvaltest.zip``): the 3D boxes and the
  ``sensor`` (``mcordts/cityscapesScripts:docs/Box3DImageTransform.ipynb``), read by
  ``scenemtl.detection.cityscapes.boxes_from_json`` (its docstring fixes the frames, the quaternion and the
  pixel conventions).

Targets (``prismformore/Multi-Task-Transformer:TaskPrompter/data/cityscapes3d.py``, HEAD = b83962a, and the
paper's v1 = 1f2b615):

- ``semseg``: int64 ``[H,W]``, the 19 train ids, 255 ignored.
- ``inverse_depth``: float32 ``[1,H,W]``, TaskPrompter's released target: the disparity in pixels of the
  full-resolution image, (p − 1) / 256. TaskPrompter marks p = 0 with −1 (ignored) and trains on p = 1
  (disparity 0); here both are 0, the data contract's "invalid" (a disparity of 0, a point at infinity,
  is no usable target; its evaluation mask ``0 < gt < 80`` excludes these pixels too). Resized nearest
  **without** changing the values, as TaskPrompter does (its ``label_dw_ratio`` line is commented out,
  so a 512×1024 target holds full-resolution disparities); ``disparity_rescale: true`` scales them with
  the width instead (the disparity of the resized image).
- ``depth``: float32 ``[1,H,W]``, metric depth baseline · fx / d from the camera file (the paper's v1
  target, the formula of ``scenemtl.data.cityscapes.disparity_to_depth``), 0 invalid; nearest resizing
  keeps metres.
- ``det3d``: a :class:`scenemtl.detection.Boxes3D` of the objects of the 6 classes (car, truck, bus,
  train, motorcycle, bicycle), its 2D boxes and camera at the sample's size; ``meta`` then also holds
  ``sensor`` (the JSON's sensor as plain values, with its ``imgWidth`` and ``imgHeight``, for
  ``boxes_to_json``) and ``det3d_gt`` (the parsed JSON, for the official evaluator).

Options:

- ``size: [H, W]`` resizes every sample (default: as stored, the release's 1024×2048): the image
  bilinearly (PIL, TaskPrompter's ``imresize``), label and disparity maps nearest (PIL's NEAREST, at
  pixel centres), the boxes with ``Boxes3D.resize``. TaskPrompter keeps the image at 1024×2048 (its
  backbone resizes it to 768×1536) and only the dense labels at 512×1024; the data contract puts the
  targets at the image's size, so that setting is ``size: [512, 1024]`` plus an upsampling model input,
  or full-size targets.
- ``legacy_rail_track_zero`` (default false): TaskPrompter's ``depth[lbl == 10] = 0`` runs on the raw
  label ids (before ``encode_segmap``), so it zeroes *rail track* (id 10), not sky (train id 10) as its
  comment says. True reproduces it: those pixels become 0 in ``inverse_depth`` and ``depth`` (invalid
  here; TaskPrompter trains them as disparity 0).
- ``drop_empty_train`` (default true): train images without an object of the 6 classes are left out, as
  TaskPrompter's ``find_bad_samples`` (val keeps all 500); the count is in ``notes``. It reads every
  train gtBbox3d JSON when the dataset opens.

Image files whose size differs from the JSON's ``imgWidth`` × ``imgHeight`` (a resized copy, the
tests' small fixtures) get their boxes and camera resampled to the image; the aspect ratios must agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scenemtl.data.base import DatasetInfo, DenseDataset, image_to_tensor, register_dataset
from scenemtl.data.cityscapes import (
    DOWNLOADS,
    MAX_LABEL_ID,
    _size_option,
    class_set,
    list_images,
    login_archives,
    resize_nearest,
)
from scenemtl.detection.boxes import DETECTION_CLASSES
from scenemtl.errors import ConfigError, DataError
from scenemtl.fileio import read_image, read_json, read_label_png, require_folder

HELP = (
    f"log in at {DOWNLOADS}, download leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip, "
    "disparity_trainvaltest.zip, camera_trainvaltest.zip and gtBbox3d_trainvaltest.zip (Cityscapes 3D), unzip "
    "them all into one folder (which then holds leftImg8bit/, gtFine/, disparity/, camera/ and gtBbox3d/) and set "
    "data.root to it"
)
#: the raw label id of rail track, which TaskPrompter's "sky" line zeroes (cityscapesScripts' labels.py)
RAIL_TRACK_ID = 10
TASKS = ("semseg", "inverse_depth", "depth", "det3d")


def _info() -> DatasetInfo:
    names, palette, _ = class_set(19)
    return DatasetInfo(
        name="cityscapes3d",
        tasks=TASKS,
        class_names={"semseg": names, "det3d": list(DETECTION_CLASSES)},
        palettes={"semseg": palette},
    )


def count_detection_objects(annotation: dict, path: Path) -> int:
    """How many objects of a parsed gtBbox3d JSON have one of the 6 detection classes."""
    objects = annotation.get("objects") if isinstance(annotation, dict) else None
    if not isinstance(objects, list):
        raise DataError(f"{path}: malformed gtBbox3d annotation: no list 'objects'; {HELP}")
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict) or "label" not in obj:
            raise DataError(f"{path}: malformed gtBbox3d annotation: no key 'objects[{i}].label'; {HELP}")
    return sum(obj["label"] in DETECTION_CLASSES for obj in objects)


@register_dataset("cityscapes3d")
class Cityscapes3D(DenseDataset):
    """Cityscapes-3D: semseg (19), disparity (TaskPrompter's target) or metric depth, and 3D boxes (6 classes)."""

    info = _info()
    splits = ("train", "val")
    release_sizes = ((1024, 2048),)
    archives = login_archives("leftImg8bit", "gtFine", "disparity", "camera", "gtBbox3d")

    def __init__(
        self,
        root: str | None,
        split: str,
        tasks: list[str],
        size: list[int] | None = None,
        disparity_rescale: bool = False,
        legacy_rail_track_zero: bool = False,
        drop_empty_train: bool = True,
    ) -> None:
        super().__init__(root, split, tasks)
        if root is None:
            raise ConfigError(f"data.root is not set for dataset '{self.info.name}': {HELP}")
        self.size = _size_option(size, "data.options.size")
        self.disparity_rescale = bool(disparity_rescale)
        self.legacy_rail_track_zero = bool(legacy_rail_track_zero)
        self.lookup = class_set(19)[2]
        self.root_path = Path(root)
        self.items = list_images(self.root_path / "leftImg8bit" / split, split)
        depth_tasks = {"inverse_depth", "depth"} & set(self.tasks)
        folders = {"semseg": ["gtFine"], "inverse_depth": ["disparity"], "depth": ["disparity", "camera"], "det3d": ["gtBbox3d"]}
        for task in self.tasks:
            for folder in folders[task]:
                require_folder(self.root_path / folder / split, f"the {task} labels of {split}", HELP)
        if self.legacy_rail_track_zero and depth_tasks:
            require_folder(self.root_path / "gtFine" / split, f"the label ids legacy_rail_track_zero reads ({split})", HELP)
        if split == "train" and drop_empty_train:
            fix = f"{HELP}; or set data.options.drop_empty_train: false to keep every train image"
            require_folder(self.root_path / "gtBbox3d" / split, "the 3D boxes drop_empty_train reads", fix)
            kept = []
            for item in self.items:
                path = self._path("gtBbox3d", item, "gtBbox3d.json")
                if count_detection_objects(read_json(path, "Cityscapes-3D box file", fix), path) > 0:
                    kept.append(item)
            if len(kept) < len(self.items):
                self.notes.append(
                    f"{len(self.items) - len(kept)} of {len(self.items)} train images left out: no object of the 6 detection "
                    "classes (TaskPrompter's find_bad_samples; data.options.drop_empty_train: false keeps them)"
                )
            if not kept:
                raise DataError(
                    f"no train image of {self.root_path / 'leftImg8bit' / split} has an object of the 6 detection classes; {fix}"
                )
            self.items = kept
        self.variant = "Cityscapes-3D (19 classes, 6 detection classes)"
        if self.size is not None:
            self.release_sizes = (self.size,)

    def __len__(self) -> int:
        return len(self.items)

    def sample_id(self, index: int) -> str:
        """``<city>_<seq>_<frame>``."""
        return self.items[index][1]

    def _path(self, folder: str, item: tuple[str, str], suffix: str) -> Path:
        city, stem = item
        return self.root_path / folder / self.split / city / f"{stem}_{suffix}"

    def sample(self, index: int) -> dict:
        """One sample in the data contract (resized to ``size`` when set)."""
        item = self.items[index]
        image_path = self._path("leftImg8bit", item, "leftImg8bit.png")
        image = read_image(image_path, "Cityscapes image", HELP)
        stored = image.shape[:2]
        target = self.size or stored
        if target != stored:
            image = np.array(Image.fromarray(image).resize((target[1], target[0]), Image.Resampling.BILINEAR))
        sample: dict = {"image": image_to_tensor(image)}
        depth_tasks = [task for task in self.tasks if task in ("inverse_depth", "depth")]
        ids = None
        if "semseg" in self.tasks or (self.legacy_rail_track_zero and depth_tasks):
            ids = self._label_ids(item, image_path, stored)
        disparity = self._disparity(item, image_path, stored, ids) if depth_tasks else None
        for task in self.tasks:
            if task == "semseg":
                labels = self.lookup[ids]
                sample[task] = torch.from_numpy(np.ascontiguousarray(resize_nearest(labels, target) if target != stored else labels)).long()
            elif task == "inverse_depth":
                values = resize_nearest(disparity, target) if target != stored else disparity
                if self.disparity_rescale:
                    values = values * np.float32(target[1] / stored[1])
                sample[task] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None]
            elif task == "depth":
                depth = self._depth(item, disparity)
                sample[task] = torch.from_numpy(np.ascontiguousarray(resize_nearest(depth, target) if target != stored else depth))[None]
        meta: dict = {"id": self.sample_id(index), "size": tuple(target), "labelled": list(self.tasks)}
        if "det3d" in self.tasks:
            boxes, sensor, annotation = self._boxes(item, stored, target)
            sample["det3d"] = boxes
            meta["sensor"], meta["det3d_gt"] = sensor, annotation
        sample["meta"] = meta
        return sample

    def _label_ids(self, item: tuple[str, str], image_path: Path, stored: tuple[int, int]) -> np.ndarray:
        path = self._path("gtFine", item, "gtFine_labelIds.png")
        ids = read_label_png(path, "Cityscapes label-id map", HELP)
        if ids.max(initial=0) > MAX_LABEL_ID:
            raise DataError(
                f"{path}: ids go up to {ids.max()}, Cityscapes label ids are 0..{MAX_LABEL_ID}; is it a *_gtFine_labelIds.png? {HELP}"
            )
        self._same_size(path, ids, "label-id", image_path, stored)
        return ids

    @staticmethod
    def _same_size(path: Path, array: np.ndarray, what: str, image_path: Path, stored: tuple[int, int]) -> None:
        if array.shape[:2] != stored:
            raise DataError(
                f"{path}: the {what} map is {array.shape[0]}×{array.shape[1]} but its image {image_path} is "
                f"{stored[0]}×{stored[1]}; re-extract both from the release"
            )

    def _disparity(self, item: tuple[str, str], image_path: Path, stored: tuple[int, int], ids: np.ndarray | None) -> np.ndarray:
        """Disparity in pixels (p − 1) / 256 at the stored size; 0 where p ≤ 1 (invalid) and, with
        ``legacy_rail_track_zero``, on rail track."""
        path = self._path("disparity", item, "disparity.png")
        raw = read_image(path, "Cityscapes disparity (16-bit PNG)", HELP, mode=None)
        if raw.ndim != 2:
            raise DataError(f"{path}: a disparity map has one channel, found shape {raw.shape}; {HELP}")
        self._same_size(path, raw, "disparity", image_path, stored)
        disparity = np.where(raw > 0, (raw.astype(np.float32) - 1.0) / 256.0, 0.0).astype(np.float32)
        if self.legacy_rail_track_zero and ids is not None:
            disparity[ids == RAIL_TRACK_ID] = 0.0
        return disparity

    def _depth(self, item: tuple[str, str], disparity: np.ndarray) -> np.ndarray:
        """Metric depth baseline · fx / d (the camera file), 0 where the disparity is 0."""
        path = self._path("camera", item, "camera.json")
        camera = read_json(path, "Cityscapes camera file", HELP)
        try:
            baseline, fx = float(camera["extrinsic"]["baseline"]), float(camera["intrinsic"]["fx"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: no extrinsic.baseline and intrinsic.fx numbers; {HELP}") from None
        if not (baseline > 0 and fx > 0):
            raise DataError(f"{path}: baseline {baseline} and fx {fx} must be positive; {HELP}")
        depth = np.zeros(disparity.shape, dtype=np.float64)
        valid = disparity > 0
        depth[valid] = baseline * fx / disparity[valid].astype(np.float64)
        return depth.astype(np.float32)

    def _boxes(self, item: tuple[str, str], stored: tuple[int, int], target: tuple[int, int]):
        from scenemtl.detection.cityscapes import boxes_from_json

        path = self._path("gtBbox3d", item, "gtBbox3d.json")
        annotation = read_json(path, "Cityscapes-3D box file", HELP)
        try:
            full = (int(annotation["imgHeight"]), int(annotation["imgWidth"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: malformed gtBbox3d annotation: no integer keys 'imgHeight' and 'imgWidth'; {HELP}") from None
        if abs(full[0] * stored[1] - full[1] * stored[0]) > 0.01 * full[0] * stored[1]:
            raise DataError(
                f"{path}: the boxes are for {full[0]}×{full[1]} images but the image is {stored[0]}×{stored[1]} "
                f"(another aspect ratio); re-extract both from the release"
            )
        try:
            boxes, sensor = boxes_from_json(annotation, DETECTION_CLASSES, size=target)
        except DataError as error:
            raise DataError(f"{path}: {error}; {HELP}") from None
        return boxes, sensor, annotation
