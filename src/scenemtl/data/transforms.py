"""Joint transforms: geometry applied to the image and every task's target consistently.

Each transform is called as ``transform(sample, rng)`` with a numpy Generator, so that the
augmentation of a sample is a pure function of its seed (exact resume, any number of workers).
Task-specific label handling (nearest resampling, flipping normals, depth under zoom, pad
values) is asked of the Task objects; no transform branches on a task's name.

The training transforms reproduce the pipeline of the seeds (ATRC's, copied by InvPT,
TaskPrompter and DiffusionMTL; its photometric step is mmsegmentation's) operation for operation,
so that a recipe trains on the same pixels as the official code for the same random draws:

1. ``RandomScale``: a zoom ``s ~ U[low, high]``; the new size is ``int(H·s) × int(W·s)`` (floor);
   the image is resampled by ``cv2.resize`` (``INTER_LINEAR``) in float32, targets with OpenCV's
   ``INTER_NEAREST`` rule (source index ``⌊i·src/dst⌋``), depth divided by ``s``;
2. ``RandomCrop``: an offset drawn in ``[0, H−h] × [0, W−w]``; an image smaller than the crop is
   *not* padded here (the crop keeps what there is); with the class-ratio rule a window in which
   one class holds ``cat_max_ratio`` of the labelled pixels or more is redrawn, up to ten times,
   and the eleventh window is kept unchecked, as the official loop does;
3. ``RandomHorizontalFlip``;
4. ``PhotometricDistortion``: the image is truncated to uint8, then brightness, contrast (first
   or last, at random), saturation and hue in OpenCV's uint8 HSV (hue in steps of 1/180 of the
   circle), each with probability 1/2 and uint8 truncation after each step;
5. ``Normalize``: ``(x/255 − mean)/std`` in float32;
6. ``Pad``: centred, after normalisation, so the image's border is 0 (the mean colour) and no
   colour jitter touches it; targets take their task's ignore value.

Random draws are made in the official order with Python ``random``'s semantics
(``random()``, ``uniform(a, b)``, inclusive ``randint(a, b)``), taken from the sample's Generator
(see ``Draws``); ``tests/data/test_seed_pipeline.py`` checks the whole pipeline pixel for pixel
against a step-by-step transcription of the official transforms fed the same draws.

Images are numpy ``H×W×3`` arrays (OpenCV's layout) while being augmented and ``[3,H,W]``
tensors otherwise; ``Normalize`` returns the float tensor the model reads.

Video samples (self-supervised depth) also hold ``frames``, uint8 ``[F,3,H,W]`` (the clip's frames,
the annotated one included, not colour-jittered: the photometric loss compares them as captured)
and ``camera``, the float32 ``[3,3]`` camera matrix (``scenemtl.geometry``'s convention). The
geometric steps apply to them what they apply to the image: the same zoom (``cv2.resize`` of the
uint8 frames, ``INTER_LINEAR``), crop, flip and pad, and the camera matrix follows (scaled, shifted,
mirrored). A sample whose ``meta['camera_flip']`` is ``(W, H)`` mirrors its camera as DenseMTL does
(``u0 → W − u0`` and ``v0 → H − v0`` in the release's full-size pixels; ``dataset/base.py:get_K``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from scenemtl import geometry
from scenemtl.fileio import Stored, decode_stored
from scenemtl.tasks import Task
from scenemtl.metrics.base import EVAL_PAD


class Draws:
    """Python ``random``'s calls on a numpy Generator: the one place the transforms draw numbers."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def random(self) -> float:
        return float(self.rng.random())

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def randint(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``, both ends included (as ``random.randint``)."""
        return int(self.rng.integers(low, high + 1))


def _camera(sample: dict, change) -> None:
    """Replace the sample's camera matrix by ``change(matrix)`` (float64 numpy in, float32 tensor out)."""
    if "camera" in sample:
        sample["camera"] = torch.from_numpy(change(np.asarray(sample["camera"], dtype=np.float64)).astype(np.float32))


def _frames_hwc(frames: torch.Tensor) -> list[np.ndarray]:
    return [np.ascontiguousarray(frame.permute(1, 2, 0).numpy()) for frame in frames]


def _instances(sample: dict, tasks: Mapping[str, Task]):
    """(name, task) of the instance (non-map) targets in ``sample``."""
    return [(name, task) for name, task in tasks.items() if name in sample and not task.is_map and not task.is_image_level]


def _targets(sample: dict, tasks: Mapping[str, Task]):
    """(name, task) of the map targets in ``sample`` (instance targets move by ``_instances``)."""
    return [(name, task) for name, task in tasks.items() if name in sample and task.is_map]


def image_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """The image as a contiguous numpy ``H×W×3`` array (a ``[3,H,W]`` tensor is transposed)."""
    if torch.is_tensor(image):
        image = image.permute(1, 2, 0).numpy()
    return np.ascontiguousarray(image)


def image_size(image: torch.Tensor | np.ndarray | Stored) -> tuple[int, int]:
    """``(H, W)`` of a ``[3,H,W]`` tensor, an ``H×W×3`` array or a ``Stored`` image."""
    return tuple(image.shape[-2:]) if torch.is_tensor(image) or isinstance(image, Stored) else tuple(image.shape[:2])


def nearest_indices(source: int, target: int) -> np.ndarray:
    """OpenCV's ``INTER_NEAREST`` source index of each of ``target`` output positions.

    ``min(⌊i·f⌋, source−1)`` with ``f = 1/(target/source)`` in double precision, as
    ``cv2.resize`` computes it (which differs from the pixel-centre rule on about 1 % of the
    pixels at non-integer scales).
    """
    step = 1.0 / (target / source)
    return np.minimum(np.floor(np.arange(target) * step).astype(np.int64), source - 1)


class Compose:
    """Apply transforms in order; an image still in numpy form at the end becomes a float ``[3,H,W]`` tensor.

    Takes samples with ``Stored`` values (``reads_stored``; this module's transforms all handle
    them): they are decoded before the first transform that does not, and at the end unless
    ``keep_stored`` (the training loader then ships 8-bit values and the device decodes them:
    ``data.decode_on_device``)."""

    reads_stored = True

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator, keep_stored: bool = False) -> dict:
        stored = True
        for transform in self.transforms:
            if stored and not getattr(transform, "reads_stored", False):
                sample, stored = decode_stored(sample), False
            sample = transform(sample, rng, store=True) if getattr(transform, "stores", False) else transform(sample, rng)
        if stored and not keep_stored:
            sample = decode_stored(sample)
        if isinstance(sample.get("image"), np.ndarray):
            sample["image"] = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1))).float()
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


class RandomScaleCrop:
    """A random zoom followed by a random crop, as ``RandomScale`` then ``RandomCrop`` (same draws, same pixels).

    Targets are resampled at the crop window only (nearest resampling commutes with cropping),
    the image at full size (bilinear resampling of the window alone would round differently).
    ``Stored`` targets (8-bit as in their files) are picked from their stored bytes and stay
    stored (``reads_stored``); the class-ratio rule counts stored values.

    * ``scale``: ``(low, high)`` or ``None`` (no zoom);
    * ``crop``: ``(h, w)``, ``"original"`` (the sample's size before the zoom, ``meta['size']``:
      keeps the zoom, undoes the size change) or ``None`` (no crop);
    * ``cat_max_ratio``: the class-ratio rule on the first classification task (``semseg``
      first when present); ``1`` turns it off;
    * ``adjust_depth``: depth-like targets change their values with the zoom (``Task.resample``).
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        scale: Sequence[float] | None = None,
        crop: Sequence[int] | str | None = None,
        cat_max_ratio: float = 1.0,
        adjust_depth: bool = False,
    ) -> None:
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale range must satisfy 0 < low ≤ high, got {list(scale)}")
        if isinstance(crop, str) and crop != "original":
            raise ValueError(f"crop must be [height, width], 'original' or None, got {crop!r}")
        self.tasks, self.adjust_depth, self.cat_max_ratio = tasks, adjust_depth, cat_max_ratio
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        self.crop = crop if crop is None or isinstance(crop, str) else (int(crop[0]), int(crop[1]))
        names = [name for name, task in tasks.items() if task.is_classification]
        self.label_task = "semseg" if "semseg" in names else next(iter(names), None)

    reads_stored = True

    def _crop_size(self, sample: dict) -> tuple[int, int] | None:
        if self.crop == "original":
            return tuple(sample["meta"]["size"])
        return self.crop

    def _window(self, sample: dict, rows: np.ndarray | None, cols: np.ndarray | None):
        """``counts(top, left, crop)``: the class counts the ratio rule reads in a window of the zoomed
        image (``rows``/``cols``: the nearest source indices of the zoom), or ``None`` when the rule
        is off. Stored labels are counted by stored value, then added up by the label each decodes to."""
        if self.label_task is None or self.label_task not in sample or self.cat_max_ratio >= 1:
            return None
        target = sample[self.label_task]
        table = target.tables[0] if isinstance(target, Stored) else None
        if table is not None and table.min() < 0:
            target, table = target.decode(), None
        labels = target.array if table is not None else target.numpy()

        def counts(top: int, left: int, crop: tuple[int, int]) -> np.ndarray:
            if rows is None:
                picked = labels[..., top : top + crop[0], left : left + crop[1]]
            else:
                picked = np.take(np.take(labels, rows[top : top + crop[0]], axis=-2), cols[left : left + crop[1]], axis=-1)
            if table is None:
                return np.bincount(picked.ravel())
            return np.bincount(table, weights=np.bincount(picked.ravel(), minlength=256)).astype(np.int64)

        return counts

    def _window_ok(self, counts: np.ndarray) -> bool:
        ignore = int(self.tasks[self.label_task].pad_value)
        counts = np.delete(counts, ignore) if ignore < len(counts) else counts
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def _offsets(self, size: tuple[int, int], crop: tuple[int, int], window, draws: Draws) -> tuple[int, int] | None:
        """The official ``get_random_crop_loc`` loop: ``None`` when the sizes are equal (no draw)."""
        if size == crop:
            return None

        def location() -> tuple[int, int]:
            return draws.randint(0, max(size[0] - crop[0], 0)), draws.randint(0, max(size[1] - crop[1], 0))

        top, left = location()
        if window is not None:
            for _ in range(10):
                if self._window_ok(window(top, left, crop)):
                    break
                top, left = location()
        return top, left

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        draws = Draws(rng)
        image = image_hwc(sample["image"])
        height, width = image.shape[:2]
        rows = cols = None
        zoom = 1.0
        if self.scale is not None:
            zoom = draws.uniform(*self.scale)
            new = (max(1, int(height * zoom)), max(1, int(width * zoom)))
            if zoom != 1.0:
                image = cv2.resize(image.astype(np.float32, copy=False), new[::-1], interpolation=cv2.INTER_LINEAR)
                rows, cols = nearest_indices(height, new[0]), nearest_indices(width, new[1])
        crop = self._crop_size(sample)
        if crop is not None:
            size = image.shape[:2]
            offsets = self._offsets(size, crop, self._window(sample, rows, cols), draws)
            if offsets is not None:
                top, left = offsets
                image = image[top : top + crop[0], left : left + crop[1]]
                rows = np.arange(size[0]) if rows is None else rows
                cols = np.arange(size[1]) if cols is None else cols
                rows, cols = rows[top : top + crop[0]], cols[left : left + crop[1]]
        sample["image"] = image  # the crop may be a view: the next step that needs a compact array copies it
        if "frames" in sample or "camera" in sample:
            _scale_crop_video(sample, (height, width), image.shape[:2], zoom, offsets if crop is not None else None)
        for name, _ in _instances(sample, self.tasks):
            zoomed = (max(1, int(height * zoom)), max(1, int(width * zoom))) if zoom != 1.0 else (height, width)
            top, left = offsets if crop is not None and offsets is not None else (0, 0)
            sample[name] = sample[name].resize((height, width), zoomed).shift(top, left)
        if rows is not None:
            index_rows, index_cols = torch.from_numpy(rows), torch.from_numpy(cols)
            for name, task in _targets(sample, self.tasks):
                sample[name] = task.resample(sample[name], index_rows, index_cols, zoom, self.adjust_depth)
            for key in _eval_keys(sample, self.tasks):
                sample[key] = sample[key].index_select(-2, index_rows).index_select(-1, index_cols)
        return sample


def _scale_crop_video(sample: dict, size: tuple[int, int], final: tuple[int, int], zoom: float, offsets) -> None:
    """The zoom and crop of ``RandomScaleCrop`` applied to ``frames`` and ``camera``."""
    zoomed = (max(1, int(size[0] * zoom)), max(1, int(size[1] * zoom))) if zoom != 1.0 else size
    top, left = offsets if offsets is not None else (0, 0)
    if "frames" in sample:
        frames = sample["frames"]
        if zoomed != size:
            picked = [cv2.resize(f, zoomed[::-1], interpolation=cv2.INTER_LINEAR) for f in _frames_hwc(frames)]
            frames = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2)
        sample["frames"] = frames[..., top : top + final[0], left : left + final[1]].contiguous()
    _camera(sample, lambda k: geometry.crop_intrinsics(geometry.resize_intrinsics(k, size, zoomed), top, left))


def RandomScale(tasks: Mapping[str, Task], low: float, high: float, adjust_depth: bool = False) -> RandomScaleCrop:
    """Zoom by ``s ~ U[low, high]`` to ``int(H·s) × int(W·s)``: image bilinear (OpenCV, float32), targets
    nearest (OpenCV's rule). Metric depth is unchanged by default (the scene did not move);
    ``adjust_depth=True`` divides it by ``s`` as the InvPT/ATRC recipes do."""
    return RandomScaleCrop(tasks, scale=(low, high), adjust_depth=adjust_depth)


def RandomCrop(tasks: Mapping[str, Task], size: Sequence[int] | None, cat_max_ratio: float = 0.75) -> RandomScaleCrop:
    """Crop ``size`` (``None``: the sample's original size, ``meta['size']``) with the class-ratio rule; an
    image smaller than the crop keeps its size (``Pad`` after ``Normalize`` fills it)."""
    return RandomScaleCrop(tasks, crop="original" if size is None else size, cat_max_ratio=cat_max_ratio)


def _eval_keys(sample: dict, tasks: Mapping[str, Task]) -> list[str]:
    return sorted({task.eval_target for task in tasks.values()} & set(sample))


def pad_sample(sample: dict, tasks: Mapping[str, Task], size: tuple[int, int], centre: bool) -> dict:
    """Pad image (with 0), targets (with each task's ignore value) and evaluation targets (with -1)
    up to ``size``; records ``meta['pad']`` = ``(top, left, height, width)``."""
    image = sample["image"]
    height, width = image_size(image)
    pad_h, pad_w = max(0, size[0] - height), max(0, size[1] - width)
    top, left = (pad_h // 2, pad_w // 2) if centre else (0, 0)
    if pad_h or pad_w:
        borders = (left, pad_w - left, top, pad_h - top)
        if isinstance(image, Stored):
            sample["image"] = image.pad(borders, 0.0)
        elif torch.is_tensor(image):
            sample["image"] = F.pad(image.float(), borders, value=0.0)
        else:
            sample["image"] = np.pad(image, ((top, pad_h - top), (left, pad_w - left), (0, 0)))
        for name, task in _targets(sample, tasks):
            target = sample[name]
            if isinstance(target, Stored):
                sample[name] = target.pad(borders, task.pad_value)
                continue
            padded = F.pad(target.reshape((-1,) + target.shape[-2:]).float(), borders, value=task.pad_value)
            sample[name] = padded.reshape(target.shape[:-2] + padded.shape[-2:]).to(target.dtype)
        for key in _eval_keys(sample, tasks):  # evaluation label images
            sample[key] = F.pad(sample[key], borders, value=EVAL_PAD)
        if "frames" in sample:
            sample["frames"] = F.pad(sample["frames"], borders, value=0)
        _camera(sample, lambda k: geometry.crop_intrinsics(k, -top, -left))
        for name, _ in _instances(sample, tasks):
            sample[name] = sample[name].shift(-top, -left)
    meta = sample.setdefault("meta", {})
    meta["pad"] = (top, left, height, width)
    return sample


class RandomHorizontalFlip:
    """Mirror left–right with probability ``p``; each task flips its own target (normals negate x). Samples
    with ``meta['flip']`` False are never mirrored."""

    reads_stored = True

    def __init__(self, tasks: Mapping[str, Task], p: float = 0.5) -> None:
        self.tasks, self.p = tasks, p

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        # a sample may forbid the flip (meta['flip'] False: text, digits, signs); the draw is made either way
        if Draws(rng).random() < self.p and sample.get("meta", {}).get("flip", True):
            image = sample["image"]
            # numpy: a compact copy by OpenCV (numpy's later reads of a reversed view are ~10× slower)
            sample["image"] = image.flip(-1) if torch.is_tensor(image) else cv2.flip(np.ascontiguousarray(image), 1).reshape(image.shape)
            for name, task in _targets(sample, self.tasks):
                sample[name] = task.flip_horizontal(sample[name])
            for key in _eval_keys(sample, self.tasks):
                sample[key] = sample[key].flip(-1)
            if "frames" in sample:
                sample["frames"] = sample["frames"].flip(-1)
            meta = sample.get("meta", {})
            width = image_size(sample["image"])[1]
            for name, _ in _instances(sample, self.tasks):
                sample[name] = sample[name].flip(width)
            if meta.get("camera_flip"):
                _camera(sample, lambda k: densemtl_flip(k, meta["camera_flip"], meta["size"][1], width))
            else:
                _camera(sample, lambda k: geometry.flip_intrinsics(k, width))
        return sample


def densemtl_flip(camera: np.ndarray, full_size: Sequence[float], original_width: int, width: int) -> np.ndarray:
    """DenseMTL's mirrored camera (``dataset/base.py:get_K``), for a sample ``original_width`` wide cropped to
    ``width`` at any column before the flip: DenseMTL flips the loaded image, crops at x1, and sets
    ``u0 → W_full − u0 − x1`` and ``v0 → H_full − v0 − y1`` with the release's full size ``(W_full, H_full)``
    (v0 moves too, though a mirror keeps rows). Exact for crops that keep every row (its SDE recipe:
    512×1024 images, 512×512 crops)."""
    out = np.array(camera, dtype=np.float64)
    out[0, 2] = (full_size[0] - original_width) + width - camera[0, 2]
    out[1, 2] = full_size[1] - camera[1, 2]
    return out


def _saturate(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's ``convert``: ``uint8(clip(float32(x)·α + β, 0, 255))``, truncating, in float32."""
    out = values.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


BYTES = np.arange(256, dtype=np.uint8)


def _lookup(image: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    return image if table is None else cv2.LUT(image, table)


def _on_channel(channel: int, table: np.ndarray) -> np.ndarray:
    """A three-channel lookup table that applies ``table`` to one channel and keeps the others."""
    tables = np.repeat(BYTES[None, :, None], 3, axis=2)
    tables[0, :, channel] = table
    return tables


class PhotometricDistortion:
    """mmseg's ``PhotoMetricDistortion`` as the seeds use it, on the uint8 image:

    brightness ``+U(−32, 32)``; contrast ``×U(0.5, 1.5)``, applied first or last (a fair draw);
    saturation: OpenCV's uint8 HSV, S ``×U(0.5, 1.5)``; hue: H ``+ randint(−18, 17) mod 180``
    (OpenCV's hue unit is 2°). Each part fires with probability 1/2; every step truncates to
    uint8, and the image is truncated to uint8 on entry. Draw order: brightness, order, contrast
    (if first), saturation, hue, contrast (if last). The result stays uint8 (``Normalize``
    makes it float32, as the official ``astype(float32)`` would).

    Every step maps each uint8 value to one uint8 value, so each is computed once for the 256
    values (with the float32 arithmetic above) and applied as a lookup table; brightness and a
    leading contrast are composed into one table. The pixels are those of the step-by-step
    computation (``tests/data/test_seed_pipeline.py``).
    """

    reads_stored = True  # it changes the image only

    def __init__(
        self, brightness: float = 32, contrast: Sequence[float] = (0.5, 1.5), saturation: Sequence[float] = (0.5, 1.5), hue: int = 18
    ) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, tuple(contrast), tuple(saturation), int(hue)

    def _contrast(self, draws: Draws) -> np.ndarray | None:
        if draws.random() < 0.5:
            return _saturate(BYTES, alpha=draws.uniform(*self.contrast))
        return None

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        draws = Draws(rng)
        image = sample["image"]
        image = (image.permute(1, 2, 0).numpy() if torch.is_tensor(image) else image).astype(np.uint8, order="C")
        table = None  # the pointwise steps not yet applied, composed
        if draws.random() < 0.5:
            table = _saturate(BYTES, beta=draws.uniform(-self.brightness, self.brightness))
        contrast_first = draws.random() < 0.5
        if contrast_first:
            contrast = self._contrast(draws)
            if contrast is not None:
                table = contrast if table is None else contrast[table]
        if draws.random() < 0.5:  # saturation
            image = _lookup(image, table)
            table = None
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            image = cv2.cvtColor(cv2.LUT(hsv, _on_channel(1, _saturate(BYTES, alpha=draws.uniform(*self.saturation)))), cv2.COLOR_HSV2RGB)
        if draws.random() < 0.5:  # hue
            image = _lookup(image, table)
            table = None
            shifted = (BYTES.astype(np.int64) + draws.randint(-self.hue, self.hue - 1)) % 180
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            image = cv2.cvtColor(cv2.LUT(hsv, _on_channel(0, shifted.astype(np.uint8))), cv2.COLOR_HSV2RGB)
        if not contrast_first:
            contrast = self._contrast(draws)
            if contrast is not None:
                table = contrast if table is None else contrast[table]
        image = _lookup(image, table)
        sample["image"] = image
        return sample


def _is_bytes_image(image) -> bool:
    """A uint8 image with three channels: ``[3,H,W]`` tensor or ``H×W×3`` array."""
    if torch.is_tensor(image):
        return image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def _without_stats(sample: dict) -> dict:
    """``sample`` whose meta no longer names a normalisation (it has been applied)."""
    sample["meta"] = {k: v for k, v in sample["meta"].items() if k not in ("mean", "std")}
    return sample


class Normalize:
    """``(x/255 − mean)/std`` in float32, the official order of operations; a sample whose ``meta`` holds
    ``mean`` and ``std`` (per-domain statistics) is normalised with those instead.

    Returns the float ``[3,H,W]`` tensor. With ``store`` (``Compose`` asks for it) a uint8 image
    becomes a ``Stored`` image instead, whose tables are those operations done once for the 256
    values: decoded, the same float32 numbers, and left undecoded by the training loader so that
    batches travel as bytes (``data.decode_on_device``)."""

    reads_stored = True
    stores = True

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        tables = np.repeat(BYTES.astype(np.float32)[None, :], 3, axis=0)
        tables /= np.float32(255)
        tables -= self.mean[:, 0]
        tables /= self.std[:, 0]
        self.tables = list(tables)
        self._own: dict[tuple, Normalize] = {}

    def __call__(self, sample: dict, rng: np.random.Generator | None = None, store: bool = False) -> dict:
        meta = sample.get("meta", {})
        if "mean" in meta and "std" in meta:  # the sample's own normalisation (the decathlon's per-domain statistics)
            key = (tuple(meta["mean"]), tuple(meta["std"]))
            if key not in self._own:
                self._own[key] = Normalize(*key)
            return self._own[key](_without_stats(sample), rng, store)
        image = sample["image"]
        if _is_bytes_image(image):
            stored = Stored(image_hwc(image), self.tables)
            sample["image"] = stored if store else stored.decode()
            return sample
        chw = image.numpy() if torch.is_tensor(image) else image.transpose(2, 0, 1)
        out = np.array(chw, dtype=np.float32, order="C")  # always a copy: the input is never changed
        out /= np.float32(255)
        out -= self.mean
        out /= self.std
        sample["image"] = torch.from_numpy(out)
        return sample


class Pad:
    """Pad centred to a fixed ``size``, to the sample's ``original`` size, or at the bottom/right up to a
    ``multiple``.

    Evaluation pads and never resizes, so metrics see every original pixel; ``meta['pad']``
    records ``(top, left, height, width)`` to crop predictions back. Training pads a crop that
    came out smaller than its size (after a zoom below 1), after normalisation, as the seeds.
    """

    reads_stored = True

    def __init__(
        self, tasks: Mapping[str, Task], size: Sequence[int] | None = None, multiple: int | None = None, original: bool = False
    ) -> None:
        if (size is not None) + (multiple is not None) + bool(original) != 1:
            raise ValueError("Pad takes exactly one of size, multiple or original")
        self.tasks, self.size, self.multiple, self.original = tasks, size, multiple, original

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        height, width = image_size(sample["image"])
        if self.original:
            return pad_sample(sample, self.tasks, tuple(sample["meta"]["size"]), centre=True)
        if self.size is not None:
            if height > self.size[0] or width > self.size[1]:
                raise ValueError(f"image of {height}×{width} is larger than the pad size {tuple(self.size)}")
            return pad_sample(sample, self.tasks, tuple(self.size), centre=True)
        m = self.multiple
        return pad_sample(sample, self.tasks, (-(-height // m) * m, -(-width // m) * m), centre=False)


class ToFloatImage:
    """Make a ``[3,H,W]`` image tensor float32 (0..255) without changing it."""

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        image = sample["image"]
        sample["image"] = (
            image.float() if torch.is_tensor(image) else torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        )
        return sample
