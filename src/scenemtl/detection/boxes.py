"""3D boxes of one image: the target (and the prediction) of the task ``det3d``.

Frames (cityscapesScripts' ``helpers/box3dImageTransform.py``): V, the vehicle frame (ISO 8855: x
forward, y left, z up); C, the camera at V's orientation; **S**, the camera frame of the image (x
right, y down, z forward), in which the boxes are kept here; I, pixels. A box's own axes are V-style:
its length along its x, width along y, height along z; ``rotations`` maps them into S.

Pixels: ``camera`` follows ``scenemtl.geometry`` (pixel (row v, column u) at the integer coordinate
(u, v)), as the Cityscapes camera (its u0, v0 are pixel indices); ``boxes2d`` are continuous image
coordinates with pixel edges at integers (x1, y1, x2, y2: a box covering pixel columns a..b has
x1 = a, x2 = b + 1; the JSON's inclusive [x, y, w, h] is converted by ``detection.cityscapes``), so a
pixel centre u sits at u + 0.5 in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from scenemtl import geometry

#: Cityscapes-3D's detection classes, in TaskPrompter's order (the index is the class label)
DETECTION_CLASSES = ("car", "truck", "bus", "train", "motorcycle", "bicycle")

#: the mirror of the S frame's x axis
_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
#: a box's width axis turned round (in its own axes: length x, width y, height z)
_LATERAL = torch.diag(torch.tensor([1.0, -1.0, 1.0]))


@dataclass
class Boxes3D:
    """The boxes of one image (see the module docstring): ``N`` boxes, ``M`` ignore regions.

    * ``labels`` int64 ``[N]``: index into ``DETECTION_CLASSES``;
    * ``centers`` float32 ``[N,3]``: box centres in S (metres);
    * ``sizes`` float32 ``[N,3]``: length, width, height (metres);
    * ``rotations`` float32 ``[N,3,3]``: box axes → S;
    * ``boxes2d`` float32 ``[N,4]``: the visible ("modal") 2D box x1, y1, x2, y2 in the sample's pixels;
    * ``camera`` float32 ``[3,3]``: the camera matrix of the sample's image;
    * ``scores`` float32 ``[N]`` or None: detection confidences (predictions only);
    * ``ignore`` float32 ``[M,4]``: ignore regions x1, y1, x2, y2 (the JSON's ``ignore``);
    * ``labelled``: False for the marker of an image whose boxes are not annotated (partial labels,
      ``Det3DTask.unlabelled``: no boxes, and none of the image is background either); an annotated
      image without objects is an empty ``Boxes3D`` with ``labelled`` True.
    """

    labels: torch.Tensor
    centers: torch.Tensor
    sizes: torch.Tensor
    rotations: torch.Tensor
    boxes2d: torch.Tensor
    camera: torch.Tensor
    scores: torch.Tensor | None = None
    ignore: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    labelled: bool = True

    @staticmethod
    def empty(camera: torch.Tensor | np.ndarray, labelled: bool = True) -> Boxes3D:
        """No boxes, seen by ``camera`` (``labelled`` False: the marker of an unannotated image)."""
        return Boxes3D(
            labels=torch.zeros(0, dtype=torch.int64),
            centers=torch.zeros(0, 3),
            sizes=torch.zeros(0, 3),
            rotations=torch.zeros(0, 3, 3),
            boxes2d=torch.zeros(0, 4),
            camera=torch.as_tensor(camera, dtype=torch.float32),
            labelled=labelled,
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Boxes3D:
        """The same boxes on ``device``."""
        moved = {name: getattr(self, name) for name in ("labels", "centers", "sizes", "rotations", "boxes2d", "camera", "ignore")}
        out = {name: value.to(device) for name, value in moved.items()}
        return Boxes3D(**out, scores=None if self.scores is None else self.scores.to(device), labelled=self.labelled)

    def select(self, keep: torch.Tensor) -> Boxes3D:
        """The boxes ``keep`` picks (a bool mask or indices); camera and ignore regions unchanged."""
        return replace(
            self,
            labels=self.labels[keep],
            centers=self.centers[keep],
            sizes=self.sizes[keep],
            rotations=self.rotations[keep],
            boxes2d=self.boxes2d[keep],
            scores=None if self.scores is None else self.scores[keep],
        )

    def corners(self) -> torch.Tensor:
        """``[N,8,3]`` box corners in S: (±L/2, ±W/2, ±H/2) in the box's axes, x-major order."""
        signs = torch.tensor([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=self.sizes.dtype)
        local = signs.to(self.sizes.device)[None] * self.sizes[:, None] / 2  # [N,8,3]
        return local @ self.rotations.transpose(1, 2) + self.centers[:, None]

    def projected_centers(self) -> torch.Tensor:
        """``[N,2]`` pixel coordinates (u, v) of the centres (``scenemtl.geometry``'s convention)."""
        uvw = self.centers @ self.camera.T
        return uvw[:, :2] / uvw[:, 2:].clamp_min(1e-6)

    def flip(self, width: int) -> Boxes3D:
        """The boxes of the image mirrored left–right (``width`` pixels): the scene mirrored in S's x.

        A box's axes are mirrored and its width axis (y) turned round, so the result is a rotation and a
        car keeps its heading mirrored (driving away stays driving away; its yaw angle is negated)."""
        mirror = _MIRROR.to(self.centers)
        lateral = _LATERAL.to(self.centers)
        x1, y1, x2, y2 = self.boxes2d.unbind(-1)
        i1, j1, i2, j2 = self.ignore.unbind(-1)
        return replace(
            self,
            centers=self.centers * mirror.diagonal(),
            rotations=mirror @ self.rotations @ lateral,
            boxes2d=torch.stack([width - x2, y1, width - x1, y2], -1),
            ignore=torch.stack([width - i2, j1, width - i1, j2], -1),
            camera=torch.as_tensor(geometry.flip_intrinsics(self.camera.double().cpu().numpy(), width), dtype=torch.float32).to(
                self.camera.device
            ),
        )

    def resize(self, old: tuple[int, int], new: tuple[int, int]) -> Boxes3D:
        """The boxes of the image resampled from ``old`` (H, W) to ``new`` pixels (the 3D boxes do not change)."""
        sy, sx = new[0] / old[0], new[1] / old[1]
        scale = torch.tensor([sx, sy, sx, sy], dtype=self.boxes2d.dtype, device=self.boxes2d.device)
        camera = geometry.resize_intrinsics(self.camera.double().cpu().numpy(), old, new)
        return replace(
            self,
            boxes2d=self.boxes2d * scale,
            ignore=self.ignore * scale,
            camera=torch.as_tensor(camera, dtype=torch.float32).to(self.camera.device),
        )

    def shift(self, top: float, left: float) -> Boxes3D:
        """The boxes after cropping the image at (``top``, ``left``) (negative: padding)."""
        offset = torch.tensor([left, top, left, top], dtype=self.boxes2d.dtype, device=self.boxes2d.device)
        camera = geometry.crop_intrinsics(self.camera.double().cpu().numpy(), top, left)
        return replace(
            self,
            boxes2d=self.boxes2d - offset,
            ignore=self.ignore - offset,
            camera=torch.as_tensor(camera, dtype=torch.float32).to(self.camera.device),
        )

    def records(self, class_names: Sequence[str]) -> list[dict]:
        """The boxes as plain values (one dict each: class, score, centre, size, rotation, 2D box), for JSON files."""
        rows = []
        for i in range(len(self)):
            rows.append(
                {
                    "label": class_names[int(self.labels[i])],
                    "score": None if self.scores is None else float(self.scores[i]),
                    "center": [float(v) for v in self.centers[i]],
                    "size": [float(v) for v in self.sizes[i]],
                    "rotation": [[float(v) for v in row] for row in self.rotations[i]],
                    "box2d": [float(v) for v in self.boxes2d[i]],
                }
            )
        return rows
