"""Monocular 3D detection (``det3d``): TaskPrompter's FCOS3D-style task of its Cityscapes-3D benchmark.

The target of an image is a ``detection.Boxes3D`` (an instance target: ``is_map`` False), the model's
output a ``detection.head.Det3DOutput`` from the head ``build_head`` returns, the prediction a
``Boxes3D`` with scores per image. Facts and differences are in the docstrings of
``scenemtl.detection.head`` (FPN + head), ``.targets`` (assignment, angles, decoding, BEV) and
``.losses``; the task adds (``prismformore/Multi-Task-Transformer:TaskPrompter/detection_toolbox/det_model.py``,
``det_tools.py:box3d_multiclass_nms``, ``configs/cityscapes3d/det_head_params.py``):

* images without boxes are dropped from the loss (TaskPrompter's ``loss``; ``empty_images:
  background`` keeps annotated images without objects, all background, as mmdet3d's FCOS3D does); the
  loss is the plain sum of the terms (cls, offset, depth, size, rotation, direction, centerness,
  box2d), plus zero times every output so all head parameters stay in the graph (DDP without
  ``find_unused_parameters``);
* partial labels: an image whose boxes are withheld carries ``unlabelled``'s marker (``Boxes3D``
  with ``labelled`` False), never read as background;
* ``dir_offset`` (mmdet3d's): where the two direction bins of each angle meet, one value or one per
  angle (roll, pitch, yaw); TaskPrompter's 0 puts the boundary at the roll and pitch of an upright
  box, so their bin follows the sign of a small tilt (π/2 for those two moves it away);
* ``regress_ranges``: per level (low, high) of the largest 2D-box side distance in input pixels;
  TaskPrompter's 96·2^k ladder by default, made for 512×1024 inputs (smaller images want smaller ones);
* prediction: candidates above ``score_threshold`` (0.05), per-class rotated BEV NMS at
  ``nms_threshold`` (0.3, ``scenemtl.detection.nms.rotated_nms`` on ``nms.bev_rectangles``: x, z,
  length, width and the yaw of the length axis from S's +x towards +z), the ``max_per_image`` (200) best.

Cameras: decoding needs each image's camera matrix, which the head does not see. ``predict`` takes
them as ``cameras`` (a ``[B,3,3]`` tensor, or per image a matrix or the image's ``Boxes3D``
target), else from ``Det3DOutput.cameras``; without either it raises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from scenemtl import geometry
from scenemtl.detection.boxes import DETECTION_CLASSES, Boxes3D
from scenemtl.detection.head import FCOS3DHead, Det3DOutput, build_det3d_head
from scenemtl.detection.losses import CODE_WEIGHT, LossWeights, det3d_losses
from scenemtl.detection.targets import assign, decode_maps, encode, level_points
from scenemtl.errors import ConfigError
from scenemtl.metrics.base import StreamingMetric
from scenemtl.tasks.base import Task
from scenemtl.tasks.colors import Key, label_palette
from scenemtl.tasks.registry import register_task

#: Cityscapes-3D evaluation matchings (``Det3DMetric``): TaskPrompter's modal, or the official CLI default amodal
MATCHINGS = ("modal", "amodal")
#: what the loss does with annotated images without objects: TaskPrompter drops them, mmdet3d keeps them as background
EMPTY_IMAGES = ("drop", "background")
#: the 12 edges of a box as pairs of ``Boxes3D.corners`` indices (corners differing in one sign)
BOX_EDGES = tuple((a, a ^ bit) for a in range(8) for bit in (1, 2, 4) if a < a ^ bit)
#: edges are clipped to this distance in front of the camera before projection (metres)
NEAR_PLANE = 0.1


@register_task("det3d")
class Det3DTask(Task):
    """Monocular 3D detection of ``DETECTION_CLASSES`` (see the module docstring).

    Options: ``legacy_quaternion_order`` (TaskPrompter's angle targets, ``detection.targets``);
    ``dcn`` (DCNv2 on the last tower conv); ``width`` (FPN, towers and branches; the cls branch
    narrows to half; a multiple of 64 for GroupNorm's 32 groups; 256 is the recipe's);
    ``score_threshold``, ``nms_threshold``, ``max_per_image``, ``nms_pre`` (decoding);
    ``matching`` (the metric's 2D matching, 'modal' as TaskPrompter or 'amodal'); ``empty_images``
    ('drop' as TaskPrompter, or 'background'), ``dir_offset``, ``regress_ranges`` (module docstring);
    loss weights ``focal_weight`` (5), ``code_weight`` (13 values, default TaskPrompter's),
    ``direction_weight``, ``centerness_weight``, ``box2d_weight`` (1).
    """

    out_channels = 0
    is_map = False
    output_kind = "boxes3d"

    def __init__(
        self,
        name: str = "det3d",
        legacy_quaternion_order: bool = False,
        dcn: bool = True,
        width: int = 256,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.3,
        max_per_image: int = 200,
        nms_pre: int = 1000,
        matching: str = "modal",
        focal_weight: float = 5.0,
        code_weight: list[float] | None = None,
        direction_weight: float = 1.0,
        centerness_weight: float = 1.0,
        box2d_weight: float = 1.0,
        class_names: list[str] | None = None,
        palette: Any = None,
        camera: list[float] | None = None,
        camera_size: list[int] | None = None,
        empty_images: str = "drop",
        dir_offset: float | list[float] = 0.0,
        regress_ranges: list[list[float]] | None = None,
    ) -> None:
        super().__init__(name)
        if empty_images not in EMPTY_IMAGES:
            raise ConfigError(f"tasks.{name}.empty_images must be one of {list(EMPTY_IMAGES)}, got {empty_images!r}")
        offsets = [dir_offset] * 3 if isinstance(dir_offset, (int, float)) else list(dir_offset)
        if len(offsets) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in offsets):
            raise ConfigError(f"tasks.{name}.dir_offset must be one angle (radians) or three (roll, pitch, yaw), got {dir_offset!r}")
        ranges = None if regress_ranges is None else [list(pair) for pair in regress_ranges]
        if ranges is not None and not (
            ranges and all(len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair) and pair[0] < pair[1] for pair in ranges)
        ):
            raise ConfigError(
                f"tasks.{name}.regress_ranges must be one [low, high] per level (pixels, low < high; .inf for no bound), "
                f"got {regress_ranges!r}"
            )
        self.empty_images = empty_images
        self.dir_offset = tuple(float(v) for v in offsets)
        self.regress_ranges = None if ranges is None else tuple((float(lo), float(hi)) for lo, hi in ranges)
        if camera is not None and (len(camera) != 4 or not all(math.isfinite(float(v)) for v in camera) or min(camera[:2]) <= 0):
            raise ConfigError(f"tasks.{name}.camera must be [fx, fy, u0, v0] (pixels, fx and fy positive), got {camera!r}")
        if camera_size is not None and (len(camera_size) != 2 or min(camera_size) <= 0):
            raise ConfigError(f"tasks.{name}.camera_size must be [height, width] of the images the camera describes, got {camera_size!r}")
        #: the camera of images that come without one (scenemtl predict), at ``camera_size`` (default: the image's)
        self.default_camera = None if camera is None else [float(v) for v in camera]
        self.camera_size = None if camera_size is None else (int(camera_size[0]), int(camera_size[1]))
        if width < 64 or width % 64:
            raise ConfigError(f"tasks.{name}.width must be a positive multiple of 64 (GroupNorm's 32 groups on half of it), got {width}")
        for key, value in (("score_threshold", score_threshold), ("nms_threshold", nms_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"tasks.{name}.{key} must be in [0, 1], got {value}")
        if max_per_image < 1 or nms_pre < 0:
            raise ConfigError(f"tasks.{name}: max_per_image must be ≥ 1 and nms_pre ≥ 0 (0: keep all), got {max_per_image}, {nms_pre}")
        if matching not in MATCHINGS:
            raise ConfigError(f"tasks.{name}.matching must be one of {list(MATCHINGS)}, got {matching!r}")
        weights = list(CODE_WEIGHT) if code_weight is None else [float(x) for x in code_weight]
        if len(weights) != len(CODE_WEIGHT) or not all(math.isfinite(x) and x >= 0 for x in weights):
            raise ConfigError(f"tasks.{name}.code_weight must be {len(CODE_WEIGHT)} non-negative numbers, got {code_weight!r}")
        self.legacy_quaternion_order, self.dcn, self.width = bool(legacy_quaternion_order), bool(dcn), int(width)
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.max_per_image, self.nms_pre, self.matching = int(max_per_image), int(nms_pre), matching
        self.weights = LossWeights(
            focal=float(focal_weight),
            code_weight=tuple(weights),
            direction=float(direction_weight),
            centerness=float(centerness_weight),
            box2d=float(box2d_weight),
        )
        # the dataset's detection classes (Cityscapes-3D: DETECTION_CLASSES)
        self.class_names = list(class_names) if class_names else list(DETECTION_CLASSES)
        self.palette = label_palette(len(self.class_names) + 1)[1:]  # index 0 of the VOC map is black

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_head(self, in_channels: list[int], strides: list[int]) -> FCOS3DHead:
        """The FPN + FCOS3D head on features of ``in_channels`` at ``strides`` (input pixels)."""
        w = self.width
        return build_det3d_head(
            in_channels,
            strides,
            num_classes=self.num_classes,
            fpn_channels=w,
            feat_channels=w,
            cls_branch=(w, w // 2),
            branch_channels=w,
            dcn=self.dcn,
        )

    # -- learning ------------------------------------------------------------------------------
    def losses(self, output: Det3DOutput, target: Sequence[Boxes3D]) -> dict[str, torch.Tensor]:
        """The loss terms over the images of ``target`` that count (``valid_mask``; see ``detection.losses``)."""
        output = output.float()
        if len(target) != output.batch_size:
            raise ValueError(f"{output.batch_size} images of output but {len(target)} targets")
        keep = [i for i, counts in enumerate(self.valid_mask(target).tolist()) if counts]
        if not keep:
            return {}
        device = output.cls_scores[0].device
        points = level_points([x.shape[-2:] for x in output.cls_scores], output.strides, device)
        ranges = self.regress_ranges
        if ranges is not None and len(ranges) != len(points):
            raise ConfigError(
                f"tasks.{self.name}.regress_ranges has {len(ranges)} levels but the head has {len(points)}; give one per level"
            )
        assigned = [
            assign(
                encode(target[i].to(device), self.legacy_quaternion_order),
                points,
                output.strides,
                self.num_classes,
                ranges=ranges,
                dir_offset=self.dir_offset,
            )
            for i in keep
        ]
        index = torch.tensor(keep, device=device)

        def flat(maps: list[torch.Tensor]) -> torch.Tensor:
            channels = maps[0].shape[1]
            return torch.cat([x[index].permute(0, 2, 3, 1).reshape(len(keep), -1, channels) for x in maps], dim=1).reshape(-1, channels)

        return det3d_losses(
            flat(output.cls_scores),
            flat(output.bbox_preds),
            flat(output.dir_cls_preds),
            flat(output.centernesses)[:, 0],
            torch.cat([a.labels for a in assigned]),
            torch.cat([a.boxes for a in assigned]),
            torch.cat([a.centerness for a in assigned]),
            torch.cat([a.direction for a in assigned]),
            num_images=len(keep),
            weights=self.weights,
        )

    def loss(self, output: Det3DOutput, target: Sequence[Boxes3D]) -> torch.Tensor:  # type: ignore[override]
        """The plain sum of ``losses`` (zero, with a gradient path, when no image counts)."""
        return sum(self.losses(output, target).values(), start=self.zero_loss(output))

    def zero_loss(self, output: Det3DOutput) -> torch.Tensor:
        """Zero times every output map (non-finite values zeroed first, so an overflow off the positives cannot poison it)."""
        maps = [*output.cls_scores, *output.bbox_preds, *output.dir_cls_preds, *output.centernesses]
        return sum((torch.nan_to_num(x.float(), 0.0, 0.0, 0.0).sum() * 0.0 for x in maps), start=torch.zeros((), device=maps[0].device))

    def valid_mask(self, target: Sequence[Boxes3D]) -> torch.Tensor:  # type: ignore[override]
        """``[B]`` bool: the images the loss reads: annotated (``Boxes3D.labelled``) with at least one box,
        or any annotated image with ``empty_images: background``."""
        device = target[0].labels.device if len(target) else None
        background = self.empty_images == "background"
        return torch.tensor([boxes.labelled and (background or len(boxes) > 0) for boxes in target], dtype=torch.bool, device=device)

    def unlabelled(self, target: Boxes3D) -> Boxes3D:
        """The marker of an image whose boxes are withheld: no boxes, ``labelled`` False, the image's camera kept."""
        return Boxes3D.empty(target.camera, labelled=False)

    # -- prediction ----------------------------------------------------------------------------
    def cameras(self, output: Det3DOutput, cameras: Any = None) -> list[torch.Tensor]:
        """Each image's 3×3 camera from ``cameras`` (tensor ``[B,3,3]``, or per image a matrix or ``Boxes3D``) or ``output.cameras``."""
        source = cameras if cameras is not None else output.cameras
        if source is None:
            raise ValueError(
                f"{self.name}: decoding 3D boxes needs each image's camera: pass predict(output, cameras=...) "
                "(the batch's Boxes3D targets or their cameras) or set Det3DOutput.cameras"
            )
        found = [item.camera if isinstance(item, Boxes3D) else torch.as_tensor(item) for item in source]
        if len(found) != output.batch_size:
            raise ValueError(f"{output.batch_size} images of output but {len(found)} cameras")
        return [camera.float() for camera in found]

    def predict(self, output: Det3DOutput, cameras: Any = None) -> list[Boxes3D]:  # type: ignore[override]
        """Per image the detections after class-wise rotated BEV NMS, with scores, best first (at most ``max_per_image``).

        Each ``Boxes3D`` also carries ``image_size`` (H, W), the input's, for ``colorize``."""
        from scenemtl.detection.nms import bev_rectangles, rotated_nms

        output = output.float()
        results = []
        for index, camera in enumerate(self.cameras(output, cameras)):
            boxes = decode_maps(output, index, camera, self.legacy_quaternion_order, self.nms_pre, self.score_threshold, self.dir_offset)
            if len(boxes):
                assert boxes.scores is not None
                boxes = boxes.select(rotated_nms(bev_rectangles(boxes), boxes.scores, boxes.labels, self.nms_threshold))
                assert boxes.scores is not None
                boxes = boxes.select(boxes.scores.argsort(descending=True, stable=True)[: self.max_per_image])
            setattr(boxes, "image_size", tuple(output.image_size))
            results.append(boxes)
        return results

    def prediction_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Decoding needs each image's camera: from the batch's targets, its ``camera`` (video samples), or the
        task's ``camera`` option scaled from ``camera_size`` to each image's size (``meta['size']``, else the
        image's); a clear error without any."""
        if self.name in batch:
            return {"cameras": batch[self.name]}
        if "camera" in batch:
            return {"cameras": batch["camera"]}
        if self.default_camera is None:
            raise ConfigError(
                f"{self.name}: decoding 3D boxes needs the images' camera: set tasks.{self.name}.camera=[fx, fy, u0, v0] "
                f"(and tasks.{self.name}.camera_size=[height, width], the images it describes)"
            )
        image = batch["image"]
        sizes = [tuple(m.get("size", image.shape[-2:])) for m in batch.get("meta", [{}] * image.shape[0])]
        fx, fy, u0, v0 = self.default_camera
        matrix = geometry.intrinsics(fx, fy, u0, v0)
        cameras = [geometry.resize_intrinsics(matrix, self.camera_size or size, size) for size in sizes]
        return {"cameras": torch.as_tensor(np.stack(cameras), dtype=torch.float32)}

    # -- evaluation ----------------------------------------------------------------------------
    def metric(self) -> StreamingMetric:
        """Cityscapes-3D's detection score (``detection.evaluation.Det3DMetric``) under ``matching``."""
        from scenemtl.detection.evaluation import Det3DMetric

        return Det3DMetric(matching=self.matching, labels=tuple(self.class_names))

    def check_target(self, target: Any, sample: bool = False) -> str | None:
        """Labels among the classes, finite values, positive sizes, centres in front of the camera, rotations, 2D boxes."""
        items = [target] if isinstance(target, Boxes3D) else list(target) if isinstance(target, (list, tuple)) else None
        if items is None or not all(isinstance(item, Boxes3D) for item in items):
            return f"{self.name} targets must be detection.Boxes3D (one per image), got {type(target).__name__}"
        for boxes in items:
            problem = self._check_boxes(boxes)
            if problem:
                return problem
        if sample and not any(len(boxes) for boxes in items):
            return f"{self.name} has no box"
        return None

    def _check_boxes(self, boxes: Boxes3D) -> str | None:
        n = len(boxes)
        shapes = {"centers": (n, 3), "sizes": (n, 3), "rotations": (n, 3, 3), "boxes2d": (n, 4), "camera": (3, 3)}
        for key, shape in shapes.items():
            if tuple(getattr(boxes, key).shape) != shape:
                return f"{self.name} {key} has shape {tuple(getattr(boxes, key).shape)}, expected {shape} for {n} boxes"
        for key in ("centers", "sizes", "rotations", "boxes2d", "camera"):
            if not bool(torch.isfinite(getattr(boxes, key)).all()):
                return f"{self.name} {key} has non-finite values"
        if n == 0:
            return None
        labels = boxes.labels
        if labels.is_floating_point() or int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            names = ", ".join(self.class_names)
            return f"{self.name} labels must be integer class ids in [0, {self.num_classes}) ({names}), got {labels.tolist()}"
        if bool((boxes.sizes <= 0).any()):
            return f"{self.name} has non-positive box sizes (min {float(boxes.sizes.min()):.3g} m)"
        if bool((boxes.centers[:, 2] <= 0).any()):
            return f"{self.name} has box centres behind the camera (z ≤ 0 in S)"
        rotations = boxes.rotations.double()
        error = (rotations.transpose(1, 2) @ rotations - torch.eye(3, dtype=torch.float64)).abs().amax()
        if float(error) > 1e-3 or bool((torch.linalg.det(rotations) <= 0).any()):
            return f"{self.name} rotations are not rotation matrices (|RᵀR − I| up to {float(error):.3g})"
        if bool((boxes.boxes2d[:, 2] < boxes.boxes2d[:, 0]).any() | (boxes.boxes2d[:, 3] < boxes.boxes2d[:, 1]).any()):
            return f"{self.name} 2D boxes must have x2 ≥ x1 and y2 ≥ y1"
        return None

    # -- pictures ------------------------------------------------------------------------------
    def image_size(self, boxes: Boxes3D, size: Sequence[int] | None = None) -> tuple[int, int]:
        """(H, W) of the picture: ``size``, else the ``image_size`` ``predict`` attaches, else twice the
        principal point (``2·(u0 + ½)``, ``2·(v0 + ½)``: exact for a centred principal point only)."""
        explicit = size if size is not None else getattr(boxes, "image_size", None)
        if explicit is not None:
            return int(explicit[0]), int(explicit[1])
        camera = boxes.camera.double().cpu()
        return max(1, round(2 * (float(camera[1, 2]) + 0.5))), max(1, round(2 * (float(camera[0, 2]) + 0.5)))

    def colorize(self, prediction: Boxes3D, size: Sequence[int] | None = None) -> np.ndarray:  # type: ignore[override]
        """The edges of the boxes projected with their camera, one colour per class, on black
        (``image_size`` for the size)."""
        height, width = self.image_size(prediction, size)
        picture = np.zeros((height, width, 3), dtype=np.uint8)
        if len(prediction) == 0:
            return picture
        corners = prediction.corners().double().cpu().numpy()  # [N,8,3] in S
        camera = prediction.camera.double().cpu().numpy()
        labels = prediction.labels.cpu().numpy()
        for box, label in zip(corners, labels):
            color = self.palette[int(label) % len(self.palette)]
            for a, b in BOX_EDGES:
                _draw_segment(picture, box[a], box[b], camera, color)
        return picture

    def key(self, prediction: Boxes3D) -> Key:  # type: ignore[override]
        """The classes drawn."""
        present = sorted({int(label) for label in prediction.labels.tolist() if 0 <= int(label) < self.num_classes})
        return Key(swatches=[(self.class_names[i], tuple(int(c) for c in self.palette[i])) for i in present])


def _draw_segment(picture: np.ndarray, start: np.ndarray, end: np.ndarray, camera: np.ndarray, color: np.ndarray) -> None:
    """Draw the S-frame segment ``start``–``end`` (clipped to z ≥ ``NEAR_PLANE``) projected with ``camera``."""
    za, zb = start[2], end[2]
    if za < NEAR_PLANE and zb < NEAR_PLANE:
        return
    if za < NEAR_PLANE or zb < NEAR_PLANE:
        t = (NEAR_PLANE - za) / (zb - za)
        cut = start + t * (end - start)
        start, end = (cut, end) if za < NEAR_PLANE else (start, cut)
    projected = np.stack([start, end]) @ camera.T
    uv = projected[:, :2] / projected[:, 2:]
    height, width = picture.shape[:2]
    # clip to a generous window so a far-off endpoint does not ask for millions of samples
    span = float(np.abs(uv[1] - uv[0]).max())
    steps = int(min(max(span, 1.0), 4.0 * (height + width))) + 1
    t = np.linspace(0.0, 1.0, steps)[:, None]
    samples = np.rint(uv[0] + t * (uv[1] - uv[0])).astype(np.int64)
    inside = (samples[:, 0] >= 0) & (samples[:, 0] < width) & (samples[:, 1] >= 0) & (samples[:, 1] < height)
    samples = samples[inside]
    picture[samples[:, 1], samples[:, 0]] = color
