"""Saliency max F-measure and IoU, pooled over the dataset."""

from __future__ import annotations

import torch

from scenemtl.metrics.base import StreamingMetric, fixed_point, fixed_zero, from_fixed


class SaliencyMetric(StreamingMetric):
    """Max F_β over thresholds (β² = 0.3) and IoU at 0.5, from counts pooled over the dataset.

    As ATRC's ``MaxF``: thresholds 0.05, 0.10, …, 0.95 on the saliency probability; true
    positives, predicted positives and actual positives summed over every valid pixel of the
    dataset; F_β = (1+β²)PR/(β²P+R) at each threshold; the best is reported.

    ``protocol: invpt`` reproduces the meter of InvPT, TaskPrompter and DiffusionMTL
    (``evaluation/eval_sal.py`` with ``utils.get_output``): the saliency probability is stored as
    ``255·p``, divided by 255 and, because its shape equals the target's, squashed by a **second
    sigmoid** before the thresholds ``arange(0.05, 1, 0.05)`` (float32, ``>=``). sigmoid maps [0, 1]
    to [0.5, 0.731], so only the thresholds 0.55–0.70 (p ≥ 0.20, 0.41, 0.62, 0.85) and "every
    pixel positive" are in effect. Use it to compare with those papers' tables.
    """

    directions = {"max_f": True, "iou": True}
    main = "max_f"
    # states (``add_state``)
    true_pos: torch.Tensor
    pred_pos: torch.Tensor
    actual_pos: torch.Tensor
    valid: torch.Tensor
    intersection: torch.Tensor
    union: torch.Tensor
    image_precision: torch.Tensor
    image_recall: torch.Tensor
    image_jaccard: torch.Tensor
    images: torch.Tensor

    def __init__(self, beta_squared: float = 0.3, threshold_step: float = 0.05, ignore_index: int = 255, protocol: str = "pooled") -> None:
        super().__init__()
        if protocol not in ("pooled", "mtinet", "invpt"):
            raise ValueError(f"saliency protocol must be 'pooled' (ATRC), 'invpt' or 'mtinet', got {protocol!r}")
        self.protocol = protocol
        self.ignore_index = ignore_index
        if protocol == "mtinet":
            # MTI-Net's eval_sal: per-image precision/recall/Jaccard averaged over images, 15 thresholds, β = 1
            self.beta_squared = 1.0
            self.thresholds = torch.linspace(0.2, 0.9, 15, dtype=torch.float64)
            self.variant = "MTI-Net: per-image mean P/R, 15 thresholds 0.2–0.9, beta2=1; iou = max mean Jaccard"
        elif protocol == "invpt":
            self.beta_squared = beta_squared
            self.thresholds = torch.arange(threshold_step, 1, threshold_step, dtype=torch.float32).double()
            self.variant = f"InvPT meter: dataset-pooled, beta2={beta_squared}, second sigmoid on the probability"
        else:
            self.beta_squared = beta_squared
            n = round(1 / threshold_step) - 1
            self.thresholds = torch.arange(1, n + 1, dtype=torch.float64) * threshold_step
            self.variant = f"dataset-pooled, beta2={beta_squared}"
        n = len(self.thresholds)
        self.add_state("true_pos", torch.zeros(n, dtype=torch.float64))
        self.add_state("pred_pos", torch.zeros(n, dtype=torch.float64))
        self.add_state("actual_pos", torch.zeros((), dtype=torch.float64))
        self.add_state("valid", torch.zeros((), dtype=torch.float64))
        self.add_state("intersection", torch.zeros((), dtype=torch.float64))
        self.add_state("union", torch.zeros((), dtype=torch.float64))
        self.add_state("image_precision", fixed_zero(n))
        self.add_state("image_recall", fixed_zero(n))
        self.add_state("image_jaccard", fixed_zero(n))
        self.add_state("images", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of saliency probabilities and {0,1} targets (255 ignored)."""
        prediction, target = self._inputs(prediction, target)
        if self.protocol == "mtinet":
            self._update_per_image(prediction, target)
            return
        valid = target != self.ignore_index
        prob = prediction[valid].double()
        gt = target[valid] > 0.5
        scored = prob
        if self.protocol == "invpt":  # 255·p / 255, then sigmoid again, in float32 as the official meter
            scored = torch.sigmoid(prediction[valid].float() * 255 / 255).double()
        above = scored[None, :] >= self.thresholds.to(prob.device)[:, None]
        self.true_pos += (above & gt[None, :]).sum(1).to(self.true_pos)
        self.pred_pos += above.sum(1).to(self.pred_pos)
        self.actual_pos += gt.sum()
        self.valid += gt.numel()
        binary = prob >= 0.5
        self.intersection += (binary & gt).sum()
        self.union += (binary | gt).sum()

    def _update_per_image(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        thresholds = self.thresholds.to(prediction.device)
        for image_pred, image_target in zip(prediction, target):
            valid = image_target != self.ignore_index
            if not valid.any():
                continue
            prob = image_pred[valid].double()
            gt = image_target[valid] > 0.5
            above = prob[None, :] > thresholds[:, None]
            true_pos = (above & gt[None]).sum(1).double()
            predicted, actual = above.sum(1).double(), gt.sum().double()
            # MTI-Net's jaccard.py: tp/(tp+fp+1e-12), tp/(tp+fn+1e-12); Jaccard 1 when both sides are empty
            self.image_precision += fixed_point((true_pos / (predicted + 1e-12))[None])
            self.image_recall += fixed_point((true_pos / (actual + 1e-12))[None])
            union = (above | gt[None]).sum(1).double()
            self.image_jaccard += fixed_point(torch.where(union > 0, true_pos / union.clamp_min(1), 1.0)[None])
            self.images += 1
            self.valid += gt.numel()

    def compute(self) -> dict[str, float]:
        """``max_f`` and ``iou`` in percent, and the threshold that gave ``max_f`` (NaN without labels)."""
        if self.valid == 0:
            return {"max_f": float("nan"), "iou": float("nan"), "max_f_threshold": float("nan")}
        if self.protocol == "mtinet":
            precision = from_fixed(self.image_precision) / self.images
            recall = from_fixed(self.image_recall) / self.images
            f = 2 * precision * recall / (precision + recall + 1e-12)
            best = int(f.argmax())
            return {
                "max_f": float(f[best]) * 100,
                "iou": float((from_fixed(self.image_jaccard) / self.images).max()) * 100,
                "max_f_threshold": float(self.thresholds[best]),
            }
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
