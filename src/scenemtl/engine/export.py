"""Predictions saved as files during evaluation (e.g. boundary PNGs for the MATLAB SEISM benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scenemtl.errors import ConfigError
from scenemtl.metrics.boundary import to_levels


def png_array(prediction: torch.Tensor, task: str, quantize: str = "truncate") -> np.ndarray:
    """uint8 ``[H,W]``: class ids as they are, a probability map as ``uint8(255·p)`` (truncated, as the seeds
    save edges and saliency; ``quantize='round'`` rounds)."""
    if not prediction.is_floating_point():
        if int(prediction.max(initial=0) if prediction.numel() else 0) > 255:
            raise ConfigError(f"--save-png {task}: class ids above 255 do not fit an 8-bit PNG")
        return prediction.cpu().numpy().astype(np.uint8)
    if prediction.dim() == 3 and prediction.shape[0] == 1:
        return to_levels(prediction[0].cpu().numpy(), "truncate" if quantize == "none" else quantize)
    raise ConfigError(
        f"--save-png {task}: its predictions have {prediction.shape[0]} channels; PNG export takes class maps and "
        "one-channel probabilities (edge, saliency)"
    )


class PngWriter:
    """Writes ``<folder>/<id>.png`` per sample, with evaluation padding cropped away (SEISM's layout)."""

    def __init__(self, folder: str | Path, task: str, quantize: str = "truncate") -> None:
        self.folder = Path(folder)
        self.task, self.quantize = task, quantize
        self.written = 0

    def __call__(self, predictions: torch.Tensor, metas: list[dict]) -> None:
        """Save one batch."""
        for prediction, meta in zip(predictions, metas):
            array = png_array(prediction, self.task, self.quantize)
            self.folder.mkdir(parents=True, exist_ok=True)  # only once a prediction converts
            top, left, height, width = meta.get("pad", (0, 0, *array.shape[-2:]))
            Image.fromarray(array[top : top + height, left : left + width]).save(self.folder / f"{meta['id']}.png")
            self.written += 1


def parse_save_png(options: list[str]) -> dict[str, Path]:
    """``TASK=FOLDER`` options into a mapping; a malformed one names the fix."""
    folders = {}
    for option in options:
        task, sep, folder = option.partition("=")
        if not sep or not task or not folder:
            raise ConfigError(f"--save-png {option!r}: write TASK=FOLDER, e.g. edge=results/edge")
        folders[task] = Path(folder)
    return folders
