"""Colour maps for pictures of predictions (uint8 RGB)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Anchor colours of a perceptually ordered dark-blue → yellow ramp (viridis-like), interpolated.
_RAMP = np.array([[68, 1, 84], [65, 68, 135], [42, 120, 142], [34, 168, 132], [122, 209, 81], [253, 231, 37]], dtype=np.float64)


def label_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved class ids), ``[num_classes, 3]`` uint8."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def colorize_labels(labels: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class-id map ``[H,W]`` to RGB; ignored pixels are white."""
    out = np.full(labels.shape + (3,), 255, dtype=np.uint8)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < len(palette))
    out[valid] = palette[labels[valid]]
    return out


def colorize_scalar(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Scalar map ``[H,W]`` to RGB through a viridis-like ramp over [low, high] (default: min–max of finite values)."""
    finite = np.isfinite(values)
    if low is None or high is None:
        data = values[finite]
        low = float(data.min()) if data.size else 0.0
        high = float(data.max()) if data.size else 1.0
    scaled = np.clip((np.where(finite, values, low) - low) / max(high - low, 1e-12), 0, 1) * (len(_RAMP) - 1)
    index = np.minimum(scaled.astype(np.int64), len(_RAMP) - 2)
    fraction = (scaled - index)[..., None]
    rgb = _RAMP[index] * (1 - fraction) + _RAMP[index + 1] * fraction
    levels: np.ndarray = rgb.round().astype(np.uint8)
    return levels


def colorize_gray(values: np.ndarray) -> np.ndarray:
    """Probability map ``[H,W]`` in [0,1] to grey RGB."""
    gray = (np.clip(values, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals ``[3,H,W]`` to RGB as 255·(n+1)/2 (the seeds' encoding)."""
    rgb = (np.clip(normals, -1, 1) + 1) / 2 * 255
    levels: np.ndarray = np.moveaxis(rgb, 0, -1).round().astype(np.uint8)
    return levels


@dataclass
class Key:
    """What the colours of a task's picture mean: named swatches, and/or a colour bar with labelled ends."""

    swatches: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    #: ``[N,3]`` uint8 colours from left to right, with the labels of its two ends
    ramp: np.ndarray | None = None
    low: str = ""
    high: str = ""
    note: str = ""


def ramp_colors(kind: str = "scalar", steps: int = 256) -> np.ndarray:
    """The colours of ``colorize_scalar`` (``scalar``) or ``colorize_gray`` (``gray``) from low to high, ``[steps,3]``."""
    values = np.linspace(0.0, 1.0, steps)[None]
    colors = colorize_scalar(values, 0.0, 1.0) if kind == "scalar" else colorize_gray(values)
    return np.ascontiguousarray(colors[0])


def draw_key(key: Key, width: int, font_size: int) -> np.ndarray:
    """``key`` drawn as a white strip ``width`` wide (uint8 ``[h,width,3]``): a swatch and a name per row,
    then the colour bar with its end labels under it, then the note."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    row = int(font_size * 1.4)
    height = row * (len(key.swatches) + (2 if key.ramp is not None else 0) + (1 if key.note else 0)) + 4
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    y = 2
    for name, color in key.swatches:
        draw.rectangle([2, y + 1, 2 + font_size, y + font_size], fill=tuple(int(c) for c in color), outline="black")
        draw.text((font_size + 6, y), name, fill="black", font=font)
        y += row
    if key.ramp is not None:
        bar = np.asarray(Image.fromarray(key.ramp[None]).resize((width - 4, font_size), Image.Resampling.NEAREST))
        strip.paste(Image.fromarray(bar), (2, y))
        y += font_size + 2
        draw.text((2, y), key.low, fill="black", font=font)
        draw.text((width - 2, y), key.high, fill="black", font=font, anchor="ra")
        y += row
    if key.note:
        draw.text((2, y), key.note, fill="black", font=font)
    return np.asarray(strip)
