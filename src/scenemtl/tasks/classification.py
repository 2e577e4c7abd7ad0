"""Image-level classification (``classification``): one class per image, beside the dense tasks.

The target of an image is its class id, int64 ``[]`` (batched ``[B]``), or −1 when the image has no
label for this task (many-to-many learning: in the Visual Decathlon every image belongs to one
domain, i.e. one task, and is unlabelled for the others); the model's output is logits ``[B, C]``,
the prediction the class id ``[B]``. An image-level target is neither a map nor an instance target
(``Task.is_image_level``): the geometric transforms leave it alone.

Loss: cross-entropy averaged over the labelled images of the batch (zero, with a gradient path,
when none is labelled). MTAN's decathlon code applies a softmax in the model and takes
``−Σ onehot·log(p + 1e−20)`` averaged over the batch, which is the same up to the 1e−20.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scenemtl.errors import ConfigError
from scenemtl.metrics.classification import UNLABELLED, AccuracyMetric
from scenemtl.tasks.base import Task
from scenemtl.tasks.colors import Key, label_palette
from scenemtl.tasks.registry import register_task

#: the picture of a prediction when the caller gives no size (pixels, H × W)
PICTURE_SIZE = (72, 72)


@register_task("classification")
class ClassificationTask(Task):
    """One class per image: cross-entropy, argmax, top-1 accuracy (see the module docstring).

    Class names come from the dataset (``DatasetInfo.class_names[name]``); without them give
    ``num_classes`` (the names are then ``class 0`` …).
    """

    is_map = False
    is_image_level = True
    pad_value = float(UNLABELLED)

    def __init__(
        self, name: str = "classification", class_names: Sequence[str] | None = None, num_classes: int | None = None, palette: Any = None
    ) -> None:
        super().__init__(name)
        if class_names is None and num_classes is None:
            raise ConfigError(f"task '{name}' needs class names from its dataset or tasks.{name}.num_classes")
        if class_names is not None and num_classes is not None and num_classes != len(class_names):
            raise ConfigError(f"tasks.{name}.num_classes is {num_classes} but the dataset names {len(class_names)} classes")
        names = list(class_names) if class_names is not None else [f"class {i}" for i in range(int(num_classes or 0))]
        if len(names) < 2:
            raise ConfigError(f"task '{name}' needs at least 2 classes, got {len(names)}")
        self.class_names = names
        self.out_channels = len(names)
        self.palette = np.asarray(palette, dtype=np.uint8) if palette is not None else label_palette(min(self.out_channels, 256))

    # -- learning -------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy averaged over the labelled images (target ≠ −1)."""
        target = target.reshape(-1).long()
        per_image = F.cross_entropy(logits.float(), target, ignore_index=UNLABELLED, reduction="none")
        return per_image.sum() / self.valid_mask(target).sum().clamp_min(1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class ids ``[B]``."""
        return logits.argmax(dim=1)

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        """``[B]``: the images labelled for this task."""
        return target.reshape(-1) != UNLABELLED

    def unlabelled(self, target: Any) -> torch.Tensor:
        """−1 (no label for this task)."""
        return torch.full_like(torch.as_tensor(target), UNLABELLED)

    def metric(self) -> AccuracyMetric:
        """Top-1 accuracy over the labelled images."""
        return AccuracyMetric(self.out_channels)

    def output_prior(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """Log class frequencies of the labelled training images (add-one smoothed)."""
        counts = torch.ones(self.out_channels, dtype=torch.float64)
        for target in targets:
            labels = target.reshape(-1)[self.valid_mask(target)]
            counts += torch.bincount(labels.cpu(), minlength=self.out_channels).double()
        return (counts / counts.sum()).log().float()

    def check_target(self, target: torch.Tensor, sample: bool = False) -> str | None:
        """Class ids outside 0..C−1 that are not −1 (unlabelled)."""
        values = torch.as_tensor(target).reshape(-1)
        if values.dtype.is_floating_point:
            return f"{self.name} targets must be integer class ids, got {values.dtype}"
        bad = (values != UNLABELLED) & ((values < 0) | (values >= self.out_channels))
        if bool(bad.any()):
            ids = sorted({int(v) for v in values[bad][:5]})
            return f"{self.name} has class ids {ids} outside 0..{self.out_channels - 1} and −1 (unlabelled)"
        return None

    # -- pictures ---------------------------------------------------------------------------------
    def colorize(self, prediction: torch.Tensor, size: Sequence[int] | None = None) -> np.ndarray:
        """A ``size`` (H, W) picture filled with the class's colour and its name written on it."""
        from PIL import Image, ImageDraw, ImageFont

        height, width = (int(size[0]), int(size[1])) if size is not None else PICTURE_SIZE
        index = int(torch.as_tensor(prediction).reshape(-1)[0])
        if index == UNLABELLED:
            return np.full((height, width, 3), 255, dtype=np.uint8)
        color = tuple(int(c) for c in self.palette[index % len(self.palette)])
        picture = Image.new("RGB", (width, height), color)
        font = ImageFont.load_default(size=max(10, min(28, width // 10)))
        text = "black" if sum(color) > 380 else "white"
        ImageDraw.Draw(picture).text((4, 4), self.class_names[index], fill=text, font=font)
        return np.asarray(picture)

    def key(self, prediction: torch.Tensor) -> Key:
        """The predicted class."""
        index = int(torch.as_tensor(prediction).reshape(-1)[0])
        color = tuple(int(c) for c in self.palette[index % len(self.palette)])
        return Key(swatches=[(self.class_names[index], color)] if index != UNLABELLED else [])
