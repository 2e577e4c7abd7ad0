"""What DenseMTL's loaders of SYNTHIA and Virtual KITTI 2 share: the split rule, resizing, normalisation.

Facts from ``astra-vision/DenseMTL`` (``dataset/utils.py``, ``dataset/synthia.py``,
``dataset/vkitti2.py``, ``vendor/monodepth2/resnet_encoder.py``); see the two loaders' docstrings.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scenemtl import geometry
from scenemtl.data.base import image_to_tensor
from scenemtl.errors import ConfigError, DataError

# DenseMTL's input normalisation (monodepth2's encoder: (x - 0.45) / 0.225)
DENSEMTL_MEAN = (0.45, 0.45, 0.45)
DENSEMTL_STD = (0.225, 0.225, 0.225)
FAR_CODE = 65535  # the largest 16-bit depth code
SPLIT_RULES = ("disjoint", "densemtl")
TRAIN_SHARE = 0.8
#: how normals are derived from depth (the ``normals`` option of the driving datasets)
NORMALS_MODES = ("metric", "densemtl")
#: DenseMTL's evaluation range of ground-truth depth, metres (``loss/normals.py``, ``loss/depth/*.py``)
DENSEMTL_DEPTH_RANGE = (1e-3, 80.0)


def densemtl_split(ids: Sequence[str], split: str, seed: int, rule: str) -> list[str]:
    """DenseMTL's ``prepare_filenames`` on a sorted listing: shuffle, first 80 % train, the rest val.

    ``rule='disjoint'``: val is the rest of the same permutation. ``rule='densemtl'``: val is the
    tail of a second shuffle by the same generator, as DenseMTL builds its val set (overlapping train).
    ``split='all'``: every frame (DenseMTL's ``src_split: all``, the source of its adaptation runs).
    """
    ordered = sorted(ids)
    if split == "all":
        return ordered
    rng = random.Random(seed)
    first = list(ordered)
    rng.shuffle(first)
    cut = int(len(ordered) * TRAIN_SHARE)
    if split == "train":
        return first[:cut]
    if rule == "disjoint":
        return first[cut:]
    second = list(ordered)
    rng.shuffle(second)
    return second[cut:]


def check_split_options(name: str, split_seed: int, split_rule: str) -> None:
    """ConfigError for a split rule or seed that cannot work."""
    if split_rule not in SPLIT_RULES:
        raise ConfigError(f"data.options.split_rule for '{name}' must be one of {list(SPLIT_RULES)}, got {split_rule!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ConfigError(f"data.options.split_seed for '{name}' must be an integer, got {split_seed!r}")


def check_resize(name: str, resize: Sequence[int] | None) -> tuple[int, int] | None:
    """``resize`` as (H, W), or None; a ConfigError for anything else."""
    if resize is None:
        return None
    try:
        height, width = (int(v) for v in resize)
        ok = all(float(v) == int(v) for v in resize) and height > 0 and width > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"data.options.resize for '{name}' must be [height, width] (positive integers) or null, got {resize!r}")
    return height, width


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H×W×3 uint8 resized with Pillow's Lanczos filter (DenseMTL's ``Image.ANTIALIAS``)."""
    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.LANCZOS))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H×W uint8 label map resized with Pillow's nearest neighbour (pixel-centre sampling), as DenseMTL."""
    return np.array(Image.fromarray(labels).resize((size[1], size[0]), Image.Resampling.NEAREST))


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H×W float32 depth resized with Pillow's nearest neighbour: the same pixels as ``resize_labels`` picks."""
    return np.array(Image.fromarray(np.asarray(depth, dtype=np.float32)).resize((size[1], size[0]), Image.Resampling.NEAREST))


def size_error(path: Path, what: str, found: tuple[int, ...], image: tuple[int, int], image_path: Path) -> DataError:
    """The DataError of a target whose size differs from its image."""
    return DataError(
        f"{path}: the {what} is {tuple(found[:2])} but its image {image_path.name} is {tuple(image)}; "
        "re-extract both files from the release"
    )


def check_normals_mode(name: str, mode: str) -> str:
    """The ``normals`` option, checked."""
    if mode not in NORMALS_MODES:
        raise ConfigError(
            f"data.options.normals for '{name}' must be one of {list(NORMALS_MODES)} ('metric': normals of the "
            f"metric depth with the camera at the sample's size; 'densemtl': DenseMTL's computation), got {mode!r}"
        )
    return mode


def derived_normals(
    depth: np.ndarray, camera: np.ndarray, release_camera: np.ndarray, mode: str, evaluation: bool, unmasked: bool = False
) -> dict[str, torch.Tensor]:
    """``{'normals': [3,H,W]}`` (all-zero where invalid) of a depth map in metres (0 = invalid), as DenseMTL
    derives the normals of Cityscapes, SYNTHIA and Virtual KITTI 2 (``astra-vision/DenseMTL:loss/normals.py``,
    ``models/normals.py``): back-projection, four neighbour cross products, z positive, the valid mask
    without the image border and eroded by 3×3 (``geometry.normals_from_depth``).

    ``mode='metric'`` (default): the metric depth with ``camera``, the camera matrix of the sample at
    its size; the normals are the surfaces' true normals, oriented with z ≥ 0 (DenseMTL's sign
    convention: away from the camera). ``mode='densemtl'``: DenseMTL's numbers: its "normalised
    inverse depth" ``65536/(100·m + 1)`` in place of depth and ``release_camera``, the matrix of
    the release's full-size images, whatever the sample's size; in evaluation splits the mask also
    keeps DenseMTL's ground-truth range 1 mm < m − 0.99 < 80 m (its decoding ``655.36/code − 1`` is
    0.99 m short of the depth). With ``unmasked`` (mode 'densemtl') also ``normals_unmasked``: the
    normals at every pixel, invalid depths filled with the image's largest depth as DenseMTL's
    Cityscapes loader does: the ground truth its legacy metric reads (SYNTHIA and Virtual KITTI 2
    keep their far pixels in DenseMTL: set ``far_invalid: false`` for its exact numbers there).
    DenseMTL computes after its crop and flip, with a flip that also moves v0 (``dataset/base.py:get_K``);
    here the normals of the un-augmented sample are cropped and flipped with the image (x negated),
    which is what the true geometry gives."""
    metres = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float64))[None, None]
    valid = torch.isfinite(metres) & (metres > 0)
    if mode == "metric":
        return {"normals": geometry.normals_from_depth(metres, camera, valid, orient="flip")[0]}
    far = metres[valid].max() if bool(valid.any()) else torch.tensor(1.0, dtype=torch.float64)
    code = geometry.densemtl_depth_code(torch.where(valid, metres, far))
    if evaluation:
        low, high = DENSEMTL_DEPTH_RANGE
        decoded = metres - 0.99
        valid &= (decoded > low) & (decoded < high)
    out = {"normals": geometry.normals_from_depth(code, release_camera, valid)[0]}
    if unmasked:
        points = geometry.backproject(code, torch.linalg.inv(torch.as_tensor(release_camera, dtype=torch.float64)))
        out["normals_unmasked"] = geometry.points_to_normals(points)[0].float()
    return out


def densemtl_sample(
    image: np.ndarray,
    targets: dict[str, np.ndarray],
    resize: tuple[int, int] | None,
    name: str,
    tasks: Sequence[str],
    normals: dict | None = None,
    eval_keys: Sequence[str] = (),
) -> dict:
    """A sample in the data contract from the decoded image, semseg ids and depth in metres, resized when asked.

    ``normals``: when the task is requested, ``derived_normals``' arguments but the depth:
    ``camera`` (at the release's size; scaled here to the sample's), ``release_camera``, ``mode``,
    ``evaluation``; ``eval_keys``: the evaluation targets requested (``normals_unmasked``)."""
    release_size = image.shape[:2]
    if resize is not None:
        image = resize_image(image, resize)
        if "semseg" in targets:
            targets["semseg"] = resize_labels(targets["semseg"], resize)
        if "depth" in targets:
            targets["depth"] = resize_depth(targets["depth"], resize)
    sample: dict = {"image": image_to_tensor(image)}
    if "semseg" in targets:
        sample["semseg"] = torch.from_numpy(targets["semseg"].astype(np.int64))
    if "depth" in tasks:
        sample["depth"] = torch.from_numpy(np.ascontiguousarray(targets["depth"], dtype=np.float32))[None]
    if "normals" in tasks:
        if normals is None:
            raise ValueError("normals requested without a camera")
        camera = geometry.resize_intrinsics(normals["camera"], release_size, image.shape[:2])
        unmasked = "normals_unmasked" in eval_keys and normals["mode"] == "densemtl"
        sample.update(
            derived_normals(targets["depth"], camera, normals["release_camera"], normals["mode"], normals["evaluation"], unmasked)
        )
    sample["meta"] = {"id": name, "size": tuple(int(s) for s in image.shape[:2]), "labelled": list(tasks)}
    return sample
