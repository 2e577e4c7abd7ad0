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

from scenemtl.data.base import image_to_tensor
from scenemtl.errors import ConfigError, DataError

# DenseMTL's input normalisation (monodepth2's encoder: (x - 0.45) / 0.225)
DENSEMTL_MEAN = (0.45, 0.45, 0.45)
DENSEMTL_STD = (0.225, 0.225, 0.225)
FAR_CODE = 65535  # the largest 16-bit depth code
SPLIT_RULES = ("disjoint", "densemtl")
TRAIN_SHARE = 0.8


def densemtl_split(ids: Sequence[str], split: str, seed: int, rule: str) -> list[str]:
    """DenseMTL's ``prepare_filenames`` on a sorted listing: shuffle, first 80 % train, the rest val.

    ``rule='disjoint'``: val is the rest of the same permutation. ``rule='densemtl'``: val is the
    tail of a second shuffle by the same generator, as DenseMTL builds its val set (overlapping train).
    """
    ordered = sorted(ids)
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


def densemtl_sample(
    image: np.ndarray, targets: dict[str, np.ndarray], resize: tuple[int, int] | None, name: str, tasks: Sequence[str]
) -> dict:
    """A sample in the data contract from the decoded image, semseg ids and depth in metres, resized when asked."""
    if resize is not None:
        image = resize_image(image, resize)
        if "semseg" in targets:
            targets["semseg"] = resize_labels(targets["semseg"], resize)
        if "depth" in targets:
            targets["depth"] = resize_depth(targets["depth"], resize)
    sample: dict = {"image": image_to_tensor(image)}
    if "semseg" in targets:
        sample["semseg"] = torch.from_numpy(targets["semseg"].astype(np.int64))
    if "depth" in targets:
        sample["depth"] = torch.from_numpy(np.ascontiguousarray(targets["depth"], dtype=np.float32))[None]
    sample["meta"] = {"id": name, "size": tuple(int(s) for s in image.shape[:2]), "labelled": list(tasks)}
    return sample
