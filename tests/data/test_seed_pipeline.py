"""The NYUD and PASCAL-Context training recipes reproduce the seeds' augmentation pixel for pixel.

``Official`` below is a step-by-step transcription, written for this test, of the training
transforms ATRC, InvPT and TaskPrompter apply to NYUD and PASCAL-Context (``RandomScaling``
0.5–2, ``RandomCrop`` with ``cat_max_ratio`` 0.75, ``RandomHorizontalFlip``, mmseg's
``PhotoMetricDistortion``, ``Normalize``, centred ``PadImage``): H×W×C float32 arrays for every
key, ``cv2.resize`` with ``INTER_LINEAR`` for the image and ``INTER_NEAREST`` for labels, depth
divided by the scale, crop locations redrawn up to ten times, the image cast to uint8 for the
colour steps and OpenCV's HSV, padding after normalisation with 0 for the image and each key's
fill value. Its random draws (Python ``random``'s ``random``/``uniform``/``randint``) come from a
numpy Generator in call order, so both pipelines see the same draws.
"""

from __future__ import annotations

import cv2
import numpy as np
from pathlib import Path

import pytest
import torch

from scenemtl.config import load_config
from scenemtl.engine.builder import build_tasks, build_transform, dataset_info

REPO = Path(__file__).resolve().parents[2]  # configs/ are read from the checkout, whatever the working directory

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# the official fill values of PadImage (ours: each task's ignore value, the same numbers)
FILL = {"semseg": 255, "human_parts": 255, "sal": 255, "edge": 255, "depth": 0, "normals": 0}
OFFICIAL_KEY = {"saliency": "sal"}


class PythonRandom:
    """``random.random``, ``random.uniform`` and ``random.randint`` drawn from a numpy Generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def random(self) -> float:
        return float(self.rng.random())

    def uniform(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def randint(self, a: int, b: int) -> int:
        return int(self.rng.integers(a, b + 1))


class Official:
    """The seeds' training pipeline, transcribed step by step; ``events`` records which branches ran."""

    def __init__(self, crop: tuple[int, int], random: PythonRandom) -> None:
        self.crop, self.random, self.events = crop, random, set()

    def scale(self, sample: dict) -> dict:
        factor = self.random.uniform(0.5, 2.0)
        for key, value in sample.items():
            shape = np.shape(value)[:2]
            size = tuple(int(x * factor) for x in shape)
            mode = cv2.INTER_LINEAR if key == "image" else cv2.INTER_NEAREST
            scaled = cv2.resize(np.squeeze(value), size[::-1], interpolation=mode)
            if scaled.ndim == 2:
                scaled = np.expand_dims(scaled, axis=2)
            if key == "depth":
                scaled /= factor
            sample[key] = scaled
        return sample

    def _location(self, image: np.ndarray):
        height, width = image.shape[:2]
        if (height, width) == tuple(self.crop):
            return None
        top = self.random.randint(0, max(height - self.crop[0], 0))
        left = self.random.randint(0, max(width - self.crop[1], 0))
        return top, top + self.crop[0], left, left + self.crop[1]

    @staticmethod
    def _cut(value: np.ndarray, location):
        return value if location is None else value[location[0] : location[1], location[2] : location[3], :]

    def random_crop(self, sample: dict) -> dict:
        location = self._location(sample["image"])
        for attempt in range(10):
            labels, counts = np.unique(self._cut(sample["semseg"], location), return_counts=True)
            counts = counts[labels != 255]
            if len(counts) > 1 and np.max(counts) / np.sum(counts) < 0.75:
                break
            self.events.add("crop redrawn")
            location = self._location(sample["image"])
        else:
            self.events.add("eleventh window")  # ten windows failed: the last one drawn is kept unchecked
        return {key: self._cut(value, location) for key, value in sample.items()}

    def flip(self, sample: dict) -> dict:
        if self.random.random() < 0.5:
            for key, value in sample.items():
                sample[key] = np.fliplr(value).copy()
                if key == "normals":
                    sample[key][:, :, 0] *= -1
        return sample

    @staticmethod
    def _convert(image: np.ndarray, alpha: float = 1, beta: float = 0) -> np.ndarray:
        image = image.astype(np.float32) * alpha + beta
        return np.clip(image, 0, 255).astype(np.uint8)

    def _contrast(self, image: np.ndarray) -> np.ndarray:
        if self.random.random() < 0.5:
            self.events.add("contrast")
            return self._convert(image, alpha=self.random.uniform(0.5, 1.5))
        return image

    def photometric(self, sample: dict) -> dict:
        image = sample["image"].astype(np.uint8)
        if self.random.random() < 0.5:
            image = self._convert(image, beta=self.random.uniform(-32, 32))
        first = self.random.random() < 0.5
        self.events.add("contrast first" if first else "contrast last")
        if first:
            image = self._contrast(image)
        if self.random.random() < 0.5:
            self.events.add("saturation")
            image = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            image[:, :, 1] = self._convert(image[:, :, 1], alpha=self.random.uniform(0.5, 1.5))
            image = cv2.cvtColor(image, cv2.COLOR_HSV2RGB)
        if self.random.random() < 0.5:
            self.events.add("hue")
            image = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            image[:, :, 0] = (image[:, :, 0].astype(int) + self.random.randint(-18, 17)) % 180
            image = cv2.cvtColor(image, cv2.COLOR_HSV2RGB)
        if not first:
            image = self._contrast(image)
        sample["image"] = image.astype(np.float32)
        return sample

    @staticmethod
    def normalize(sample: dict) -> dict:
        scaled = sample["image"].copy() / 255.0
        scaled -= np.array(MEAN, dtype=np.float32).reshape(1, 1, 3)
        scaled /= np.array(STD, dtype=np.float32).reshape(1, 1, 3)
        sample["image"] = scaled
        return sample

    def pad(self, sample: dict) -> dict:
        for key, value in sample.items():
            height, width = value.shape[:2]
            dh, dw = max(self.crop[0] - height, 0), max(self.crop[1] - width, 0)
            if dh == 0 and dw == 0:
                continue
            self.events.add("padded")
            padded = np.full(
                (max(self.crop[0], height), max(self.crop[1], width), value.shape[2]), 0 if key == "image" else FILL[key], dtype=np.float32
            )
            padded[dh // 2 : dh // 2 + height, dw // 2 : dw // 2 + width, :] = value
            sample[key] = padded
        return sample

    def __call__(self, sample: dict) -> dict:
        for step in (self.scale, self.random_crop, self.flip, self.photometric, self.normalize, self.pad):
            sample = step(sample)
        return sample


def _smooth(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    coarse = rng.random((max(2, height // 16), max(2, width // 16), channels)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)


def _sample(tasks, size: tuple[int, int], seed: int) -> dict:
    """One sample in our data contract: blocky classes (one of them large, so the ratio rule redraws),
    ignore regions, smooth depth and unit normals, 0/1 edges and saliency, a photo-like image."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.clip(_smooth(rng, height, width, 3) * 300 - 20 + rng.normal(0, 6, (height, width, 3)), 0, 255)
    blocks = rng.integers(0, 6, (height // 20 + 1, width // 20 + 1))
    blocks[: blocks.shape[0] * 2 // 3] = 0  # class 0 covers most of the top: some crops break the 75 % rule
    if seed % 8 == 7:
        blocks[:] = 3  # one class only: no window passes, the crop loop runs out
    labels = np.kron(blocks, np.ones((20, 20), dtype=np.int64))[:height, :width]
    labels[rng.random((height, width)) < 0.02] = 255
    sample = {"image": torch.from_numpy(np.ascontiguousarray(image.astype(np.uint8).transpose(2, 0, 1)))}
    for name in tasks:
        if name in ("semseg", "human_parts"):
            values = labels if name == "semseg" else np.where(labels == 255, 255, labels % 7)
            sample[name] = torch.from_numpy(values.astype(np.int64))
        elif name == "depth":
            depth = (0.5 + 9.5 * _smooth(rng, height, width, 1)[..., 0]) * (labels != 255)
            sample[name] = torch.from_numpy(depth.astype(np.float32))[None]
        elif name == "normals":
            normals = _smooth(rng, height, width, 3) - 0.5
            normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
            sample[name] = torch.from_numpy(np.ascontiguousarray(normals.transpose(2, 0, 1).astype(np.float32)))
        else:  # edge, saliency: 0/1 maps
            sample[name] = torch.from_numpy((labels % 2 == 1).astype(np.float32))[None]
    sample["meta"] = {"id": str(seed), "size": size}
    return sample


def _official_input(sample: dict) -> dict:
    """Our sample in the official layout (H×W×C float32 arrays, official key names)."""
    out = {"image": sample["image"].permute(1, 2, 0).numpy().astype(np.float32)}
    for name, value in sample.items():
        if name in ("image", "meta"):
            continue
        array = value.numpy().astype(np.float32)
        out[OFFICIAL_KEY.get(name, name)] = array[..., None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(1, 2, 0))
    return out


RECIPES = {
    "nyud": ("configs/nyud/base.yaml", [(425, 560)]),
    "pascal_context": ("configs/pascal_context/base.yaml", [(375, 500), (500, 375), (333, 500)]),
}


@pytest.mark.parametrize("dataset", sorted(RECIPES))
def test_recipe_augmentation_equals_the_official_pipeline(dataset):
    path, sizes = RECIPES[dataset]
    config = load_config(REPO / path)
    info = dataset_info(config)
    tasks = build_tasks(config, info)
    transform = build_transform(config, tasks, info, train=True)
    crop = tuple(config.data.augment.crop)
    events: set = set()
    for seed in range(24):
        sample = _sample(tasks, sizes[seed % len(sizes)], seed)
        official = Official(crop, PythonRandom(seed))
        expected = official(_official_input(sample))
        ours = transform(sample, np.random.default_rng(seed))
        events |= official.events
        image = ours["image"]
        assert image.dtype == torch.float32 and image.shape == (3, *crop)
        assert np.array_equal(image.numpy().transpose(1, 2, 0), expected["image"]), f"image, seed {seed}"
        for name in tasks:
            want = expected[OFFICIAL_KEY.get(name, name)]
            got = ours[name].numpy()
            got = got[..., None] if got.ndim == 2 else got.transpose(1, 2, 0)
            assert got.shape == want.shape, (name, seed)
            assert np.array_equal(got.astype(np.float32), want), f"{name}, seed {seed}"
    # the draws covered every branch: padding, redrawn crops, an exhausted crop loop, both contrast
    # orders, saturation and hue
    assert {"padded", "crop redrawn", "eleventh window", "contrast first", "contrast last", "contrast", "saturation", "hue"} <= events
