"""Per-pixel classification tasks: semantic segmentation and human parts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scenemtl.fileio import read_label_png
from scenemtl.errors import ConfigError
from scenemtl.metrics import ConfusionMatrixMetric
from scenemtl.tasks.base import PREDICTION_FIX, Task
from scenemtl.tasks.colors import Key, colorize_labels, label_palette
from scenemtl.tasks.registry import register_task

IGNORE_INDEX = 255


class SegmentationTask(Task):
    """Per-pixel classification: cross-entropy with ignore 255, argmax, mIoU.

    ``miou``: 'accumulated' (one confusion matrix over the set: InvPT, ATRC, MTAN since 2020) or
    'per_image' (each image's mIoU averaged: MTAN before 2020).
    """

    pad_value = float(IGNORE_INDEX)
    is_classification = True
    output_kind = "classes"

    def __init__(self, name: str, class_names: Sequence[str], palette: np.ndarray | None = None, miou: str = "accumulated") -> None:
        super().__init__(name)
        if miou not in ("accumulated", "per_image"):
            raise ConfigError(f"tasks.{name}.miou must be 'accumulated' or 'per_image', got {miou!r}")
        self.per_image = miou == "per_image"
        if len(class_names) < 2:
            raise ConfigError(f"task '{name}' needs at least 2 classes, the dataset gives {list(class_names)}")
        self.class_names = list(class_names)
        self.out_channels = len(self.class_names)
        self.palette = np.asarray(palette, dtype=np.uint8) if palette is not None else label_palette(self.out_channels)

    def check_target(self, target: torch.Tensor, sample: bool = False) -> str | None:
        """Class ids outside 0..C−1 that are not the ignore value (a bad id would crash CUDA's loss)."""
        bad = (target != IGNORE_INDEX) & ((target < 0) | (target >= self.out_channels))
        if bool(bad.any()):
            # torch's Tensor.unique is unannotated
            ids = sorted({int(v) for v in target[bad].unique()[:5]})  # type: ignore[no-untyped-call]
            return f"{self.name} has ids {ids} outside 0..{self.out_channels - 1} and {IGNORE_INDEX} (ignore)"
        return None

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        """Pixels whose label is not 255."""
        return target != IGNORE_INDEX

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy averaged over the labelled pixels (zero when there are none)."""
        per_pixel = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
        valid = self.valid_mask(target)
        return per_pixel.sum() / valid.sum().clamp_min(1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class ids ``[B,H,W]``."""
        return logits.argmax(dim=1)

    def metric(self) -> ConfusionMatrixMetric:
        """Accumulated confusion matrix over this task's classes."""
        return ConfusionMatrixMetric(self.out_channels, IGNORE_INDEX, self.class_names, per_image=self.per_image)

    def output_prior(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """Log class frequencies of the labelled training pixels (add-one smoothed)."""
        counts = torch.ones(self.out_channels, dtype=torch.float64)
        for target in targets:
            labels = target[self.valid_mask(target)]
            counts += torch.bincount(labels.flatten().cpu(), minlength=self.out_channels).double()
        return (counts / counts.sum()).log().float()

    prediction_extensions = (".png",)

    def read_prediction(self, path: Path) -> torch.Tensor:
        """A class-id PNG."""
        return torch.from_numpy(read_label_png(path, f"{self.name} prediction (class-id PNG)", PREDICTION_FIX).astype(np.int64))[None]

    def colorize(self, prediction: torch.Tensor) -> np.ndarray:
        """Class colours from the dataset's palette (ignored pixels white)."""
        return colorize_labels(prediction.cpu().numpy(), self.palette, IGNORE_INDEX)

    def key(self, prediction: torch.Tensor, most: int = 6) -> Key:
        """The classes in the picture, largest first (at most ``most``, then how many more)."""
        ids, counts = np.unique(prediction.cpu().numpy(), return_counts=True)
        present = [int(i) for _, i in sorted(zip(-counts, ids)) if 0 <= i < len(self.class_names)]
        swatches = [(self.class_names[i], tuple(int(c) for c in self.palette[i])) for i in present[:most]]
        more = len(present) - most
        return Key(swatches=swatches, note=f"+{more} more classes" if more > 0 else "")


@register_task("semseg")
class SemanticSegmentation(SegmentationTask):
    """Semantic segmentation (``semseg``)."""


@register_task("human_parts")
class HumanParts(SegmentationTask):
    """Human part segmentation (``human_parts``); images without people are all ignore."""
