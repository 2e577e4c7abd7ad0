"""Surface-normal angular errors pooled over every valid pixel of the dataset."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scenemtl.metrics.base import StreamingMetric, fixed_point, fixed_zero, from_fixed

#: histogram resolution for the streaming median, in degrees
BIN_WIDTH = 0.01


def unit_vectors(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``x / max(|x|, 1e-12)`` along ``dim``: F.normalize's result, ten times faster on CPU over dim 1."""
    return x * torch.rsqrt(x.pow(2).sum(dim, keepdim=True).clamp_min(1e-24))


def angular_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between unit vectors along dim 1, as ``2·atan2(|p̂−ĝ|, |p̂+ĝ|)`` (stable arccos)."""
    p = unit_vectors(prediction.double())
    g = unit_vectors(target.double())
    return torch.rad2deg(2 * torch.atan2((p - g).norm(dim=1), (p + g).norm(dim=1)))


class NormalsMetric(StreamingMetric):
    """Mean, median and RMSE angle and the share of pixels under 11.25°, 22.5° and 30°.

    Pooled over every valid pixel (ground truth not the zero vector), as the MTI-Net style
    evaluation used by InvPT, ATRC and DiffusionMTL. The median comes from a histogram of
    0.01° bins (the centre of the bin of each middle value, averaged for an even count, as
    ``np.median``), so it streams and syncs as a sum; it is exact to within 0.005°.
    """

    directions = {"mean": False, "median": False, "rmse": False, "within_11.25": True, "within_22.5": True, "within_30": True}
    main = "mean"
    variant = "pixel-pooled"
    thresholds = (11.25, 22.5, 30.0)

    def __init__(self) -> None:
        super().__init__()
        self.add_state("count", torch.zeros((), dtype=torch.float64))
        self.add_state("angle_sum", fixed_zero())
        self.add_state("angle_sq_sum", fixed_zero())
        self.add_state("within", torch.zeros(len(self.thresholds), dtype=torch.float64))
        self.add_state("histogram", torch.zeros(round(180 / BIN_WIDTH), dtype=torch.float64))

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of normal maps (``[B,3,H,W]``)."""
        prediction, target = self._inputs(prediction, target)
        valid = (target != 0).any(dim=1) & torch.isfinite(target).all(dim=1)
        angles = angular_error(prediction, target)
        # per-image sums in fixed point: the totals do not depend on batching or processes
        sums = torch.stack([torch.stack([a[v].sum(), (a[v] ** 2).sum()]) for a, v in zip(angles, valid)])
        self.angle_sum += fixed_point(sums[:, 0])
        self.angle_sq_sum += fixed_point(sums[:, 1])
        angle = angles[valid]
        self.count += angle.numel()
        for i, t in enumerate(self.thresholds):
            self.within[i] += (angle < t).sum()
        bins = (angle / BIN_WIDTH).long().clamp(0, self.histogram.numel() - 1)
        self.histogram += torch.bincount(bins, minlength=self.histogram.numel()).to(self.histogram)

    def _order_statistic(self, k: int) -> float:
        """Centre of the histogram bin holding the k-th smallest angle (1-based)."""
        cumulative = self.histogram.cumsum(0)
        target = torch.tensor(float(k), dtype=cumulative.dtype, device=cumulative.device)
        return (int(torch.searchsorted(cumulative, target)) + 0.5) * BIN_WIDTH

    def _median(self) -> float:
        n = int(self.count)
        if n % 2:
            return self._order_statistic((n + 1) // 2)
        return (self._order_statistic(n // 2) + self._order_statistic(n // 2 + 1)) / 2

    def compute(self) -> dict[str, float]:
        """Angles in degrees, shares in percent."""
        n = float(self.count)
        if n == 0:
            return {name: float("nan") for name in self.directions}
        result = {
            "mean": float(from_fixed(self.angle_sum)) / n,
            "median": self._median(),
            "rmse": math.sqrt(float(from_fixed(self.angle_sq_sum)) / n),
        }
        for t, count in zip(self.thresholds, self.within.tolist()):
            result[f"within_{t:g}"] = count / n * 100
        return result
