"""Joint transforms: geometry applied to the image and every task's target consistently.

Each transform is called as ``transform(sample, rng)`` with a numpy Generator, so that the
augmentation of a sample is a pure function of its seed (exact resume, any number of workers).
Task-specific label handling (nearest resampling, flipping normals, depth under zoom, pad
values) is asked of the Task objects; no transform branches on a task's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from scenemtl.tasks import Task
from scenemtl.metrics.base import EVAL_PAD


def _targets(sample: dict, tasks: Mapping[str, Task]):
    return [(name, task) for name, task in tasks.items() if name in sample]


def _float_image(sample: dict) -> torch.Tensor:
    return sample["image"].float()


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


class RandomScale:
    """Zoom by a factor drawn uniformly from ``[low, high]``: image bilinear, labels nearest.

    Metric depth is left unchanged by default (the scene did not move); ``adjust_depth=True``
    divides depth by the factor as the InvPT/ATRC recipes do.
    """

    def __init__(self, tasks: Mapping[str, Task], low: float, high: float, adjust_depth: bool = False) -> None:
        if not 0 < low <= high:
            raise ValueError(f"scale range must satisfy 0 < low ≤ high, got [{low}, {high}]")
        self.tasks, self.low, self.high, self.adjust_depth = tasks, low, high, adjust_depth

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        zoom = float(rng.uniform(self.low, self.high))
        height, width = sample["image"].shape[-2:]
        size = (max(1, round(height * zoom)), max(1, round(width * zoom)))
        image = F.interpolate(_float_image(sample)[None], size=size, mode="bilinear", align_corners=False)[0]
        sample["image"] = image
        for name, task in _targets(sample, self.tasks):
            sample[name] = task.resize(sample[name], size, zoom, self.adjust_depth)
        return sample


def pad_sample(sample: dict, tasks: Mapping[str, Task], size: tuple[int, int], centre: bool) -> dict:
    """Pad image (with 0), targets (with each task's ignore value) and evaluation targets (with -1)
    up to ``size``; records ``meta['pad']``."""
    height, width = sample["image"].shape[-2:]
    pad_h, pad_w = max(0, size[0] - height), max(0, size[1] - width)
    top, left = (pad_h // 2, pad_w // 2) if centre else (0, 0)
    if pad_h or pad_w:
        borders = (left, pad_w - left, top, pad_h - top)
        sample["image"] = F.pad(_float_image(sample), borders, value=0.0)
        for name, task in _targets(sample, tasks):
            target = sample[name]
            padded = F.pad(target.reshape((-1,) + target.shape[-2:]).float(), borders, value=task.pad_value)
            sample[name] = padded.reshape(target.shape[:-2] + padded.shape[-2:]).to(target.dtype)
        for key in {task.eval_target for task in tasks.values()} & set(sample):  # evaluation label images
            sample[key] = F.pad(sample[key], borders, value=EVAL_PAD)
    meta = sample.setdefault("meta", {})
    meta["pad"] = (top, left, height, width)
    return sample


class RandomCrop:
    """Crop ``size``; pad first when smaller. Up to 10 tries keep any class ≤ ``cat_max_ratio`` of the crop.

    With ``size=None`` the crop has the sample's original size (``meta['size']``), which undoes
    the size change of a random scale while keeping its zoom.

    The class-ratio rule (mmsegmentation's, used by the seeds) looks at the first classification
    task present; with no such task it is skipped.
    """

    def __init__(self, tasks: Mapping[str, Task], size: Sequence[int] | None, cat_max_ratio: float = 0.75) -> None:
        self.tasks, self.cat_max_ratio = tasks, cat_max_ratio
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.label_task = next((name for name, task in tasks.items() if task.is_classification), None)

    def _offsets(self, sample: dict, size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
        height, width = sample["image"].shape[-2:]
        crop_h, crop_w = size
        for _ in range(10):
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            if self.label_task is None or self.label_task not in sample or self.cat_max_ratio >= 1:
                break
            window = sample[self.label_task][..., top : top + crop_h, left : left + crop_w]
            labels = window[window != self.tasks[self.label_task].pad_value]
            counts = torch.bincount(labels.flatten().long()) if labels.numel() else torch.zeros(1)
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return top, left

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        size = self.size or tuple(sample["meta"]["size"])
        sample = pad_sample(sample, self.tasks, size, centre=False)
        top, left = self._offsets(sample, size, rng)
        crop_h, crop_w = size
        for key in ["image"] + [name for name, _ in _targets(sample, self.tasks)]:
            sample[key] = sample[key][..., top : top + crop_h, left : left + crop_w].contiguous()
        sample["meta"].pop("pad", None)
        return sample


class RandomHorizontalFlip:
    """Mirror left–right with probability ``p``; each task flips its own target (normals negate x)."""

    def __init__(self, tasks: Mapping[str, Task], p: float = 0.5) -> None:
        self.tasks, self.p = tasks, p

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.random() < self.p:
            sample["image"] = sample["image"].flip(-1)
            for name, task in _targets(sample, self.tasks):
                sample[name] = task.flip_horizontal(sample[name])
        return sample


class PhotometricDistortion:
    """mmseg-style colour jitter, each part with probability 1/2: brightness ±32, contrast and
    saturation ×[0.5, 1.5], hue ±18° of 180 (OpenCV units, i.e. ±0.1 of the hue circle)."""

    def __init__(self, brightness: float = 32, contrast: Sequence[float] = (0.5, 1.5),
                 saturation: Sequence[float] = (0.5, 1.5), hue: float = 18) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        image = _float_image(sample)
        draws = rng.random(4)
        if draws[0] < 0.5:
            image = image + float(rng.uniform(-self.brightness, self.brightness))
        if draws[1] < 0.5:
            image = image * float(rng.uniform(*self.contrast))
        image = image.clamp(0, 255) / 255
        if draws[2] < 0.5:
            image = TF.adjust_saturation(image, float(rng.uniform(*self.saturation)))
        if draws[3] < 0.5:
            image = TF.adjust_hue(image, float(rng.uniform(-self.hue, self.hue)) / 180)
        sample["image"] = image.clamp(0, 1) * 255
        return sample


class Normalize:
    """Scale the image to [0, 1], then subtract the dataset mean and divide by its std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        sample["image"] = (_float_image(sample) / 255 - self.mean) / self.std
        return sample


class Pad:
    """Pad centred to a fixed ``size``, or at the bottom/right up to a ``multiple`` of it.

    Evaluation pads and never resizes, so metrics see every original pixel; ``meta['pad']``
    records ``(top, left, height, width)`` to crop predictions back.
    """

    def __init__(self, tasks: Mapping[str, Task], size: Sequence[int] | None = None, multiple: int | None = None) -> None:
        if (size is None) == (multiple is None):
            raise ValueError("Pad takes exactly one of size or multiple")
        self.tasks, self.size, self.multiple = tasks, size, multiple

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        height, width = sample["image"].shape[-2:]
        if self.size is not None:
            if height > self.size[0] or width > self.size[1]:
                raise ValueError(f"image of {height}×{width} is larger than the pad size {tuple(self.size)}")
            return pad_sample(sample, self.tasks, tuple(self.size), centre=True)
        m = self.multiple
        return pad_sample(sample, self.tasks, (-(-height // m) * m, -(-width // m) * m), centre=False)


class ToFloatImage:
    """Make the image float32 (0..255) without changing it."""

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        sample["image"] = _float_image(sample)
        return sample
