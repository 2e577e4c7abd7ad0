"""A metric that reports a task's loss averaged over the evaluation set."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scenemtl.metrics.base import StreamingMetric, fixed_point, fixed_zero, from_fixed


class LossMetric(StreamingMetric):
    """Mean of a per-pixel loss over every valid pixel of the dataset.

    ``pixel_loss(prediction, target)`` returns the per-pixel losses of the valid pixels (1-D).
    Used for boundaries until the ODS/OIS F-measure is computed, as the seeds' training code
    logs the edge loss on the validation set.
    """

    directions = {"loss": False}
    main = "loss"
    variant = "pixel-mean"
    # states (``add_state``)
    total: torch.Tensor
    count: torch.Tensor

    def __init__(self, pixel_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.pixel_loss = pixel_loss
        self.add_state("total", fixed_zero())
        self.add_state("count", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add the losses of a batch."""
        prediction, target = self._inputs(prediction, target)
        for image_prediction, image_target in zip(prediction, target):  # per image: exact in any batching
            losses = self.pixel_loss(image_prediction[None], image_target[None])
            self.total += fixed_point(losses.double().sum()[None])
            self.count += losses.numel()

    def compute(self) -> dict[str, float]:
        """The mean loss."""
        return {"loss": float(from_fixed(self.total)) / float(self.count) if self.count > 0 else float("nan")}
