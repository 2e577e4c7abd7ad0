"""Rotated bird's-eye-view IoU and class-wise rotated NMS in plain PyTorch (CPU and CUDA, no compiled extension).

TaskPrompter decodes its FCOS3D head with mmdet3d's ``iou3d`` CUDA op: per class, ``nms_gpu`` on the
boxes' BEV rectangles, IoU threshold 0.3 (REFERENCE-settings §4.3 "Decoding"; TP
``detection_toolbox/det_tools.py:box3d_multiclass_nms``, ``iou3d/iou3d_utils.py:nms_gpu``). That op
is greedy: boxes sorted by score, each box not yet suppressed is kept and suppresses every later box
whose BEV IoU with it is **greater** than the threshold. Here the IoU is exact, by Sutherland–Hodgman
clipping of one rectangle by the other, batched over all pairs whose circumscribed circles meet.

Rectangle convention (``[..., 5]``): ``(x, z, length, width, yaw)`` in S's ground plane (S: the
camera frame, x right, y down, z forward; metres). ``yaw`` is the angle of the length axis from +x
toward +z: the length axis points along ``(cos yaw, sin yaw)`` in (x, z), the width axis along
``(-sin yaw, cos yaw)``. Seen from above (from S's −y) with x to the right and z up the page, a
positive yaw turns the box counter-clockwise. As a right-handed rotation about S's y axis (which
points down) it is −yaw: a level box whose axes map into S by ``R_y(θ)`` has yaw = −θ
(:func:`bev_rectangles` reads it from ``Boxes3D.rotations`` as ``atan2(R[2,0], R[0,0])``). A car
driving straight ahead (length along +z) has yaw = +π/2.

Differences from mmdet3d's op, none of which changes a kept set except at exact ties:

* mmdet3d's kernel takes ``[x1, y1, x2, y2, θ]`` and turns the corners by −θ
  (``rotate_around_center``); TP feeds it ``(x, z, W, L, θ)``, whose length axis is then
  ``(sin θ, cos θ)``: ``yaw = π/2 − θ`` here. IoU is the same under ``yaw + π`` and under mirroring
  both boxes, so only the relative orientation of two boxes matters.
* the intersection is computed in float64 and is exact up to rounding (the CUDA kernel uses float32
  and an ``atan2`` sort of the crossing points); equal scores keep their input order (a stable sort;
  ``torch.sort`` in ``nms_gpu`` is not stable).
* the kept indices of all classes come back sorted by score (TP concatenates them class by class and
  sorts only when more than ``max_num`` remain).
"""

from __future__ import annotations

import numpy as np
import torch

from scenemtl.detection.boxes import Boxes3D

#: box pairs clipped at once (bounds the memory of one batch of pairs to a few tens of MB)
PAIR_CHUNK = 1 << 15
#: vertices an intersection of two rectangles can have
_MAX_VERTICES = 8


def bev_rectangles(boxes: Boxes3D) -> torch.Tensor:
    """``[N,5]`` BEV rectangles ``(x, z, length, width, yaw)`` of 3D boxes in S (see the module docstring).

    The yaw is the direction of each box's length axis (its first column of ``rotations``) projected
    on S's x–z plane; pitch and roll are ignored, as in TaskPrompter's NMS.
    """
    axis = boxes.rotations[:, :, 0]
    yaw = torch.atan2(axis[:, 2], axis[:, 0])
    return torch.stack([boxes.centers[:, 0], boxes.centers[:, 2], boxes.sizes[:, 0], boxes.sizes[:, 1], yaw], dim=-1)


def _corners(boxes: torch.Tensor) -> torch.Tensor:
    """``[K,4,2]`` corners of ``[K,5]`` rectangles, counter-clockwise in (x, z)."""
    x, z, length, width, yaw = boxes.unbind(-1)
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    along = torch.stack([cos, sin], -1) * (length / 2)[:, None]
    across = torch.stack([-sin, cos], -1) * (width / 2)[:, None]
    centre = torch.stack([x, z], -1)
    return torch.stack([centre + along - across, centre + along + across, centre - along + across, centre - along - across], dim=1)


def _clip_area(subject: torch.Tensor, clip: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Areas ``[P]`` of the convex quadrilaterals ``subject`` ``[P,4,2]`` clipped by ``clip`` ``[P,4,2]``
    (both counter-clockwise), Sutherland–Hodgman with fixed-size vertex buffers.

    Each clipping edge is pushed outward by ``margin`` ``[P]`` (a few ulps of the coordinates), so a
    vertex that lies on the edge up to rounding counts as inside: without it, rounding noise could
    alternate in/out along an edge and emit spurious vertices.
    """
    pairs = subject.shape[0]
    points = subject.new_zeros(pairs, _MAX_VERTICES, 2)
    points[:, :4] = subject
    count = torch.full((pairs,), 4, dtype=torch.int64, device=subject.device)
    slots = torch.arange(_MAX_VERTICES, device=subject.device)
    for k in range(4):
        start, end = clip[:, k], clip[:, (k + 1) % 4]
        edge = end - start
        # signed distance × edge length, positive on the left (inside of a counter-clockwise polygon)
        side = edge[:, None, 0] * (points[..., 1] - start[:, None, 1]) - edge[:, None, 1] * (points[..., 0] - start[:, None, 0])
        side = side + (margin * edge.norm(dim=-1))[:, None]
        valid = slots[None] < count[:, None]
        following = torch.where(slots[None] + 1 < count[:, None], slots[None] + 1, 0)
        side_next = side.gather(1, following)
        points_next = points.gather(1, following[..., None].expand(-1, -1, 2))
        inside, inside_next = side >= 0, side_next >= 0
        keep = valid & inside
        cross = valid & (inside != inside_next)
        denominator = torch.where(cross, side - side_next, torch.ones_like(side))
        crossing = points + (side / denominator)[..., None] * (points_next - points)
        candidates = torch.stack([points, crossing], dim=2).reshape(pairs, 2 * _MAX_VERTICES, 2)
        emitted = torch.stack([keep, cross], dim=2).reshape(pairs, 2 * _MAX_VERTICES)
        # compact the emitted vertices to the front, in order (the others land in a discarded slot)
        position = torch.where(emitted, emitted.cumsum(1) - 1, 2 * _MAX_VERTICES).clamp(max=2 * _MAX_VERTICES)
        compact = candidates.new_zeros(pairs, 2 * _MAX_VERTICES + 1, 2)
        compact.scatter_(1, position[..., None].expand(-1, -1, 2), candidates)
        points = compact[:, :_MAX_VERTICES]
        count = emitted.sum(1).clamp(max=_MAX_VERTICES)
    valid = slots[None] < count[:, None]
    following = torch.where(slots[None] + 1 < count[:, None], slots[None] + 1, 0)
    points_next = points.gather(1, following[..., None].expand(-1, -1, 2))
    twice = points[..., 0] * points_next[..., 1] - points[..., 1] * points_next[..., 0]
    return (torch.where(valid, twice, torch.zeros_like(twice)).sum(1) / 2).clamp_min(0)


def rotated_bev_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N,M]`` IoU of BEV rectangles ``a`` ``[N,5]`` and ``b`` ``[M,5]`` (``(x, z, length, width, yaw)``).

    Exact (float64 convex clipping) for every pair whose circumscribed circles meet, 0 for the rest and
    for empty rectangles. Returned in ``a``'s floating dtype (float32 for integer input) on its device.
    """
    if a.ndim != 2 or a.shape[-1] != 5 or b.ndim != 2 or b.shape[-1] != 5:
        raise ValueError(
            f"rotated_bev_iou takes [N,5] and [M,5] rectangles (x, z, length, width, yaw), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    dtype = a.dtype if a.is_floating_point() else torch.float32
    iou = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    if not a.shape[0] or not b.shape[0]:
        return iou.to(dtype)
    a64, b64 = a.double(), b.to(a.device).double()
    area_a, area_b = a64[:, 2] * a64[:, 3], b64[:, 2] * b64[:, 3]
    radius_a, radius_b = torch.hypot(a64[:, 2], a64[:, 3]) / 2, torch.hypot(b64[:, 2], b64[:, 3]) / 2
    distance = torch.cdist(a64[:, :2], b64[:, :2])
    rows, cols = torch.nonzero(
        (distance <= radius_a[:, None] + radius_b[None, :]) & (area_a[:, None] > 0) & (area_b[None, :] > 0), as_tuple=True
    )
    for first in range(0, rows.numel(), PAIR_CHUNK):
        row, col = rows[first : first + PAIR_CHUNK], cols[first : first + PAIR_CHUNK]
        # both rectangles relative to the clipping one's centre: small coordinates, small rounding
        origin = b64[col, :2]
        shifted_a, shifted_b = a64[row].clone(), b64[col].clone()
        shifted_a[:, :2] -= origin
        shifted_b[:, :2] = 0
        subject, clip = _corners(shifted_a), _corners(shifted_b)
        scale = torch.maximum(subject.abs().amax(dim=(1, 2)), clip.abs().amax(dim=(1, 2)))
        margin = 64 * torch.finfo(torch.float64).eps * (1 + scale)
        inter = torch.minimum(_clip_area(subject, clip, margin), torch.minimum(area_a[row], area_b[col]))
        iou[row, col] = inter / (area_a[row] + area_b[col] - inter).clamp_min(1e-12)
    return iou.clamp(0, 1).to(dtype)


def rotated_nms(
    bev: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float, max_keep: int | None = None
) -> torch.Tensor:
    """Class-wise greedy NMS on BEV rectangles ``[N,5]`` (as mmdet3d's ``nms_gpu`` per class).

    Within each label, boxes are visited by decreasing score (ties in input order); a box is kept
    unless a kept box of the same label has a BEV IoU **greater** than ``threshold`` with it. Boxes of
    different labels never suppress each other. Returns the kept indices (int64, on ``bev``'s device)
    sorted by decreasing score, at most ``max_keep`` of them.
    """
    if bev.ndim != 2 or bev.shape[-1] != 5:
        raise ValueError(f"rotated_nms takes [N,5] rectangles (x, z, length, width, yaw), got {tuple(bev.shape)}")
    if scores.shape != bev.shape[:1] or labels.shape != bev.shape[:1]:
        raise ValueError(f"rotated_nms: {bev.shape[0]} rectangles but scores {tuple(scores.shape)} and labels {tuple(labels.shape)}")
    if max_keep is not None and max_keep < 0:
        raise ValueError(f"max_keep must be None or ≥ 0, got {max_keep}")
    device = bev.device
    order = torch.sort(scores, descending=True, stable=True).indices
    kept: list[torch.Tensor] = []
    sorted_labels = labels[order]
    for label in torch.unique(sorted_labels).tolist():
        members = order[sorted_labels == label]  # by decreasing score
        suppress = (rotated_bev_iou(bev[members], bev[members]) > threshold).cpu().numpy()
        removed = np.zeros(members.numel(), dtype=bool)
        chosen = []
        for i in range(members.numel()):
            if removed[i]:
                continue
            chosen.append(i)
            removed |= suppress[i]
        kept.append(members[torch.as_tensor(chosen, dtype=torch.int64, device=device)])
    if not kept:
        return torch.zeros(0, dtype=torch.int64, device=device)
    # back to the global score order (the position in ``order`` keeps ties in input order)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    keep = torch.cat(kept)
    keep = keep[torch.argsort(rank[keep])]
    return keep if max_keep is None else keep[:max_keep]


__all__ = ["PAIR_CHUNK", "bev_rectangles", "rotated_bev_iou", "rotated_nms"]
