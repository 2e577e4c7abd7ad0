"""Boundary detection F-measure (ODS, OIS, AP) as SEISM computes it, in Python.

The protocol of the boundary numbers in the InvPT / TaskPrompter / ATRC line of work (SEISM's
``pr_curves`` with ``read_one_cont_png`` and Piotr Dollár's ``edgesEvalImg``):

1. the prediction is the 8-bit PNG the seeds save, ``uint8(255·p)``, which truncates; SEISM reads
   it back as ``im2single`` (k/255 in float32);
2. non-maximum suppression along the edge normal: orientation from ``convTri(E, 4)`` and second
   derivatives (``gradient2``), then ``edgesNmsMex(E, O, r=1, s=5, m=1.01)``, all in float32 with
   the MEX code's operations in its order, so that the suppressed pixels are SEISM's;
3. for each threshold t (SEISM's 101 HED thresholds by default), binarise ``E > t`` in single
   precision (MATLAB casts the double threshold to single) and thin it (``bwmorph(·, 'thin', Inf)``);
4. the ground truth is never the stored edge map itself: SEISM reads a label image and matches
   against ``thin(seg2bmap(labels))`` (NYUD: ``edge/<id>.png`` as stored; PASCAL-Context:
   ``relabel(LabelMap)``). Datasets provide that label image as the edge task's evaluation target;
5. match prediction and ground-truth pixels one to one within ``max_dist`` × the image diagonal
   (BSDS ``correspondPixels``), counting matched/total pixels on each side;
6. ODS: pool the counts of all images per threshold and take the best F (a discrete argmax, no
   interpolation); OIS: pool each image's counts at its own best threshold; AP: SEISM's
   ``general_ap`` (precision interpolated at recall 0, 0.01, …, 1, summed, divided by 100).

The matching is a maximum-cardinality matching of the pixel pairs closer than the match
distance. BSDS's ``correspondPixels`` solves a min-cost problem whose optimum is that same
cardinality, except that its randomly sampled outlier edges occasionally lose a few matches
(0–6 per call at 448×576); this exact matching is deterministic and never below it, so matched
counts may exceed SEISM's by that much while the predicted and ground-truth pixel counts are
equal. Options select the MTI-Net variant (99 thresholds 0.01…0.99, ``E >= t``, no NMS).

Over 400 lines because the metric carries SEISM's whole protocol (thresholds, NMS variants,
quantisation, ground-truth handling, per-image and dataset-pooled statistics) in one streaming class.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from scenemtl.metrics import _boundary_kernels as kernels
from scenemtl.metrics.base import EVAL_PAD, StreamingMetric, fixed_point, fixed_zero, from_fixed

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
    boundary: np.ndarray = (labels != east) | (labels != south) | (labels != south_east)
    boundary[-1, :] = labels[-1, :] != east[-1, :]
    boundary[:, -1] = labels[:, -1] != south[:, -1]
    boundary[-1, -1] = False
    return boundary


def thin(mask: np.ndarray) -> np.ndarray:
    """MATLAB's ``bwmorph(mask, 'thin', Inf)`` (equal to ``skimage.morphology.thin``, about 15× faster)."""
    return kernels.thin(np.ascontiguousarray(mask, dtype=np.bool_), kernels.FIRST, kernels.SECOND, kernels.ROW_OFFSETS, kernels.COL_OFFSETS)


def relabel(labels: np.ndarray) -> np.ndarray:
    """SEISM's ``relabel``: a distinct label for every 4-connected region of equal value (int64 H×W)."""
    return kernels.relabel(np.ascontiguousarray(labels))


def seism_ground_truth(labels: np.ndarray) -> np.ndarray:
    """The boundary SEISM matches against: ``bwmorph(seg2bmap(labels), 'thin', Inf)`` of a label image.

    ``labels`` is the label image as SEISM's ``db_gt`` returns it: NYUD's ``edge/<id>.png`` as
    stored (a 1-px line becomes the outline of the line, a band of 2 px or more two lines),
    PASCAL-Context's ``LabelMap`` after :func:`relabel`.
    """
    return thin(seg2bmap(np.asarray(labels)))


def conv_tri(image: np.ndarray, radius: int) -> np.ndarray:
    """Piotr's ``convTri(I, r)`` in float32: a separable triangle filter with symmetric padding.

    Images larger than ``2r + 1`` on both sides (every real one) take the MEX's running sums with
    its float32 operations in order; smaller ones take ``convTri.m``'s fallback, a plain
    convolution (in float32 here; MATLAB's ``convn`` order of summation is not reproduced).
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    if min(image.shape) >= 4 and 2 * radius + 1 < min(image.shape):
        return kernels.conv_tri(image, radius)
    kernel = np.concatenate([np.arange(1, radius + 2), np.arange(radius, 0, -1)]) / (radius + 1) ** 2
    return _separable(image, kernel)


def _separable(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A symmetric separable filter with symmetric padding, in float32 (``convTri.m``'s fallback path)."""
    kernel = np.asarray(kernel, dtype=np.float32)
    padded = np.pad(image, kernel.size // 2, mode="symmetric")
    rows = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), 0, padded).astype(np.float32)
    return np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), 1, rows).astype(np.float32)


def orientation(edges: np.ndarray) -> np.ndarray:
    """Edge normal angle in [0, π) as ``read_one_cont_png``: second derivatives of ``convTri(E, 4)``, float32."""
    return kernels.orientation(conv_tri(edges, 4))


def nms(edges: np.ndarray, radius: int = 1, border: int = 5, margin: float = 1.01) -> np.ndarray:
    """``edgesNmsMex(E, O, radius, border, margin)`` with O from :func:`orientation`, in float32 as the MEX."""
    edges = np.ascontiguousarray(edges, dtype=np.float32)
    return kernels.nms(edges, orientation(edges), radius, border, np.float32(margin))


def sak_nms(edges: np.ndarray) -> np.ndarray:
    """The SAK/PRISM SEISM fork's NMS pre-pass, as 8-bit levels: ``E = convTri(E, 1)``, orientation of
    ``convTri(E, 4)``, ``edgesNmsMex(E, O, 4, 5, 1.01)``, saved as ``uint8(E·255)`` (MATLAB rounds)."""
    edges = np.ascontiguousarray(edges, dtype=np.float32)
    if min(edges.shape) >= 4:
        smooth = kernels.conv_tri1(edges, np.float32(2))
    else:  # convTri.m's fallback for tiny images: the same [1 2 1]/4 filter
        smooth = _separable(edges, np.array([0.25, 0.5, 0.25]))
    suppressed = kernels.nms(smooth, orientation(smooth), 4, 5, np.float32(1.01))
    scaled = (suppressed * np.float32(255)).astype(np.float64)
    levels: np.ndarray = np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)  # uint8(): half away from zero
    return levels


#: non-maximum suppression variants: SEISM's ``read_one_cont_png``, the SAK fork's pre-pass, none
NMS = ("seism", "sak", "none")


def nms_mode(value: bool | str) -> str:
    """The NMS variant an ``nms`` option names (True is 'seism', False 'none'); ValueError if none of :data:`NMS`."""
    mode = {True: "seism", False: "none"}[value] if isinstance(value, bool) else value
    if mode not in NMS:
        raise ValueError(f"nms must be one of {NMS} (true is 'seism', false 'none'), got {value!r}")
    return mode


#: how probabilities become the 8-bit levels of the saved PNGs
QUANTIZE = ("truncate", "round", "none")


def to_levels(probability: np.ndarray, mode: str = "truncate") -> np.ndarray:
    """8-bit levels of boundary probabilities as the seeds save them: ``uint8(255·p)`` truncates (float32).

    ``round`` rounds to the nearest level instead; ``none`` keeps the probabilities (float32).
    A uint8 array is taken as levels already (a saved PNG) and returned as it is.
    """
    array = np.asarray(probability)
    if array.dtype == np.uint8 or mode == "none":
        return array if array.dtype == np.uint8 else array.astype(np.float32)
    scaled: np.ndarray = np.clip(array.astype(np.float32), 0, 1) * np.float32(255)
    if mode == "truncate":
        truncated: np.ndarray = np.floor(scaled)
        return truncated.astype(np.uint8)
    if mode == "round":
        return np.round(scaled).astype(np.uint8)
    raise ValueError(f"quantize must be one of {QUANTIZE}, got {mode!r}")


def to_single(levels: np.ndarray) -> np.ndarray:
    """MATLAB's ``im2single`` of 8-bit levels (k/255 in float32); float maps are cast to float32."""
    if levels.dtype == np.uint8:
        single: np.ndarray = levels.astype(np.float32) / np.float32(255)
        return single
    return np.asarray(levels, dtype=np.float32)


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
    apply_nms: bool | str = "seism",
    strict: bool = True,
    quantize: str = "truncate",
) -> np.ndarray:
    """Per-threshold ``[cntR, sumR, cntP, sumP]`` of one image (``[T, 4]``).

    ``probability``: boundary probability in [0, 1], or the uint8 levels of a saved PNG;
    ``boundary``: the ground-truth boundary map (thinned here); ``apply_nms``: one of :data:`NMS`
    (True is 'seism', False 'none'). ``strict`` binarises with ``E > t`` in single precision as
    SEISM's ``read_one_cont_png`` (MATLAB casts the double threshold to single); otherwise with
    ``E >= t`` in double precision on ``level/255`` as ``read_one_png`` (MTI-Net, SAK).
    """
    mode = nms_mode(apply_nms)
    edges = to_levels(probability, quantize)
    if mode == "seism":
        edges = nms(to_single(edges))
    elif mode == "sak":
        edges = sak_nms(to_single(edges))
    if strict:
        edges, thresholds = to_single(edges), np.asarray(thresholds, dtype=np.float32)
    else:
        edges = edges / 255.0 if edges.dtype == np.uint8 else edges.astype(np.float64)
        thresholds = np.asarray(thresholds, dtype=np.float64)
    gt = thin(boundary)
    height, width = gt.shape
    radius = max_dist * math.hypot(height, width)
    gt_index = np.full(gt.shape, -1, dtype=np.int64)
    gt_rows, gt_cols = np.nonzero(gt)
    gt_index[gt_rows, gt_cols] = np.arange(gt_rows.size)
    lowest = np.min(thresholds)
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
        t = thresholds[k]
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

    The ground truth is SEISM's (``ground_truth='seism'``): ``thin(seg2bmap(labels))`` of the
    label image the dataset provides as the task's evaluation target (``eval_target``, padded
    with -1). Without one (a dataset that has no label images, e.g. the synthetic scenes), or
    with ``ground_truth='target'``, it is the training target's positive pixels, thinned; the
    variant says which was used.

    Sufficient statistics: the per-threshold counts pooled over images (ODS, AP, the curves) and
    the counts of each image at its own best threshold (OIS); both sum across processes.
    Images whose training target is all ignore (255) are skipped, as the seeds skip them when
    saving; predictions and targets are cropped to the labelled area (padding removed).
    """

    directions = {"odsF": True, "oisF": True, "ap": True, "loss": False}
    main = "odsF"
    wants = ("ids", "eval_target")
    # states (``add_state``)
    counts: torch.Tensor
    ois_counts: torch.Tensor
    images: torch.Tensor
    seism_images: torch.Tensor
    loss_sum: torch.Tensor
    loss_count: torch.Tensor

    def __init__(
        self,
        max_dist: float = 0.011,
        thresholds: str = "hed",
        apply_nms: bool | str = "seism",
        ignore_index: float = 255.0,
        pixel_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        image_ids: set[str] | None = None,
        quantize: str = "truncate",
        ground_truth: str = "seism",
        note: str | None = None,
    ) -> None:
        super().__init__()
        self.note = note  # said in the variant (e.g. why a protocol's id list is not applied)
        if thresholds not in ("hed", "mtinet"):
            raise ValueError(f"thresholds must be 'hed' (SEISM, 101) or 'mtinet' (99), got {thresholds!r}")
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
        if ground_truth not in ("seism", "target"):
            raise ValueError(f"ground_truth must be 'seism' or 'target', got {ground_truth!r}")
        self.thresholds = HED_THRESHOLDS if thresholds == "hed" else MTINET_THRESHOLDS
        apply_nms = nms_mode(apply_nms)
        self.max_dist, self.apply_nms, self.ignore_index = max_dist, apply_nms, ignore_index
        self.strict = thresholds == "hed"
        self.quantize, self.ground_truth = quantize, ground_truth
        # score only these images (SEISM scores PASCAL on its 2,498-image ``test_new`` half)
        self.image_ids = image_ids
        self.add_state("counts", torch.zeros(len(self.thresholds), 4, dtype=torch.float64))
        self.add_state("ois_counts", torch.zeros(4, dtype=torch.float64))
        self.add_state("images", torch.zeros((), dtype=torch.float64))
        # images scored against label images (SEISM) and against the training target
        self.add_state("seism_images", torch.zeros((), dtype=torch.float64))
        # the task's loss over the labelled pixels, as the seeds' training code logs for edges
        self.pixel_loss = pixel_loss
        self.add_state("loss_sum", fixed_zero())
        self.add_state("loss_count", torch.zeros((), dtype=torch.float64))

    # read-only here: the variant follows from the options and from the images scored so far
    @property
    def variant(self) -> str:  # type: ignore[override]
        """The protocol variant: thresholds, comparison, NMS, match distance, quantisation, ground truth, images."""
        seism, images = int(self.seism_images), int(self.images)
        if images and seism == images:
            gt = "GT thin(seg2bmap(label image))"
        elif seism:
            gt = f"GT seg2bmap of label images for {seism} of {images} images, training target for the rest"
        else:
            gt = "GT training target, thinned"
        return (
            f"SEISM {'HED 101 thresholds, >' if self.strict else 'MTI-Net 99 thresholds, >='}"
            f"{dict(seism=', NMS', sak=', SAK NMS pre-pass', none='')[self.apply_nms]}, maxDist {self.max_dist}, "
            f"{self.quantize} 8-bit, {gt}"
            f"{f', {len(self.image_ids)} listed images' if self.image_ids is not None else ''}"
            f"{f', {self.note}' if self.note else ''}"
        )

    def update(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        ids: list[str] | None = None,
        eval_target: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: boundary probabilities ``[B,1,H,W]`` (or uint8 levels of saved PNGs), {0,1,255}
        targets, the samples' ``ids`` and, when the dataset has them, their label images ``[B,1,H,W]``."""
        prediction, target = self._inputs(prediction, target)
        if self.ground_truth == "target":
            eval_target = None
        if self.image_ids is not None:
            if ids is None:
                raise ValueError("this boundary metric scores a subset of images: pass the samples' ids")
            keep = [i for i, name in enumerate(ids) if name in self.image_ids]
            prediction, target = prediction[keep], target[keep]
            eval_target = eval_target[keep] if eval_target is not None else None
        if self.pixel_loss is not None and prediction.dtype != torch.uint8:
            for image_prediction, image_target in zip(prediction, target):  # per image: exact in any batching
                losses = self.pixel_loss(image_prediction[None], image_target[None])
                self.loss_sum += fixed_point(losses.double().sum()[None])
                self.loss_count += losses.numel()
        levels = prediction[:, 0] if prediction.dtype == torch.uint8 else prediction[:, 0].float()
        labels = eval_target[:, 0].cpu().numpy() if eval_target is not None else [None] * len(target)
        for probability, image_target, image_labels in zip(levels.cpu().numpy(), target[:, 0].cpu().numpy(), labels):
            if not (image_target != self.ignore_index).any():
                continue
            valid = image_labels != EVAL_PAD if image_labels is not None else image_target != self.ignore_index
            rows, cols = np.nonzero(valid)
            window = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            if image_labels is not None:
                boundary = seg2bmap(image_labels[window])
                self.seism_images += 1
            else:
                boundary = (image_target[window] == 1) & valid[window]
            counts = boundary_counts(
                probability[window], boundary, self.max_dist, self.thresholds, self.apply_nms, self.strict, self.quantize
            )
            best = int(np.argmax(f_measure(counts)[2]))
            self.counts += torch.from_numpy(counts).to(self.counts)
            self.ois_counts += torch.from_numpy(counts[best]).to(self.ois_counts)
            self.images += 1

    def curves(self) -> dict[str, list[float]]:
        """The precision/recall curve over thresholds (pooled counts)."""
        precision, recall, f = f_measure(self.counts.cpu().numpy())
        return {"threshold": self.thresholds.tolist(), "precision": precision.tolist(), "recall": recall.tolist(), "f": f.tolist()}

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
