"""Predictions saved as files during evaluation (e.g. boundary PNGs for the MATLAB SEISM benchmark)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scenemtl.errors import ConfigError
from scenemtl.metrics.boundary import to_levels
from scenemtl.tasks import Task


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


class PanelWriter:
    """Writes ``<folder>/<id>.png``: the input and each task's prediction with its key, and under it the
    ground truth in the task's colours (``scenemtl eval --save-panels``), for the first ``limit`` images.
    A depth map is coloured over its own range, so the key under a prediction gives that map's metres."""

    def __init__(
        self, folder: str | Path, tasks: Mapping[str, Task], mean: Sequence[float], std: Sequence[float], limit: int | None = 20
    ) -> None:
        self.folder, self.tasks, self.limit = Path(folder), dict(tasks), limit
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.written = 0

    def __call__(self, batch: dict, predictions: dict[str, torch.Tensor]) -> None:
        """Save the panels of one evaluation batch (padding cropped away)."""
        from scenemtl.engine.predict import make_panel

        for i, meta in enumerate(batch.get("meta", [])):
            if self.limit is not None and self.written >= self.limit:
                return
            top, left, height, width = meta.get("pad", (0, 0, *batch["image"].shape[-2:]))
            crop = (..., slice(top, top + height), slice(left, left + width))
            image = (batch["image"][i].float().cpu() * self.std + self.mean).clamp(0, 1)[crop]
            rgb = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            predicted = {name: predictions[name][i][crop].cpu() for name in self.tasks}
            truth = {name: batch[name][i][crop].cpu() for name in self.tasks if name in batch}
            top_row = make_panel(
                rgb, {n: t.colorize(predicted[n]) for n, t in self.tasks.items()}, {n: t.key(predicted[n]) for n, t in self.tasks.items()}
            )
            bottom = make_panel(rgb, {f"{n} (ground truth)": self.tasks[n].colorize(v) for n, v in truth.items()})
            panel = Image.new("RGB", (max(top_row.width, bottom.width), top_row.height + bottom.height), "white")
            panel.paste(top_row, (0, 0))
            panel.paste(bottom, (0, top_row.height))
            self.folder.mkdir(parents=True, exist_ok=True)
            panel.save(self.folder / f"{meta.get('id', self.written)}.png")
            self.written += 1
