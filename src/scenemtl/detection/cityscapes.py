"""Cityscapes-3D boxes: a ``gtBbox3d`` JSON to :class:`~scenemtl.detection.boxes.Boxes3D` and back.

Every change of frame goes through cityscapesScripts (``cityscapesscripts``, MIT; the ``cityscapes3d``
extra): ``helpers/box3dImageTransform.py`` (``Camera``, ``Box3dImageTransform``, ``CRS_V``, ``CRS_S``)
and ``helpers/annotation.py`` (``CsBbox3d``, ``CsIgnore2d``), as TaskPrompter's loader does
(``prismformore/Multi-Task-Transformer:TaskPrompter/data/cityscapes3d.py:load_det``: box initialised in
V, ``get_parameters(coordinate_system=CRS_S)``) and its writer (``detection_toolbox/det_tools.py:bbox2json``:
``initialize_box(..., coordinate_system=CRS_S)``, parameters read back in V).

The JSON (``mcordts/cityscapesScripts:docs/Box3DImageTransform.ipynb``, ``evaluation/evalObjectDetection3d.py``):
``imgWidth``/``imgHeight`` (2048×1024), ``sensor`` {``sensor_T_ISO_8855`` 3×4 V→C, ``fx``, ``fy``, ``u0``,
``v0``, ``baseline``}, ``objects`` [{``2d`` {``modal``, ``amodal``} [x, y, w, h] px, ``3d`` {``center`` m in V,
``dimensions`` [L, W, H] m, ``rotation`` quaternion [w, x, y, z] in V}, ``label``, ``score``, …}], ``ignore``
[{``2d`` [x, y, w, h]}].

Conventions, fixed here and checked by the tests:

* **Rotation.** ``get_parameters(CRS_S)`` returns the box's quaternion conjugated by the axis change C→S
  (``K_multiplier`` ``M`` = [[0,−1,0],[0,0,−1],[1,0,0]]): its matrix ``R_S`` rotates box axes that are
  themselves S-style. ``Boxes3D`` keeps V-style box axes (length along the box's x, width along y,
  height along z), so ``rotations = R_S · M``; with it ``Boxes3D.corners()`` are exactly the 8 vertices of
  ``get_vertices(CRS_S)`` (as a set; the order differs). The writer inverts it: ``R_S = rotations · Mᵀ``
  (after projecting onto the nearest rotation, since pyquaternion rejects float32-orthogonal matrices).
  Quaternions are pyquaternion's (w, x, y, z); the written one has w ≥ 0 (q and −q are the same
  rotation). TaskPrompter's Euler-angle target (a scipy/pyquaternion order mix-up) is not made here.
* **Pixels.** cityscapesScripts projects with ``K = [[fx,0,u0],[0,fy,v0],[0,0,1]]`` as given
  (``get_projection_matrix``), clips projected (amodal) boxes to ``[0, imgWidth − 1]`` and computes box
  areas as ``(x2 − x1 + 1)(y2 − y1 + 1)`` (``evaluation/objectDetectionHelpers.py:calcIouMatrix``), and
  ``docs/csCalibration.pdf`` §1 puts the image origin "in the top-left image pixel": the JSON's
  coordinates are pixel indices, pixel centres at integers, which is ``scenemtl.geometry``'s
  convention. So ``Boxes3D.camera`` is the sensor's fx, fy, u0, v0 unchanged (no half-pixel shift);
  a JSON box [x, y, w, h] covers the pixels x … x + w inclusive, which in ``Boxes3D``'s edge coordinates
  (pixel edges at integers) is ``(x, y, x + w + 1, y + h + 1)``. The writer maps back with
  ``w = x2 − x1 − 1``, so the evaluator's "+1" IoU of the written boxes equals the IoU of the edge boxes.
  (TaskPrompter reads ``bbox_modal`` = (x, y, x + w, y + h) directly, one pixel narrower; a 0.05 % size
  difference at Cityscapes' scale.) A projected centre ``Boxes3D.projected_centers()`` (centre
  convention) lies at ``+ 0.5`` in the edge coordinates of ``boxes2d``.
* **Sizes.** The sensor describes the release's 2048×1024 images (``imgWidth``, ``imgHeight``, copied
  into the sensor dict ``boxes_from_json`` returns); a
  sample of another size gets its boxes through ``Boxes3D.resize`` (modal boxes scaled, camera
  resampled with pixel centres kept); the writer scales them back before converting.

Classes: ``DETECTION_CLASSES`` (car, truck, bus, train, motorcycle, bicycle), TaskPrompter's
``evalLabels``; objects of other labels (e.g. caravan, trailer) are not boxes here, as in TaskPrompter
and the evaluator (which only counts ``labels_to_evaluate``); ignore regions are kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenemtl import geometry
from scenemtl.detection.boxes import DETECTION_CLASSES, Boxes3D
from scenemtl.errors import ConfigError, DataError

#: the size (H, W) of the images the ``sensor`` of a gtBbox3d JSON describes
FULL_SIZE = (1024, 2048)
#: cityscapesScripts' ``get_K_multiplier()``: the axis change C (x forward, y left, z up) → S (x right, y down, z forward)
K_MULTIPLIER = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
INSTALL = "Cityscapes-3D needs cityscapesScripts: pip install 'scenemtl[cityscapes3d]'"


def _css():
    """cityscapesScripts' box and annotation helpers (an optional dependency)."""
    try:
        from cityscapesscripts.helpers import annotation, box3dImageTransform
    except ImportError:
        raise ConfigError(INSTALL) from None
    return annotation, box3dImageTransform


def _quaternion_of(matrix: np.ndarray):
    """pyquaternion's ``Quaternion`` (a dependency of cityscapesscripts) of a rotation matrix."""
    from pyquaternion import Quaternion

    return Quaternion(matrix=matrix)


def _numbers(value: Any, shape: tuple[int, ...], key: str) -> np.ndarray:
    """``value`` as a float64 array of ``shape``, or a DataError naming ``key``."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape or not np.isfinite(array).all():
        want = "×".join(map(str, shape)) if len(shape) > 1 else f"{shape[0]}"
        raise DataError(f"malformed gtBbox3d annotation: '{key}' must be {want} finite numbers, got {value!r}")
    return array


def _number(value: Any, key: str) -> float:
    """``value`` as a finite float, or a DataError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"malformed gtBbox3d annotation: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _get(mapping: Any, key: str, where: str) -> Any:
    """``mapping[key]``, or a DataError naming the key's path ``where``."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise DataError(f"malformed gtBbox3d annotation: no key '{where}'")
    return mapping[key]


def parse_sensor(annotation: dict) -> dict:
    """The JSON's ``sensor`` as plain values (floats, a 3×4 list of lists), checked, plus the JSON's
    ``imgWidth`` and ``imgHeight`` (the image size its fx, fy, u0, v0 describe; 2048, 1024 if absent)."""
    sensor = _get(annotation, "sensor", "sensor")
    out: dict = {}
    for key in ("fx", "fy", "u0", "v0"):
        out[key] = _number(_get(sensor, key, f"sensor.{key}"), f"sensor.{key}")
    if not (out["fx"] > 0 and out["fy"] > 0):
        raise DataError(f"malformed gtBbox3d annotation: 'sensor.fx' and 'sensor.fy' must be positive, got {out['fx']}, {out['fy']}")
    matrix = _numbers(_get(sensor, "sensor_T_ISO_8855", "sensor.sensor_T_ISO_8855"), (3, 4), "sensor.sensor_T_ISO_8855")
    out["sensor_T_ISO_8855"] = matrix.tolist()
    if "baseline" in sensor:
        out["baseline"] = _number(sensor["baseline"], "sensor.baseline")
    out["imgHeight"], out["imgWidth"] = _image_size(annotation)
    return out


def read_sensor(path: str | Path) -> dict:
    """The sensor of a JSON file (``parse_sensor``'s dict): a Cityscapes-3D ``gtBbox3d`` annotation (its
    ``sensor``, ``imgWidth``, ``imgHeight``), or a file holding just the ``sensor`` object; read as data."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read the sensor file {path}: {error}") from None
    if isinstance(data, dict) and "sensor" not in data and "sensor_T_ISO_8855" in data:
        data = {"sensor": data}  # a bare sensor object
    try:
        return parse_sensor(data)
    except DataError as error:
        raise ConfigError(
            f"{path}: {error}; give a Cityscapes-3D gtBbox3d JSON (it holds 'sensor' with sensor_T_ISO_8855, fx, fy, u0, v0) "
            "or that 'sensor' object alone"
        ) from None


def sensor_camera(sensor: dict, size: tuple[int, int]) -> np.ndarray:
    """The 3×3 camera matrix of the sensor's images resampled to ``size`` (H, W) pixels."""
    full = (int(sensor.get("imgHeight", FULL_SIZE[0])), int(sensor.get("imgWidth", FULL_SIZE[1])))
    return geometry.resize_intrinsics(sensor_matrix(sensor), full, (int(size[0]), int(size[1])))


def camera_of(sensor: dict, full_size: tuple[int, int] = FULL_SIZE):
    """cityscapesScripts' ``Camera`` of a sensor dict (as ``parse_sensor`` returns) for ``full_size`` (H, W) images."""
    box3d = _css()[1]
    return box3d.Camera(
        fx=sensor["fx"],
        fy=sensor["fy"],
        u0=sensor["u0"],
        v0=sensor["v0"],
        sensor_T_ISO_8855=sensor["sensor_T_ISO_8855"],
        imgWidth=full_size[1],
        imgHeight=full_size[0],
    )


def sensor_matrix(sensor: dict) -> np.ndarray:
    """The 3×3 camera matrix of the release's images in ``scenemtl.geometry``'s convention (= the JSON's values)."""
    return geometry.intrinsics(sensor["fx"], sensor["fy"], sensor["u0"], sensor["v0"])


def _json_box_to_edges(xywh: np.ndarray) -> np.ndarray:
    """A JSON [x, y, w, h] (pixels x … x + w inclusive) as edge coordinates x1, y1, x2, y2."""
    x, y, w, h = xywh
    return np.array([x, y, x + w + 1.0, y + h + 1.0])


def _image_size(annotation: dict) -> tuple[int, int]:
    sizes = []
    for key in ("imgHeight", "imgWidth"):
        value = annotation.get(key, None) if isinstance(annotation, dict) else None
        if value is None:
            sizes.append(FULL_SIZE[0] if key == "imgHeight" else FULL_SIZE[1])
            continue
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and float(value).is_integer()):
            raise DataError(f"malformed gtBbox3d annotation: '{key}' must be a positive integer, got {value!r}")
        sizes.append(int(value))
    return sizes[0], sizes[1]


def boxes_from_json(
    annotation: dict, classes: Sequence[str] = DETECTION_CLASSES, size: tuple[int, int] | None = None
) -> tuple[Boxes3D, dict]:
    """The boxes of a parsed gtBbox3d JSON (objects whose ``label`` is in ``classes``) and its sensor dict.

    ``size``: the (H, W) of the sample's image when it differs from the JSON's ``imgHeight`` ×
    ``imgWidth`` (the 2D boxes and the camera are then resampled, the 3D boxes stay). A missing or
    malformed key is a :class:`DataError` naming it.
    """
    annotation_mod, box3d = _css()
    if not isinstance(annotation, dict):
        raise DataError(f"malformed gtBbox3d annotation: a JSON object is expected, got {type(annotation).__name__}")
    full = _image_size(annotation)
    sensor = parse_sensor(annotation)
    transform = box3d.Box3dImageTransform(camera_of(sensor, full))
    objects = _get(annotation, "objects", "objects")
    if not isinstance(objects, list):
        raise DataError(f"malformed gtBbox3d annotation: 'objects' must be a list, got {type(objects).__name__}")
    labels, centers, sizes, rotations, boxes2d = [], [], [], [], []
    for i, obj in enumerate(objects):
        label = _get(obj, "label", f"objects[{i}].label")
        if label not in classes:
            continue
        where = f"objects[{i}]"
        box2d = _get(obj, "2d", f"{where}.2d")
        modal = _json_box_to_edges(_numbers(_get(box2d, "modal", f"{where}.2d.modal"), (4,), f"{where}.2d.modal"))
        box = _get(obj, "3d", f"{where}.3d")
        center = _numbers(_get(box, "center", f"{where}.3d.center"), (3,), f"{where}.3d.center")
        dims = _numbers(_get(box, "dimensions", f"{where}.3d.dimensions"), (3,), f"{where}.3d.dimensions")
        rotation = _numbers(_get(box, "rotation", f"{where}.3d.rotation"), (4,), f"{where}.3d.rotation")
        if not (dims > 0).all():
            raise DataError(f"malformed gtBbox3d annotation: '{where}.3d.dimensions' must be positive, got {dims.tolist()}")
        if not np.linalg.norm(rotation) > 1e-6:
            raise DataError(f"malformed gtBbox3d annotation: '{where}.3d.rotation' is not a rotation quaternion: {rotation.tolist()}")
        if "amodal" not in box2d:  # CsBbox2d takes 'modal' + 'amodal' together
            box2d = {**box2d, "amodal": box2d["modal"]}
        parsed = annotation_mod.CsBbox3d()
        parsed.fromJsonText(
            {
                **obj,
                "2d": box2d,
                "3d": {"center": center.tolist(), "dimensions": dims.tolist(), "rotation": (rotation / np.linalg.norm(rotation)).tolist()},
                "score": obj.get("score", 1.0),
            }
        )
        transform.initialize_box_from_annotation(parsed, coordinate_system=box3d.CRS_V)
        size_s, center_s, rotation_s = transform.get_parameters(coordinate_system=box3d.CRS_S)
        labels.append(list(classes).index(label))
        centers.append(np.asarray(center_s, dtype=np.float64))
        sizes.append(np.asarray(size_s, dtype=np.float64))
        rotations.append(rotation_s.rotation_matrix @ K_MULTIPLIER)
        boxes2d.append(modal)
    ignores = annotation.get("ignore", [])
    if not isinstance(ignores, list):
        raise DataError(f"malformed gtBbox3d annotation: 'ignore' must be a list, got {type(ignores).__name__}")
    regions = []
    for i, region in enumerate(ignores):
        _numbers(_get(region, "2d", f"ignore[{i}].2d"), (4,), f"ignore[{i}].2d")
        ignore = annotation_mod.CsIgnore2d()
        ignore.fromJsonText(region)
        regions.append(_json_box_to_edges(np.asarray(ignore.bbox_xywh, dtype=np.float64)))

    def tensor(rows: list, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(np.array(rows, dtype=np.float32).reshape(len(rows), *shape))

    boxes = Boxes3D(
        labels=torch.tensor(labels, dtype=torch.int64),
        centers=tensor(centers, (3,)),
        sizes=tensor(sizes, (3,)),
        rotations=tensor(rotations, (3, 3)),
        boxes2d=tensor(boxes2d, (4,)),
        camera=torch.from_numpy(sensor_matrix(sensor).astype(np.float32)),
        ignore=tensor(regions, (4,)),
    )
    if size is not None and tuple(size) != full:
        boxes = boxes.resize(full, (int(size[0]), int(size[1])))
    return boxes, sensor


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation matrix closest to ``matrix`` (float64; SVD, determinant +1)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64))
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    return u @ fix @ vt


def boxes_to_json(
    boxes: Boxes3D,
    sensor: dict,
    image_size: tuple[int, int],
    classes: Sequence[str] = DETECTION_CLASSES,
    full_size: tuple[int, int] | None = None,
) -> dict:
    """The Cityscapes-3D prediction JSON (``{"objects": [...]}``) of ``boxes`` seen in an ``image_size`` (H, W) image.

    ``sensor``: the image's gtBbox3d sensor (``boxes_from_json``'s second value, or ``meta["sensor"]``),
    which describes ``full_size`` (H, W) images (default: the sensor's ``imgHeight`` × ``imgWidth`` when it
    holds them, else the release's 1024×2048); boxes of a resized sample are scaled back first. Each object:
    ``2d.modal`` from ``boxes2d`` (clipped to the image, [x, y, w, h] in the JSON's inclusive-pixel
    convention), ``2d.amodal`` the projection of the 3D box clipped to the image, as
    ``Box3dImageTransform.get_amodal_box_2d`` gives it (the evaluator recomputes it from the 3D box
    this way anyway, ``evalObjectDetection3d.py:_worker``), ``3d`` centre, dimensions [L, W, H] and
    quaternion [w, x, y, z] in V, ``label`` and ``score`` (1 when ``boxes.scores`` is None).
    """
    box3d = _css()[1]
    sensor = {**sensor, "sensor_T_ISO_8855": _numbers(sensor["sensor_T_ISO_8855"], (3, 4), "sensor.sensor_T_ISO_8855").tolist()}
    if full_size is None:
        full_size = (int(sensor.get("imgHeight", FULL_SIZE[0])), int(sensor.get("imgWidth", FULL_SIZE[1])))
    if tuple(image_size) != tuple(full_size):
        boxes = boxes.resize((int(image_size[0]), int(image_size[1])), tuple(full_size))
    transform = box3d.Box3dImageTransform(camera_of(sensor, full_size))
    height, width = full_size
    centers = boxes.centers.detach().double().cpu().numpy()
    sizes = boxes.sizes.detach().double().cpu().numpy()
    rotations = boxes.rotations.detach().double().cpu().numpy()
    modal = boxes.boxes2d.detach().double().cpu().numpy()
    labels = boxes.labels.detach().cpu().tolist()
    scores = [1.0] * len(labels) if boxes.scores is None else boxes.scores.detach().double().cpu().tolist()
    objects = []
    for i in range(len(labels)):
        rotation_s = _quaternion_of(nearest_rotation(rotations[i] @ K_MULTIPLIER.T))
        transform.initialize_box(sizes[i].tolist(), rotation_s, centers[i].tolist(), coordinate_system=box3d.CRS_S)
        size_v, center_v, rotation_v = transform.get_parameters(coordinate_system=box3d.CRS_V)
        q = np.asarray(rotation_v.elements, dtype=np.float64)
        q = -q if q[0] < 0 else q
        x1, y1, x2, y2 = modal[i]
        x1, x2 = (min(max(v, 0.0), float(width)) for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), float(height)) for v in (y1, y2))
        x1, y1 = min(x1, width - 1.0), min(y1, height - 1.0)
        ax1, ay1, ax2, ay2 = (float(v) for v in transform.get_amodal_box_2d())
        objects.append(
            {
                "2d": {
                    "modal": [float(x1), float(y1), float(max(x2 - x1 - 1.0, 0.0)), float(max(y2 - y1 - 1.0, 0.0))],
                    "amodal": [ax1, ay1, ax2 - ax1, ay2 - ay1],
                },
                "3d": {
                    "center": [float(v) for v in center_v],
                    "dimensions": [float(v) for v in size_v],
                    "rotation": [float(v) for v in q],
                    "format": "CRS_ISO8855",
                },
                "label": classes[int(labels[i])],
                "score": float(scores[i]) if math.isfinite(scores[i]) else 0.0,
            }
        )
    return {"objects": objects}
