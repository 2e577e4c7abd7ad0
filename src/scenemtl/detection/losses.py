"""The losses of TaskPrompter's FCOS3D head, in plain PyTorch.

Facts (``prismformore/Multi-Task-Transformer``, HEAD ``b83962a``: ``TaskPrompter/detection_toolbox/det_model.py:loss``,
``det_losses.py``, ``configs/cityscapes3d/det_head_params.py``):

* classification: sigmoid focal loss (γ 2, α 0.25, loss weight **5.0**) over every point of the
  images that have boxes, one-hot targets without the background column, summed and divided by
  ``num_pos + num_imgs`` (``num_imgs``: images with boxes; images without boxes are dropped from the
  whole loss);
* regression, over the positive points, each summed and divided by ``num_pos``: SmoothL1 (β = 1/9)
  weighted per channel by ``code_weight [1, 1, 0.2, 1, 1, 1, 5, 5, 5, 1, 1, 1, 1]`` = offset x, y,
  depth, L, W, H, 3 angles, 2D box l, t, r, b — as four terms (offset, depth, size, rotation) and
  the 2D-box term (its own SmoothL1 β = 1/9, weight 1); the angles through the sine difference
  ``sin(p)cos(t)`` vs ``cos(p)sin(t)`` (``diff_rad_by_sin``, all three angles);
* direction: cross-entropy over 2 bins per angle, mean over the positives, summed over the 3 angles
  (bins of the *targets*, taken before the sine difference);
* centerness: binary cross-entropy with logits, mean over the positives;
* no positive: the regression terms are sums over an empty set (zero); the total is the plain sum
  of all terms (the GIoU "consistency" loss is built but never used there, so not here either).

Difference: mmcv's CUDA focal-loss op and its PyTorch fallback compute the same; this is the fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from scenemtl.detection.head import DIR_BINS, NUM_ANGLES

#: SmoothL1 weights per regression channel: offset (2), depth, size (3), angles (3), 2D box (4)
CODE_WEIGHT = (1.0, 1.0, 0.2, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0)


@dataclass
class LossWeights:
    """TaskPrompter's weights and loss parameters (``det_head_params.py``)."""

    focal: float = 5.0
    gamma: float = 2.0
    alpha: float = 0.25
    beta: float = 1.0 / 9.0
    code_weight: Sequence[float] = field(default_factory=lambda: CODE_WEIGHT)
    direction: float = 1.0
    centerness: float = 1.0
    box2d: float = 1.0


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Summed sigmoid focal loss of ``logits [N,C]`` against class ids ``labels [N]`` (C = background)."""
    num_classes = logits.shape[1]
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(logits.dtype)
    probability = logits.sigmoid()
    pt = (1 - probability) * target + probability * (1 - target)
    weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum()


def smooth_l1(prediction: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise SmoothL1 (mmdet's: ``0.5·d²/β`` below β, ``d − 0.5·β`` above)."""
    diff = (prediction - target).abs()
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def sine_difference(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin p·cos t, cos p·sin t)``: their difference is ``sin(p − t)`` (mmdet3d's ``add_sin_difference``)."""
    return torch.sin(prediction) * torch.cos(target), torch.cos(prediction) * torch.sin(target)


def det3d_losses(
    cls_scores: torch.Tensor,
    bbox_preds: torch.Tensor,
    dir_cls_preds: torch.Tensor,
    centerness: torch.Tensor,
    labels: torch.Tensor,
    box_targets: torch.Tensor,
    centerness_targets: torch.Tensor,
    direction_targets: torch.Tensor,
    num_images: int,
    weights: LossWeights | None = None,
) -> dict[str, torch.Tensor]:
    """The terms of the loss over flattened points (see the module docstring).

    ``cls_scores [N,C]``, ``bbox_preds [N,13]``, ``dir_cls_preds [N,6]``, ``centerness [N]`` (logits),
    ``labels [N]`` (C = background), ``box_targets [N,13]``, ``centerness_targets [N]``,
    ``direction_targets [N,3]``; ``num_images``: the images these points come from (with boxes).
    Keys: cls, offset, depth, size, rotation, direction, centerness, box2d.
    """
    w = weights or LossWeights()
    num_classes = cls_scores.shape[1]
    positive = (labels >= 0) & (labels < num_classes)
    num_pos = int(positive.sum())
    losses = {"cls": w.focal * sigmoid_focal_loss(cls_scores, labels, w.gamma, w.alpha) / (num_pos + num_images)}
    pred, target = bbox_preds[positive], box_targets[positive]
    dirs, logits = dir_cls_preds[positive], centerness[positive]
    if num_pos == 0:
        for name, part in (("offset", pred[:, 0:2]), ("depth", pred[:, 2]), ("size", pred[:, 3:6]), ("rotation", pred[:, 6:9])):
            losses[name] = part.sum()
        losses["direction"] = dirs.sum()
        losses["centerness"] = logits.sum()
        losses["box2d"] = pred[:, 9:13].sum()
        return losses
    code_weight = pred.new_tensor(list(w.code_weight))
    if code_weight.numel() != pred.shape[1]:
        raise ValueError(f"code_weight needs {pred.shape[1]} values, got {code_weight.numel()}")
    sin_pred, sin_target = sine_difference(pred[:, 6:9], target[:, 6:9])

    def regression(p: torch.Tensor, t: torch.Tensor, channels: slice) -> torch.Tensor:
        return (smooth_l1(p, t, w.beta) * code_weight[channels]).sum() / num_pos

    losses["offset"] = regression(pred[:, 0:2], target[:, 0:2], slice(0, 2))
    losses["depth"] = regression(pred[:, 2:3], target[:, 2:3], slice(2, 3))
    losses["size"] = regression(pred[:, 3:6], target[:, 3:6], slice(3, 6))
    losses["rotation"] = regression(sin_pred, sin_target, slice(6, 9))
    bins = dirs.reshape(-1, NUM_ANGLES, DIR_BINS)
    direction_target = direction_targets[positive]
    losses["direction"] = w.direction * sum(
        (F.cross_entropy(bins[:, a], direction_target[:, a], reduction="sum") / num_pos for a in range(NUM_ANGLES)),
        start=pred.new_zeros(()),
    )
    losses["centerness"] = w.centerness * F.binary_cross_entropy_with_logits(logits, centerness_targets[positive])
    losses["box2d"] = w.box2d * regression(pred[:, 9:13], target[:, 9:13], slice(9, 13))
    return losses
