"""FCOS3D target assignment for TaskPrompter's Cityscapes-3D detection, and its inverse (decoding).

Facts (``prismformore/Multi-Task-Transformer``, HEAD ``b83962a``):

* points (``TaskPrompter/detection_toolbox/det_model.py:_get_points_single``): feature cell (i, j) of
  a level of stride s sits at ``(j·s + s // 2, i·s + s // 2)`` input pixels (``//``: floor, also for
  TaskPrompter's fractional strides 8/0.75 …);
* assignment (``det_model.py:_get_target_single``, mmdet3d's FCOS3D): a point is a candidate for a box
  when it lies strictly inside the square of half side ``1.5·stride`` around the box's **projected 3D
  centre** (not intersected with the 2D box) and the largest of its distances (l, t, r, b) to the
  sides of the **modal** 2D box lies in the level's regress range (both ends inclusive:
  ((−1, 96), (96, 192), (192, 384), (384, 768), (768, ∞)), ``configs/cityscapes3d/det_head_params.py``);
  among candidates the box whose projected centre is nearest wins; the rest is background (label =
  number of classes);
* targets (``det_model.py:get_targets``, ``norm_on_bbox``): centre offset ``(point − centre_2d) / stride``
  (decoded as ``centre_2d = point − offset·stride``), depth z of the centre (metres, as is), size
  ``[L, W, H]`` (metres, as is: the head's ``exp`` makes it positive; no log), 3 rotation angles, 2D
  box ``(l, t, r, b) / stride``; centerness ``exp(−2.5·‖point − centre_2d‖ / (1.414·1.5·stride))``;
  direction bin per angle ``floor(limit_period(angle, 0, 2π) / π)`` (``get_direction_target``);
* decoding (``det_model.py:_get_bboxes_single``): per level the ``nms_pre`` (1000) points of highest
  ``max_class(sigmoid(cls)·sigmoid(centerness))`` when the level has more, centre ``point −
  offset·stride`` back-projected with the camera at the decoded depth (``points_img2cam``), angles
  ``limit_period(angle, 0, π) + π·bin``, 2D box ``point ∓ distances·stride`` clipped to the image,
  score ``sigmoid(cls)·sigmoid(centerness)`` per class, kept above ``score_thr`` 0.05; class-wise NMS
  and ``max_per_img`` 200 follow (``Det3DTask.predict``).

Rotation angles. TaskPrompter regresses ``Rotation.from_quat(rotation_S.q).as_euler('ZXY')`` where
``rotation_S`` is cityscapesScripts' S-frame quaternion (``Box3dImageTransform.get_parameters(CRS_S)``,
``data/cityscapes3d.py:load_det``). That quaternion is the box rotation conjugated into S, i.e. the
rotation of the box with its axes **S-style** (``R_css = rotations · C2S.T`` with ``C2S`` the C→S axis
permutation; checked against cityscapesScripts numerically): an unrotated car ahead of the camera has
``R_css = I`` and its yaw is the third angle (about S's y). Here the angles are
``Rotation.from_matrix(R_css).as_euler('ZXY')`` (correct scipy use); ``legacy_quaternion_order``
reproduces TaskPrompter's quirk: pyquaternion's (w, x, y, z) passed where scipy expects (x, y, z, w)
— encode ``from_quat(roll(q_xyzw, 1))``, decode ``from_quat(roll(from_euler(...).as_quat(), −1))``,
which round-trips as TaskPrompter's ``bbox2json`` does. (Euler angles of ``rotations`` itself — the
box's V-style axes — would be (π/2, 0, −π/2) for that car and gimbal-locked for a car seen side-on,
hence the S-style matrix in both modes.)

Pixel convention. ``Boxes3D.camera`` puts pixel centres at integers, its ``boxes2d`` pixel edges at
integers. The points, 2D boxes and centre targets here live in the 2D boxes' convention: the
projected centre is ``K·X/z + 0.5``. TaskPrompter mixes the two (half a pixel, 1/20 of the finest
stride).

BEV for rotated NMS: ``scenemtl.detection.nms.bev_rectangles`` (x, z, length, width, yaw) in S's x–z
plane, yaw the angle of the box's length axis (its x) from S's +x towards +z, ``atan2(R[2,0], R[0,0])``
of the full rotation (an upright car driving straight ahead: +π/2). TaskPrompter feeds mmdet3d's
``nms_gpu`` (x, z, W, L, third Euler angle) instead, which for upright boxes is the same rectangle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation  # type: ignore[import-untyped]

from scenemtl.detection.boxes import Boxes3D
from scenemtl.detection.head import BOX_CODE_SIZE, DIR_BINS, NUM_ANGLES, Det3DOutput

#: the C→S axis permutation of cityscapesScripts (``K_multiplier``): S = C2S · C
C2S = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
#: TaskPrompter's regress ranges of its 5 levels (max 2D-box side distance, input pixels)
REGRESS_RANGES = ((-1.0, 96.0), (96.0, 192.0), (192.0, 384.0), (384.0, 768.0), (768.0, math.inf))
#: centre-sampling radius in strides, centerness sharpness (``center_sample_radius``, ``centerness_alpha``)
CENTER_RADIUS, CENTERNESS_ALPHA = 1.5, 2.5
#: from a ``Boxes3D.camera`` pixel coordinate to the ``boxes2d`` convention
PIXEL_SHIFT = 0.5


def regress_ranges(num_levels: int) -> tuple[tuple[float, float], ...]:
    """TaskPrompter's ranges for 5 levels; for another count the same doubling from 96 px, the last open."""
    bounds = [96.0 * 2**k for k in range(num_levels - 1)]
    lows, highs = [-1.0, *bounds], [*bounds, math.inf]
    return tuple(zip(lows, highs))


def limit_period(value: torch.Tensor, offset: float = 0.5, period: float = math.pi) -> torch.Tensor:
    """``value`` moved by whole periods into ``[−offset·period, (1 − offset)·period)`` (mmdet3d's)."""
    return value - torch.floor(value / period + offset) * period


def level_points(
    sizes: Sequence[Sequence[int]], strides: Sequence[float], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    """Per level ``[H_l·W_l, 2]`` point coordinates (x, y) in input pixels, row-major (see the module docstring)."""
    points = []
    for (height, width), stride in zip(sizes, strides):
        ys, xs = torch.meshgrid(
            torch.arange(int(height), device=device, dtype=dtype), torch.arange(int(width), device=device, dtype=dtype), indexing="ij"
        )
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) * stride + stride // 2)
    return points


# -- rotations ------------------------------------------------------------------------------------
def rotation_to_angles(rotations: torch.Tensor, legacy_quaternion_order: bool = False) -> torch.Tensor:
    """``[N,3]`` regressed angles of box→S rotations ``[N,3,3]`` (see the module docstring)."""
    if rotations.shape[0] == 0:
        return rotations.new_zeros(0, NUM_ANGLES)
    css = rotations.detach().double().cpu().numpy() @ C2S.T
    rotation = Rotation.from_matrix(css)
    if legacy_quaternion_order:
        rotation = Rotation.from_quat(np.roll(rotation.as_quat(), 1, axis=-1))  # (w,x,y,z) read as (x,y,z,w)
    return torch.as_tensor(rotation.as_euler("ZXY"), dtype=rotations.dtype, device=rotations.device)


def angles_to_rotation(angles: torch.Tensor, legacy_quaternion_order: bool = False) -> torch.Tensor:
    """``[N,3,3]`` box→S rotations of regressed angles ``[N,3]`` (the inverse of :func:`rotation_to_angles`)."""
    if angles.shape[0] == 0:
        return angles.new_zeros(0, 3, 3)
    rotation = Rotation.from_euler("ZXY", angles.detach().double().cpu().numpy())
    if legacy_quaternion_order:
        rotation = Rotation.from_quat(np.roll(rotation.as_quat(), -1, axis=-1))  # (x,y,z,w) read as (w,x,y,z)
    return torch.as_tensor(rotation.as_matrix() @ C2S, dtype=angles.dtype, device=angles.device)


def direction_bins(angles: torch.Tensor, offset: torch.Tensor | Sequence[float] | float = 0.0) -> torch.Tensor:
    """int64 direction bin (0 or 1) of each angle: ``floor(limit_period(angle − offset, 0, 2π) / π)``.

    ``offset`` (one value, or one per angle, broadcast over the last axis) is mmdet3d's ``dir_offset``:
    where the bins meet; TaskPrompter's is 0 for all three angles, which puts the boundary at the
    roll and pitch of an upright box (see ``Det3DTask``'s ``dir_offset``)."""
    shifted = angles - torch.as_tensor(offset, dtype=angles.dtype, device=angles.device)
    bins = torch.floor(limit_period(shifted, 0.0, 2 * math.pi) / (2 * math.pi / DIR_BINS)).long()
    return bins.clamp(0, DIR_BINS - 1)


def apply_direction(angles: torch.Tensor, bins: torch.Tensor, offset: torch.Tensor | Sequence[float] | float = 0.0) -> torch.Tensor:
    """Angles known up to π made whole with their direction bins:
    ``limit_period(angle − offset, 0, π) + offset + π·bin`` (the inverse of :func:`direction_bins`)."""
    shift = torch.as_tensor(offset, dtype=angles.dtype, device=angles.device)
    return limit_period(angles - shift, 0.0, math.pi) + shift + math.pi * bins.to(angles.dtype)


# -- per-box codes --------------------------------------------------------------------------------
@dataclass
class EncodedBoxes:
    """The regression quantities of ``G`` boxes (image-level, before assignment to points).

    ``centers2d`` ``[G,2]`` the projected centre in the ``boxes2d`` pixel convention; ``depths``
    ``[G]`` metres; ``sizes`` ``[G,3]`` L, W, H; ``angles`` ``[G,3]``; ``boxes2d`` ``[G,4]`` modal
    x1, y1, x2, y2; ``labels`` ``[G]``.
    """

    labels: torch.Tensor
    centers2d: torch.Tensor
    depths: torch.Tensor
    sizes: torch.Tensor
    angles: torch.Tensor
    boxes2d: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def encode(boxes: Boxes3D, legacy_quaternion_order: bool = False) -> EncodedBoxes:
    """The codes of ``boxes`` (float32, on their device)."""
    centers = boxes.centers.float()
    uvz = centers @ boxes.camera.float().T
    depths = uvz[:, 2]
    centers2d = uvz[:, :2] / depths[:, None].clamp_min(1e-6) + PIXEL_SHIFT
    return EncodedBoxes(
        labels=boxes.labels.long(),
        centers2d=centers2d,
        depths=depths,
        sizes=boxes.sizes.float(),
        angles=rotation_to_angles(boxes.rotations.float(), legacy_quaternion_order),
        boxes2d=boxes.boxes2d.float(),
    )


def backproject(centers2d: torch.Tensor, depths: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """S-frame points ``[N,3]`` of image points (``boxes2d`` convention) at z-depths (``points_img2cam``)."""
    uv = centers2d - PIXEL_SHIFT
    homogeneous = torch.cat([uv * depths[:, None], depths[:, None]], dim=1)
    points: torch.Tensor = homogeneous @ torch.linalg.inv(camera.to(homogeneous)).T
    return points


def decode(
    codes: EncodedBoxes,
    camera: torch.Tensor,
    legacy_quaternion_order: bool = False,
    dir_bins: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    dir_offset: Sequence[float] | float = 0.0,
) -> Boxes3D:
    """``Boxes3D`` of codes seen by ``camera`` (the inverse of :func:`encode`); with ``dir_bins`` ``[G,3]``
    the angles are first made whole with them (:func:`apply_direction` at ``dir_offset``), as decoded predictions are."""
    angles = codes.angles if dir_bins is None else apply_direction(codes.angles, dir_bins, dir_offset)
    return Boxes3D(
        labels=codes.labels,
        centers=backproject(codes.centers2d, codes.depths, camera),
        sizes=codes.sizes,
        rotations=angles_to_rotation(angles, legacy_quaternion_order),
        boxes2d=codes.boxes2d,
        camera=camera.float(),
        scores=scores,
    )


# -- assignment -----------------------------------------------------------------------------------
@dataclass
class PointTargets:
    """Targets of the ``P`` points of one image (levels concatenated, each row-major).

    ``labels`` ``[P]`` (number of classes = background); ``boxes`` ``[P,13]`` offset/stride (2), depth,
    L, W, H, 3 angles, (l, t, r, b)/stride; ``centerness`` ``[P]``; ``direction`` ``[P,3]`` int64 bins.
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    centerness: torch.Tensor
    direction: torch.Tensor


def assign(
    codes: EncodedBoxes,
    points: Sequence[torch.Tensor],
    strides: Sequence[float],
    num_classes: int,
    ranges: Sequence[tuple[float, float]] | None = None,
    radius: float = CENTER_RADIUS,
    alpha: float = CENTERNESS_ALPHA,
    dir_offset: Sequence[float] | float = 0.0,
) -> PointTargets:
    """FCOS3D's targets of one image's points per level (see the module docstring); ``ranges``: per
    level (low, high) of the largest 2D-box side distance (default: :func:`regress_ranges`)."""
    ranges = regress_ranges(len(points)) if ranges is None else ranges
    if len(ranges) != len(points):
        raise ValueError(f"{len(points)} levels but {len(ranges)} regress ranges")
    xy = torch.cat(list(points))
    count = xy.shape[0]
    stride = torch.cat([xy.new_full((len(p),), float(s)) for p, s in zip(points, strides)])
    limits = torch.cat([xy.new_tensor(r).expand(len(p), 2) for p, r in zip(points, ranges)])
    if len(codes) == 0:
        return PointTargets(
            labels=torch.full((count,), num_classes, dtype=torch.long, device=xy.device),
            boxes=xy.new_zeros(count, BOX_CODE_SIZE),
            centerness=xy.new_zeros(count),
            direction=torch.zeros(count, NUM_ANGLES, dtype=torch.long, device=xy.device),
        )
    delta = xy[:, None, :] - codes.centers2d[None]  # [P,G,2]: point − centre
    x1, y1, x2, y2 = codes.boxes2d.unbind(-1)
    sides = torch.stack([xy[:, None, 0] - x1, xy[:, None, 1] - y1, x2 - xy[:, None, 0], y2 - xy[:, None, 1]], dim=-1)  # l,t,r,b
    half = (radius * stride)[:, None]
    inside = (delta[..., 0].abs() < half) & (delta[..., 1].abs() < half)
    reach = sides.max(-1).values
    in_range = (reach >= limits[:, None, 0]) & (reach <= limits[:, None, 1])
    distance = delta.norm(dim=-1)
    candidate = torch.where(inside & in_range, distance, torch.full_like(distance, math.inf))
    nearest, index = candidate.min(dim=1)
    rows = torch.arange(count, device=xy.device)
    labels = torch.where(torch.isfinite(nearest), codes.labels[index], torch.full_like(index, num_classes))
    boxes = torch.cat(
        [
            delta[rows, index] / stride[:, None],
            codes.depths[index, None],
            codes.sizes[index],
            codes.angles[index],
            sides[rows, index] / stride[:, None],
        ],
        dim=1,
    )
    centerness = torch.exp(-alpha * distance[rows, index] / (1.414 * radius * stride))
    return PointTargets(labels=labels, boxes=boxes, centerness=centerness, direction=direction_bins(codes.angles[index], dir_offset))


# -- decoding -------------------------------------------------------------------------------------
def decode_maps(
    output: Det3DOutput,
    index: int,
    camera: torch.Tensor,
    legacy_quaternion_order: bool = False,
    nms_pre: int = 1000,
    score_threshold: float = 0.05,
    dir_offset: Sequence[float] | float = 0.0,
) -> Boxes3D:
    """The candidate boxes of image ``index`` before NMS: one per (point, class) whose score
    ``sigmoid(cls)·sigmoid(centerness)`` exceeds ``score_threshold``, after keeping each level's
    ``nms_pre`` best points (see the module docstring)."""
    height, width = output.image_size
    sizes = [x.shape[-2:] for x in output.cls_scores]
    points = level_points(sizes, output.strides, output.cls_scores[0].device)
    scores_all, boxes_all, dirs_all, points_all, strides_all = [], [], [], [], []
    for level, level_stride in enumerate(output.strides):
        num_classes = output.cls_scores[level].shape[1]
        scores = output.cls_scores[level][index].detach().float().permute(1, 2, 0).reshape(-1, num_classes).sigmoid()
        centerness = output.centernesses[level][index].detach().float().reshape(-1).sigmoid()
        boxes = output.bbox_preds[level][index].detach().float().permute(1, 2, 0).reshape(-1, BOX_CODE_SIZE)
        dirs = output.dir_cls_preds[level][index].detach().float().permute(1, 2, 0).reshape(-1, NUM_ANGLES, DIR_BINS).argmax(-1)
        scores = scores * centerness[:, None]
        level_xy = points[level]
        if 0 < nms_pre < scores.shape[0]:
            keep = scores.max(dim=1).values.topk(nms_pre).indices
            scores, boxes, dirs, level_xy = scores[keep], boxes[keep], dirs[keep], level_xy[keep]
        scores_all.append(scores)
        boxes_all.append(boxes)
        dirs_all.append(dirs)
        points_all.append(level_xy)
        strides_all.append(level_xy.new_full((len(level_xy), 1), float(level_stride)))
    scores, boxes, dirs = torch.cat(scores_all), torch.cat(boxes_all), torch.cat(dirs_all)
    xy, stride = torch.cat(points_all), torch.cat(strides_all)
    point, label = (scores > score_threshold).nonzero(as_tuple=True)
    boxes, dirs, xy, stride = boxes[point], dirs[point], xy[point], stride[point]
    distances = boxes[:, 9:13] * stride
    boxes2d = torch.stack(
        [
            (xy[:, 0] - distances[:, 0]).clamp(0, width),
            (xy[:, 1] - distances[:, 1]).clamp(0, height),
            (xy[:, 0] + distances[:, 2]).clamp(0, width),
            (xy[:, 1] + distances[:, 3]).clamp(0, height),
        ],
        dim=1,
    )
    codes = EncodedBoxes(
        labels=label,
        centers2d=xy - boxes[:, 0:2] * stride,
        depths=boxes[:, 2],
        sizes=boxes[:, 3:6],
        angles=boxes[:, 6:9],
        boxes2d=boxes2d,
    )
    return decode(
        codes, camera.to(xy.device).float(), legacy_quaternion_order, dir_bins=dirs, scores=scores[point, label], dir_offset=dir_offset
    )
