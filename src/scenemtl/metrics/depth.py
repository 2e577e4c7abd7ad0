"""Depth errors pooled over every valid pixel of the dataset."""

from __future__ import annotations

import math

import torch

from scenemtl.metrics.base import StreamingMetric


class DepthMetric(StreamingMetric):
    """RMSE, log-RMSE, abs-rel, sq-rel, mean absolute error and δ<1.25, pooled over valid pixels.

    As InvPT's ``eval_depth``: sums over all valid pixels of the dataset, then one division
    (not a mean of per-image errors). Valid pixels have a finite ground truth > 0 (and below
    ``max_depth`` when given, as TaskPrompter's cap of 80 m). Predictions ≤ 0 are clamped to
    1e-9 before logarithms and ratios.
    """

    directions = {"rmse": False, "log_rmse": False, "abs_rel": False, "sq_rel": False, "abs_err": False, "delta1": True}
    main = "rmse"
    _SUMS = ("sq_err", "sq_log_err", "abs_rel_sum", "sq_rel_sum", "abs_err_sum", "delta1_count")

    def __init__(self, max_depth: float | None = None, per_image: bool = False) -> None:
        super().__init__()
        self.max_depth = max_depth
        self.per_image = per_image
        cap = f", depth < {max_depth} m" if max_depth is not None else ""
        # per image (DenseMTL, MTAN): each image's errors averaged over images; RMSE = sqrt(mean of per-image MSE)
        self.variant = ("per-image mean" if per_image else "pixel-pooled") + cap
        for name in ("count", *self._SUMS):
            self.add_state(name, torch.zeros((), dtype=torch.float64))

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of depth maps in metres (``[B,1,H,W]``)."""
        prediction, target = self._inputs(prediction, target)
        valid = torch.isfinite(target) & (target > 0)
        if self.max_depth is not None:
            valid &= target < self.max_depth
        groups = [(prediction[i][valid[i]], target[i][valid[i]]) for i in range(target.shape[0])] if self.per_image \
            else [(prediction[valid], target[valid])]
        for pred, gt in groups:
            gt = gt.double()
            if self.per_image and gt.numel() == 0:
                continue
            pred = pred.double().clamp_min(1e-9)
            diff = pred - gt
            ratio = torch.maximum(pred / gt, gt / pred)
            values = (diff**2, (pred.log() - gt.log()) ** 2, diff.abs() / gt, diff**2 / gt, diff.abs(),
                      (ratio < 1.25).double())
            for name, value in zip(self._SUMS, values):
                total = value.mean() if self.per_image else value.sum()
                setattr(self, name, getattr(self, name) + total)
            self.count += 1 if self.per_image else gt.numel()

    def compute(self) -> dict[str, float]:
        """The errors (metres; δ<1.25 in percent), pooled over pixels or averaged over images."""
        n = float(self.count)
        if n == 0:
            return {name: float("nan") for name in self.directions}
        return {
            "rmse": math.sqrt(float(self.sq_err) / n),
            "log_rmse": math.sqrt(float(self.sq_log_err) / n),
            "abs_rel": float(self.abs_rel_sum) / n,
            "sq_rel": float(self.sq_rel_sum) / n,
            "abs_err": float(self.abs_err_sum) / n,
            "delta1": float(self.delta1_count) / n * 100,
        }
