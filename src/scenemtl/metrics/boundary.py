"""Boundary detection F-measure (ODS, OIS, AP) as SEISM computes it, in Python.

The protocol of the boundary numbers in the InvPT / TaskPrompter / ATRC line of work (SEISM's
``pr_curves`` with ``read_one_cont_png`` and Piotr Dollár's ``edgesEvalImg``):

1. the prediction is the 8-bit PNG of the boundary probability (``round(255·p)/255``);
2. non-maximum suppression along the edge normal (orientation from ``convTri(E, 4)`` and
   second derivatives; ``edgesNmsMex(E, O, r=1, s=5, m=1.01)``);
3. for each threshold t (SEISM's 101 HED thresholds by default), binarise ``E > t`` and thin it
   (``bwmorph(·, 'thin', Inf)``); the ground-truth boundary is thinned too;
4. match prediction and ground-truth pixels one to one within ``max_dist`` × the image diagonal
   (BSDS ``correspondPixels``), counting matched/total pixels on each side;
5. ODS: pool the counts of all images per threshold and take the best F (a discrete argmax, no
   interpolation); OIS: pool each image's counts at its own best threshold; AP: SEISM's
   ``general_ap`` (precision interpolated at recall 0, 0.01, …, 1, summed, divided by 100).

The matching is a maximum-cardinality matching of the pixel pairs closer than the match
distance. BSDS's ``correspondPixels`` solves a min-cost problem whose optimum is that same
cardinality, except that its randomly sampled outlier edges occasionally lose a few matches
(0–6 per call at 448×576); this exact matching is deterministic and never below it. Options
select the MTI-Net variant (99 thresholds 0.01…0.99, ``E >= t``, no NMS).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from scenemtl.metrics import _boundary_kernels as kernels
from scenemtl.metrics.base import StreamingMetric, fixed_point, fixed_zero, from_fixed

#: SEISM's parameters/HED.txt: 0.001, 0.01, 0.02, …, 0.99, 0.999
HED_THRESHOLDS = np.array([0.001] + [k / 100 for k in range(1, 100)] + [0.999])
#: MTI-Net's SEISM configuration: 0.01, …, 0.99
MTINET_THRESHOLDS = np.arange(1, 100) / 100
#: match distance as a fraction of the image diagonal, by benchmark (SEISM eval_method.m)
MAX_DIST = {"nyud": 0.011, "pascal": 0.0075}


def seg2bmap(labels: np.ndarray) -> np.ndarray:
    """Boundaries of a label map (BSDS ``seg2bmap``): a pixel differing from its east, south or south-east neighbour."""
    east = np.zeros_like(labels)
    south = np.zeros_like(labels)
    south_east = np.zeros_like(labels)
    east[:, :-1] = labels[:, 1:]
    south[:-1, :] = labels[1:, :]
    south_east[:-1, :-1] = labels[1:, 1:]
    boundary = (labels != east) | (labels != south) | (labels != south_east)
    boundary[-1, :] = labels[-1, :] != east[-1, :]
    boundary[:, -1] = labels[:, -1] != south[:, -1]
    boundary[-1, -1] = False
    return boundary


def thin(mask: np.ndarray) -> np.ndarray:
    """MATLAB's ``bwmorph(mask, 'thin', Inf)`` (equal to ``skimage.morphology.thin``, about 15× faster)."""
    return kernels.thin(np.ascontiguousarray(mask, dtype=np.bool_), kernels.FIRST, kernels.SECOND,
                        kernels.ROW_OFFSETS, kernels.COL_OFFSETS)


def conv_tri(image: np.ndarray, radius: int) -> np.ndarray:
    """Piotr's ``convTri``: a separable triangle filter of the given radius, symmetric padding."""
    kernel = np.concatenate([np.arange(1, radius + 2), np.arange(radius, 0, -1)]).astype(np.float64) / (radius + 1) ** 2
    padded = np.pad(image.astype(np.float64), radius, mode="symmetric")
    rows = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), 0, padded)
    return np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), 1, rows)


def orientation(edges: np.ndarray) -> np.ndarray:
    """Edge normal angle in [0, π) from the smoothed map's second derivatives (as ``read_one_cont_png``)."""
    smooth = conv_tri(edges, 4)
    oy, ox = np.gradient(smooth)
    _, oxx = np.gradient(ox)
    oyy, oxy = np.gradient(oy)
    return np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + 1e-5)), np.pi)


def nms(edges: np.ndarray, radius: int = 1, border: int = 5, margin: float = 1.01) -> np.ndarray:
    """``edgesNmsMex(E, O, radius, border, margin)`` with O from :func:`orientation`."""
    edges = np.ascontiguousarray(edges, dtype=np.float32)
    angle = orientation(edges).astype(np.float32)
    return kernels.nms(edges, angle, radius, border, np.float32(margin))


def disc_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (row, column) offsets within a closed disc of ``radius`` pixels."""
    r = int(math.floor(radius))
    rows, cols = np.mgrid[-r : r + 1, -r : r + 1]
    inside = rows**2 + cols**2 <= radius**2
    return rows[inside].astype(np.int64), cols[inside].astype(np.int64)


def boundary_counts(
    probability: np.ndarray,
    boundary: np.ndarray,
    max_dist: float = 0.011,
    thresholds: np.ndarray = HED_THRESHOLDS,
    apply_nms: bool = True,
    strict: bool = True,
    quantize: bool = True,
) -> np.ndarray:
    """Per-threshold ``[cntR, sumR, cntP, sumP]`` of one image (``[T, 4]``).

    ``probability``: boundary probability in [0, 1]; ``boundary``: the ground-truth boundary map
    (thinned here). ``strict`` binarises with ``>`` (SEISM) instead of ``>=`` (edgesEvalImg).
    """
    edges = np.asarray(probability, dtype=np.float64)
    if quantize:
        edges = np.round(np.clip(edges, 0, 1) * 255) / 255
    edges = nms(edges) if apply_nms else edges.astype(np.float32)
    gt = thin(boundary)
    height, width = gt.shape
    radius = max_dist * math.hypot(height, width)
    gt_index = np.full(gt.shape, -1, dtype=np.int64)
    gt_rows, gt_cols = np.nonzero(gt)
    gt_index[gt_rows, gt_cols] = np.arange(gt_rows.size)
    lowest = float(np.min(thresholds))
    candidates = edges > lowest if strict else edges >= lowest
    cand_rows, cand_cols = np.nonzero(candidates)
    cand_index = np.full(gt.shape, -1, dtype=np.int64)
    cand_index[cand_rows, cand_cols] = np.arange(cand_rows.size)
    offset_rows, offset_cols = disc_offsets(radius)
    start, targets = kernels.neighbour_lists(cand_rows, cand_cols, gt_index, offset_rows, offset_cols)
    match_left = np.full(cand_rows.size, -1, dtype=np.int64)
    match_right = np.full(gt_rows.size, -1, dtype=np.int64)
    counts = np.zeros((len(thresholds), 4))
    # from the highest threshold down: each matching warm-starts the next (fewer searches)
    for k in np.argsort(thresholds)[::-1]:
        t = float(thresholds[k])
        predicted = thin(edges > t if strict else edges >= t)
        active = np.zeros(cand_rows.size, dtype=np.bool_)
        active[cand_index[predicted]] = True
        stale = (match_left >= 0) & ~active
        match_right[match_left[stale]] = -1
        match_left[stale] = -1
        matched = kernels.max_matching(active, start, targets, gt_rows.size, match_left, match_right)
        counts[k] = (matched, gt_rows.size, matched, int(active.sum()))
    return counts


def f_measure(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F from ``[..., 4]`` counts, with SEISM's conventions for empty sides."""
    cnt_r, sum_r, cnt_p, sum_p = np.moveaxis(np.asarray(counts, dtype=np.float64), -1, 0)
    recall = np.where(sum_r > 0, cnt_r / np.maximum(sum_r, 1), np.where(sum_p > 0, 1.0, 1.0))
    precision = np.where(sum_p > 0, cnt_p / np.maximum(sum_p, 1), 1.0)
    # no ground truth: recall 1, precision 0 (SEISM); no prediction: recall 0, precision 1
    precision = np.where(sum_r == 0, 0.0, precision)
    recall = np.where((sum_r > 0) & (sum_p == 0), 0.0, recall)
    total = precision + recall
    f = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
    return precision, recall, f


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """SEISM's ``general_ap``: interpolate precision at recall 0:0.01:1 over the unique recalls, sum, /100."""
    unique, first = np.unique(recall, return_index=True)  # modern MATLAB unique keeps the first occurrence
    if unique.size < 2:
        return 0.0
    samples = np.interp(np.linspace(0, 1, 101), unique, precision[first], left=np.nan, right=np.nan)
    return float(np.nansum(samples) / 100)


class BoundaryMetric(StreamingMetric):
    """ODS F, OIS F and AP of boundary predictions (see the module docstring for the protocol).

    Sufficient statistics: the per-threshold counts pooled over images (ODS, AP, the curves) and
    the counts of each image at its own best threshold (OIS); both sum across processes.
    Images whose ground truth is all ignore (255) are skipped, as SEISM skips them; predictions
    and targets are cropped to the bounding box of the labelled pixels (padding removed).
    """

    directions = {"odsF": True, "oisF": True, "ap": True, "loss": False}
    main = "odsF"

    def __init__(
        self,
        max_dist: float = 0.011,
        thresholds: str = "hed",
        apply_nms: bool = True,
        ignore_index: float = 255.0,
        pixel_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        image_ids: set[str] | None = None,
    ) -> None:
        super().__init__()
        if thresholds not in ("hed", "mtinet"):
            raise ValueError(f"thresholds must be 'hed' (SEISM, 101) or 'mtinet' (99), got {thresholds!r}")
        self.thresholds = HED_THRESHOLDS if thresholds == "hed" else MTINET_THRESHOLDS
        self.max_dist, self.apply_nms, self.ignore_index = max_dist, apply_nms, ignore_index
        self.strict = thresholds == "hed"
        # score only these images (SEISM scores PASCAL on its 2,498-image ``test_new`` half)
        self.image_ids = image_ids
        self.selects_images = image_ids is not None
        self.variant = (f"SEISM {'HED 101 thresholds, >' if self.strict else 'MTI-Net 99 thresholds, >='}"
                        f"{', NMS' if apply_nms else ''}, maxDist {max_dist}"
                        f"{f', {len(image_ids)} listed images' if image_ids is not None else ''}")
        self.add_state("counts", torch.zeros(len(self.thresholds), 4, dtype=torch.float64))
        self.add_state("ois_counts", torch.zeros(4, dtype=torch.float64))
        self.add_state("images", torch.zeros((), dtype=torch.float64))
        # the task's loss over the labelled pixels, as the seeds' training code logs for edges
        self.pixel_loss = pixel_loss
        self.add_state("loss_sum", fixed_zero())
        self.add_state("loss_count", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: torch.Tensor, target: torch.Tensor, ids: list[str] | None = None) -> None:
        """Add a batch of boundary probabilities ``[B,1,H,W]`` and {0,1,255} targets (of samples ``ids``)."""
        prediction, target = self._inputs(prediction, target)
        if self.image_ids is not None:
            if ids is None:
                raise ValueError("this boundary metric scores a subset of images: pass the samples' ids")
            keep = [i for i, name in enumerate(ids) if name in self.image_ids]
            prediction, target = prediction[keep], target[keep]
        if self.pixel_loss is not None:
            for image_prediction, image_target in zip(prediction, target):  # per image: exact in any batching
                losses = self.pixel_loss(image_prediction[None], image_target[None])
                self.loss_sum += fixed_point(losses.double().sum()[None])
                self.loss_count += losses.numel()
        for probability, labels in zip(prediction[:, 0].float().cpu().numpy(), target[:, 0].cpu().numpy()):
            valid = labels != self.ignore_index
            if not valid.any():
                continue
            rows, cols = np.nonzero(valid)
            window = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            counts = boundary_counts(probability[window], (labels[window] == 1) & valid[window], self.max_dist,
                                     self.thresholds, self.apply_nms, self.strict)
            best = int(np.argmax(f_measure(counts)[2]))
            self.counts += torch.from_numpy(counts).to(self.counts)
            self.ois_counts += torch.from_numpy(counts[best]).to(self.ois_counts)
            self.images += 1

    def curves(self) -> dict[str, list[float]]:
        """The precision/recall curve over thresholds (pooled counts)."""
        precision, recall, f = f_measure(self.counts.cpu().numpy())
        return {"threshold": self.thresholds.tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
                "f": f.tolist()}

    def compute(self) -> dict[str, float]:
        """``odsF``, ``oisF`` and ``ap`` in percent, with the ODS threshold, precision and recall."""
        loss = {"loss": float(from_fixed(self.loss_sum)) / float(self.loss_count)} if self.loss_count > 0 else {}
        if self.images == 0:
            return {"odsF": float("nan"), "oisF": float("nan"), "ap": float("nan"), **loss}
        precision, recall, f = f_measure(self.counts.cpu().numpy())
        best = int(np.argmax(f))
        ois = f_measure(self.ois_counts.cpu().numpy())[2]
        return {
            **loss,
            "odsF": float(f[best]) * 100,
            "oisF": float(ois) * 100,
            "ap": average_precision(precision, recall) * 100,
            "ods_threshold": float(self.thresholds[best]),
            "ods_precision": float(precision[best]) * 100,
            "ods_recall": float(recall[best]) * 100,
        }
