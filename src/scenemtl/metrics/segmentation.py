"""Mean IoU and pixel accuracy from a dataset-accumulated confusion matrix."""

from __future__ import annotations

import torch

from scenemtl.errors import DataError
from scenemtl.metrics.base import StreamingMetric, fixed_point, fixed_zero, from_fixed


class ConfusionMatrixMetric(StreamingMetric):
    """mIoU and pixel accuracy from one confusion matrix accumulated over every valid pixel.

    IoU_c = TP/(TP+FP+FN) on the matrix accumulated over the whole evaluation set (MTAN since
    2020, InvPT, ATRC, DenseMTL). ``miou`` averages over all classes, a class absent from both
    ground truth and prediction counting 0, as InvPT's ``eval_semseg`` (on full benchmarks every
    class occurs, and the variants agree); ``miou_present`` averages over the classes that occur
    (DenseMTL's ``nanmean``).
    """

    directions = {"miou": True, "miou_present": True, "pixel_acc": True}
    main = "miou"
    # states (``add_state``)
    confusion: torch.Tensor
    image_miou_sum: torch.Tensor
    images: torch.Tensor

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: list[str] | None = None, per_image: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.per_image = per_image
        # the per-image variant (MTAN before Nov. 2020: about 8 points lower) averages each image's mIoU
        self.variant = "per-image mean of mIoU over present classes" if per_image else "accumulated confusion matrix"
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.float64))
        self.add_state("image_miou_sum", fixed_zero())
        self.add_state("images", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of class-id maps (``prediction`` and ``target`` of the same shape)."""
        prediction, target = self._inputs(prediction, target)
        valid = target != self.ignore_index
        gt = target[valid].long()
        pred = prediction[valid].long()
        if gt.numel() and (gt.max() >= self.num_classes or gt.min() < 0):
            bad = int(gt.max()) if gt.max() >= self.num_classes else int(gt.min())
            raise DataError(f"a target holds class id {bad}, outside 0..{self.num_classes - 1} (and 255 = ignore)")
        index = gt * self.num_classes + pred
        counts = torch.bincount(index, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).to(self.confusion)
        if self.per_image:
            for image_pred, image_target in zip(prediction, target):
                keep = image_target != self.ignore_index
                if keep.any():
                    single = (
                        torch.bincount(
                            image_target[keep].long() * self.num_classes + image_pred[keep].long(), minlength=self.num_classes**2
                        )
                        .reshape(self.num_classes, -1)
                        .double()
                    )
                    self.image_miou_sum += fixed_point(_iou(single).nanmean()[None])
                    self.images += 1

    def per_class_iou(self) -> torch.Tensor:
        """IoU of each class (NaN where the class is in neither ground truth nor prediction)."""
        return _iou(self.confusion)

    def compute(self) -> dict[str, float]:
        """``miou``, ``miou_present`` and ``pixel_acc`` in percent, plus ``iou/<class>`` for each class."""
        iou = self.per_class_iou()
        total = self.confusion.sum()
        accumulated = float(iou.nan_to_num(0.0).mean() * 100) if total > 0 else float("nan")
        per_image = float(from_fixed(self.image_miou_sum)) / float(self.images) * 100 if self.images > 0 else float("nan")
        result = {
            "miou": per_image if self.per_image else accumulated,
            "miou_present": float(iou.nanmean() * 100) if total > 0 else float("nan"),
            "pixel_acc": float(self.confusion.diag().sum() / total * 100) if total > 0 else float("nan"),
        }
        for name, value in zip(self.class_names, iou.tolist()):
            result[f"iou/{name}"] = value * 100
        return result


def _iou(confusion: torch.Tensor) -> torch.Tensor:
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
