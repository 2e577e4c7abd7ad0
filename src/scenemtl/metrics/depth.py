"""Depth errors pooled over every valid pixel of the dataset, or averaged over images or batches."""

from __future__ import annotations

import math

import torch

from scenemtl.metrics.base import POOLINGS, StreamingMetric, fixed_point, fixed_zero, from_fixed


class DepthMetric(StreamingMetric):
    """RMSE, log-RMSE, abs-rel, sq-rel, mean absolute error and δ<1.25.

    ``pooling``:

    - 'pixel' (default), as InvPT's ``eval_depth``: sums over all valid pixels of the dataset,
      then one division (not a mean of per-image errors).
    - 'image', as DenseMTL: each image's errors averaged over images, RMSE = sqrt(mean per-image MSE).
    - 'batch', as MTAN's trainer: each ``update`` batch's errors over the batch's valid pixels,
      averaged over batches (a short last batch weighs as much as a full one), RMSE = sqrt(mean
      per-batch MSE). The result depends on how images are grouped into batches, by definition
      (under several processes, on each process's batches); it does not depend on the order of
      the batches or on how they are spread across processes. MTAN reports abs and rel error only.

    Valid pixels have a finite ground truth > 0 (and below ``max_depth`` when given, as
    TaskPrompter's cap of 80 m). Images (or batches) without a valid pixel are skipped.

    ``clamp = (low, high)``, as DenseMTL's ``metrics/depth.py``: valid pixels also need
    low < gt < high (its eval mask 1e-3 < gt < 80 m), and the prediction is clamped to
    [low, high] before all errors; the ground truth is not clamped. ``median_scaling``, as
    DenseMTL's option: each image's prediction is multiplied by median(gt)/median(pred) over its
    valid pixels (median(pred) floored at 1e-9), before the clamp. The medians are
    ``torch.median``'s, as DenseMTL: the lower middle value for an even count (not the mean of
    the two, as ``np.median``). Predictions ≤ 0 are then clamped to 1e-9 before logarithms and
    ratios. ``gt_offset`` (legacy, DenseMTL: 0.99) is subtracted from every valid ground-truth depth
    before anything else: DenseMTL decodes its stored ``65536/(100·m + 1)`` with ``655.36/d − 1``,
    so every depth it evaluates is 0.99 m short of the truth (``loss/depth/*.py``).
    """

    directions = {"rmse": False, "log_rmse": False, "abs_rel": False, "sq_rel": False, "abs_err": False, "delta1": True}
    main = "rmse"
    _SUMS = ("sq_err", "sq_log_err", "abs_rel_sum", "sq_rel_sum", "abs_err_sum", "delta1_sum")
    # states (``add_state``; the sums of ``_SUMS`` are read and written by name)
    count: torch.Tensor

    def __init__(
        self,
        max_depth: float | None = None,
        per_image: bool = False,
        pooling: str | None = None,
        clamp: tuple[float, float] | None = None,
        median_scaling: bool = False,
        gt_offset: float = 0.0,
    ) -> None:
        super().__init__()
        pooling = pooling if pooling is not None else ("image" if per_image else "pixel")
        if pooling not in POOLINGS or (per_image and pooling != "image"):
            raise ValueError(f"depth pooling must be one of {list(POOLINGS)}, got {pooling!r} (per_image={per_image})")
        if clamp is not None and not (len(clamp) == 2 and 0 <= clamp[0] < clamp[1]):
            raise ValueError(f"depth clamp must be (low, high) with 0 <= low < high, got {clamp!r}")
        self.max_depth, self.pooling, self.median_scaling = max_depth, pooling, bool(median_scaling)
        self.per_image = pooling == "image"
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))
        self.gt_offset = float(gt_offset)
        words = [POOLINGS[pooling]]
        if self.gt_offset:
            words.append(f"gt − {self.gt_offset:g} m (legacy)")
        if max_depth is not None:
            words.append(f"depth < {max_depth} m")
        if self.median_scaling:
            words.append("per-image median scaling")
        if self.clamp is not None:
            words.append(f"{self.clamp[0]:g} < gt < {self.clamp[1]:g} m, prediction clamped to it")
        self.variant = ", ".join(words)
        self.add_state("count", torch.zeros((), dtype=torch.float64))
        for name in self._SUMS:
            self.add_state(name, fixed_zero())

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of depth maps in metres (``[B,1,H,W]``)."""
        prediction, target = self._inputs(prediction, target)
        valid = torch.isfinite(target) & (target > 0)
        if self.gt_offset:
            target = torch.where(valid, target - self.gt_offset, target)
            valid &= target > 0
        if self.max_depth is not None:
            valid &= target < self.max_depth
        if self.clamp is not None:
            valid &= (target > self.clamp[0]) & (target < self.clamp[1])
        rows, pixels = [], 0
        for i in range(target.shape[0]):  # per image: the totals do not depend on batching
            gt = target[i][valid[i]].double()
            if gt.numel() == 0:
                continue
            pred = prediction[i][valid[i]].double()
            if self.median_scaling:
                pred = pred * (gt.median() / pred.median().clamp_min(1e-9))
            if self.clamp is not None:
                pred = pred.clamp(*self.clamp)
            pred = pred.clamp_min(1e-9)
            diff = pred - gt
            ratio = torch.maximum(pred / gt, gt / pred)
            terms = torch.stack([diff**2, (pred.log() - gt.log()) ** 2, diff.abs() / gt, diff**2 / gt, diff.abs(), (ratio < 1.25).double()])
            rows.append(terms.mean(1) if self.per_image else terms.sum(1))
            pixels += gt.numel()
        if not rows:
            return
        table = torch.stack(rows)
        if self.pooling == "batch":  # one row: this batch's means over its valid pixels
            table = table.sum(0, keepdim=True) / pixels
        self.count += pixels if self.pooling == "pixel" else table.shape[0]
        for column, name in enumerate(self._SUMS):
            setattr(self, name, getattr(self, name) + fixed_point(table[:, column]))

    def compute(self) -> dict[str, float]:
        """The errors (metres; δ<1.25 in percent), pooled over pixels or averaged over images or batches."""
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
