"""Saliency max F-measure and IoU, pooled over the dataset."""

from __future__ import annotations

import torch

from scenemtl.metrics.base import StreamingMetric


class SaliencyMetric(StreamingMetric):
    """Max F_β over thresholds (β² = 0.3) and IoU at 0.5, from counts pooled over the dataset.

    As ATRC's ``MaxF``: thresholds 0.05, 0.10, …, 0.95 on the saliency probability; true
    positives, predicted positives and actual positives summed over every valid pixel of the
    dataset; F_β = (1+β²)PR/(β²P+R) at each threshold; the best is reported. (InvPT's meter
    applies a second sigmoid before thresholding; that variant is not this one.)
    """

    directions = {"max_f": True, "iou": True}
    main = "max_f"
    variant = "dataset-pooled, beta2=0.3"

    def __init__(self, beta_squared: float = 0.3, threshold_step: float = 0.05, ignore_index: int = 255) -> None:
        super().__init__()
        self.beta_squared = beta_squared
        self.ignore_index = ignore_index
        n = round(1 / threshold_step) - 1
        self.thresholds = torch.arange(1, n + 1, dtype=torch.float64) * threshold_step
        self.add_state("true_pos", torch.zeros(n, dtype=torch.float64))
        self.add_state("pred_pos", torch.zeros(n, dtype=torch.float64))
        self.add_state("actual_pos", torch.zeros((), dtype=torch.float64))
        self.add_state("valid", torch.zeros((), dtype=torch.float64))
        self.add_state("intersection", torch.zeros((), dtype=torch.float64))
        self.add_state("union", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of saliency probabilities and {0,1} targets (255 ignored)."""
        prediction, target = self._inputs(prediction, target)
        valid = target != self.ignore_index
        prob = prediction[valid].double()
        gt = target[valid] > 0.5
        above = prob[None, :] >= self.thresholds.to(prob.device)[:, None]
        self.true_pos += (above & gt[None, :]).sum(1).to(self.true_pos)
        self.pred_pos += above.sum(1).to(self.pred_pos)
        self.actual_pos += gt.sum()
        self.valid += gt.numel()
        binary = prob >= 0.5
        self.intersection += (binary & gt).sum()
        self.union += (binary | gt).sum()

    def compute(self) -> dict[str, float]:
        """``max_f`` and ``iou`` in percent, and the threshold that gave ``max_f`` (NaN without labels)."""
        if self.valid == 0:
            return {"max_f": float("nan"), "iou": float("nan"), "max_f_threshold": float("nan")}
        precision = self.true_pos / self.pred_pos.clamp_min(1)
        recall = self.true_pos / self.actual_pos.clamp_min(1)
        b2 = self.beta_squared
        denominator = b2 * precision + recall
        f = torch.where(denominator > 0, (1 + b2) * precision * recall / denominator.clamp_min(1e-12), torch.zeros_like(denominator))
        best = int(f.argmax())
        return {
            "max_f": float(f[best]) * 100,
            "iou": float(self.intersection / self.union.clamp_min(1)) * 100,
            "max_f_threshold": float(self.thresholds[best]),
        }
