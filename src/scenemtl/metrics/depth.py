"""Depth errors pooled over every valid pixel of the dataset (or averaged over images)."""

from __future__ import annotations

import math

import torch

from scenemtl.metrics.base import StreamingMetric, fixed_point, fixed_zero, from_fixed


class DepthMetric(StreamingMetric):
    """RMSE, log-RMSE, abs-rel, sq-rel, mean absolute error and δ<1.25.

    Pixel-pooled (default), as InvPT's ``eval_depth``: sums over all valid pixels of the dataset,
    then one division (not a mean of per-image errors). Per image (``per_image=True``), as
    DenseMTL and MTAN: each image's errors averaged over images, RMSE = sqrt(mean per-image MSE).
    Valid pixels have a finite ground truth > 0 (and below ``max_depth`` when given, as
    TaskPrompter's cap of 80 m). Predictions ≤ 0 are clamped to 1e-9 before logarithms and ratios.
    """

    directions = {"rmse": False, "log_rmse": False, "abs_rel": False, "sq_rel": False, "abs_err": False, "delta1": True}
    main = "rmse"
    _SUMS = ("sq_err", "sq_log_err", "abs_rel_sum", "sq_rel_sum", "abs_err_sum", "delta1_sum")

    def __init__(self, max_depth: float | None = None, per_image: bool = False) -> None:
        super().__init__()
        self.max_depth = max_depth
        self.per_image = per_image
        cap = f", depth < {max_depth} m" if max_depth is not None else ""
        self.variant = ("per-image mean" if per_image else "pixel-pooled") + cap
        self.add_state("count", torch.zeros((), dtype=torch.float64))
        for name in self._SUMS:
            self.add_state(name, fixed_zero())

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of depth maps in metres (``[B,1,H,W]``)."""
        prediction, target = self._inputs(prediction, target)
        valid = torch.isfinite(target) & (target > 0)
        if self.max_depth is not None:
            valid &= target < self.max_depth
        rows = []
        for i in range(target.shape[0]):  # per image: the totals do not depend on batching
            gt = target[i][valid[i]].double()
            if gt.numel() == 0:
                continue
            pred = prediction[i][valid[i]].double().clamp_min(1e-9)
            diff = pred - gt
            ratio = torch.maximum(pred / gt, gt / pred)
            terms = torch.stack([diff**2, (pred.log() - gt.log()) ** 2, diff.abs() / gt, diff**2 / gt, diff.abs(),
                                 (ratio < 1.25).double()])
            rows.append(terms.mean(1) if self.per_image else terms.sum(1))
            self.count += 1 if self.per_image else gt.numel()
        if rows:
            table = torch.stack(rows)
            for column, name in enumerate(self._SUMS):
                setattr(self, name, getattr(self, name) + fixed_point(table[:, column]))

    def compute(self) -> dict[str, float]:
        """The errors (metres; δ<1.25 in percent), pooled over pixels or averaged over images."""
        n = float(self.count)
        if n == 0:
            return {name: float("nan") for name in self.directions}
        mean = {name: float(from_fixed(getattr(self, name))) / n for name in self._SUMS}
        return {
            "rmse": math.sqrt(mean["sq_err"]),
            "log_rmse": math.sqrt(mean["sq_log_err"]),
            "abs_rel": mean["abs_rel_sum"],
            "sq_rel": mean["sq_rel_sum"],
            "abs_err": mean["abs_err_sum"],
            "delta1": mean["delta1_sum"] * 100,
        }
