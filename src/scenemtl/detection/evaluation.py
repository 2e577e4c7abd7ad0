"""Cityscapes-3D detection score (mDS, mAP and the per-class TP metrics) by the official evaluator.

The numbers come from cityscapesScripts' own ``Box3dEvaluator``
(mcordts/cityscapesScripts:cityscapesscripts/evaluation/evalObjectDetection3d.py, pip
``cityscapesscripts``, the ``cityscapes3d`` extra), driven as TaskPrompter's
``detection_toolbox/det_eval.py`` drives its copy of it (REFERENCE-settings §4.4): the six classes,
``min_iou_to_match=0.7``, ``max_depth=100``, ``step_size=5``, ``cw=-1`` (per class, the working point
is the score threshold maximising P·R) and modal 2D-box matching. ``matching='amodal'`` gives the
official command line's default instead (``csEvalObjectDetection3d`` without ``--modal``).

Per image the metric keeps two JSON dicts in the Cityscapes-3D format, in the vehicle frame V: the
prediction (``scenemtl.detection.cityscapes.boxes_to_json`` of the predicted ``Boxes3D``) and the
ground truth (``meta['det3d_gt']``, the parsed official ``gtBbox3d`` file, when the dataset provides
it; otherwise the target converted the same way, every object with score 1). ``sync`` gathers them
from all processes; ``compute`` writes them to a temporary folder as ``<base>_gtBbox3d.json`` and
``<base>_pred.json`` (the evaluator pairs files by the part of the name before the last ``_``) and
runs ``loadGT``, ``loadPredictions`` and ``evaluate``, reading ``results`` (upstream's
``evaluate3dObjectDetection`` returns None and writes ``results.json``).

Differences from running the official script, none of which changes a number:

* files are named by position in the sorted image ids (``image000000``, ...), not by the Cityscapes
  base name, so any id (with ``/`` or ``_`` in it) pairs correctly; an image seen twice (the padding
  of a distributed sampler) counts once;
* the evaluator's logging (its import configures the root logger and opens ``eval.log`` in the
  working directory), its progress bar and its warnings are silenced; its root-logger changes are
  undone;
* the values are reported in percent (the papers' unit: TaskPrompter's mDS 32.36), the evaluator's
  fractions × 100, and per class only for classes with ground truth (the classes mDS averages).

Edge cases as the evaluator gives them: an image without predictions scores as missed objects; no
prediction at all gives AP = 0 and DS = 0 for every class, so mDS = mAP = 0; a class whose true
positives fall in a single 5 m distance bin gets TP metrics ("AUC") of 0 and therefore DS = 0, even
with AP = 100; without any ground-truth object mDS and mAP are NaN (the mean of no class).
"""

from __future__ import annotations

import functools

import importlib
import json
import logging
import math
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import torch
import torch.distributed as dist

from scenemtl.detection.boxes import DETECTION_CLASSES, Boxes3D
from scenemtl.metrics.base import StreamingMetric

#: the 2D boxes the evaluator matches predictions to ground truth with
MATCHING = ("modal", "amodal")
#: the per-class numbers, in the order ``compute`` reports them
PER_CLASS = ("ds", "ap", "center_dist", "size_similarity", "os_yaw", "os_pitch_roll")
#: the evaluator's ``results`` key of each per-class number (``Detection_Score`` is a plain value)
_RESULT_KEYS = {
    "ap": "AP",
    "center_dist": "Center_Dist",
    "size_similarity": "Size_Similarity",
    "os_yaw": "OS_Yaw",
    "os_pitch_roll": "OS_Pitch_Roll",
}
_EVALUATOR = "cityscapesscripts.evaluation.evalObjectDetection3d"
#: the pixel size (H, W) of the Cityscapes camera the JSON boxes live in
CITYSCAPES_SIZE = (1024, 2048)

#: ``boxes_to_json(boxes, sensor, image_size)``: a ``Boxes3D`` in S → the Cityscapes-3D JSON dict in V
ToJson = Callable[[Boxes3D, dict[str, Any], tuple[int, int]], Mapping[str, Any]]


def load_evaluator() -> ModuleType:
    """cityscapesScripts' ``evalObjectDetection3d`` module, imported without its logging side effects.

    Its import runs ``logging.basicConfig(filename='eval.log', filemode='w')`` (a file in the working
    directory, unless the root logger already has a handler) and ``coloredlogs.install(level='INFO')``
    (a coloured stderr handler on the root logger). A placeholder handler makes the first a no-op;
    the root logger's handlers and level are restored afterwards.
    """
    if _EVALUATOR in sys.modules:
        return sys.modules[_EVALUATOR]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        return importlib.import_module(_EVALUATOR)
    except ImportError as error:
        raise ImportError(f"Cityscapes-3D scoring needs cityscapesScripts ({error}): pip install 'scenemtl[cityscapes3d]'") from error
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def _passthrough(iterable: Iterable[Any], *args: Any, **kwargs: Any) -> Iterable[Any]:
    return iterable


@contextmanager
def _quiet(module: ModuleType) -> Iterator[None]:
    """The evaluator without its log lines, progress bar (``tqdm``) and warnings (``logger.warn``,
    the mean of no class)."""
    logger = module.logger
    disabled = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings(), mock.patch.object(module, "tqdm", _passthrough):
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.disabled = disabled


def _default_to_json() -> ToJson:
    try:
        from scenemtl.detection.cityscapes import boxes_to_json
    except ImportError as error:
        raise ImportError(
            f"Det3DMetric.update converts boxes with scenemtl.detection.cityscapes.boxes_to_json, which is missing ({error}); "
            "pass to_json=... or feed JSON dicts with add_json"
        ) from error
    converter: ToJson = boxes_to_json
    return converter


def evaluate_jsons(
    images: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
    labels: Sequence[str] = DETECTION_CLASSES,
    matching: str = "modal",
    min_iou: float = 0.7,
    max_depth: int = 100,
    step_size: int = 5,
    working_confidence: float = -1.0,
) -> dict[str, Any]:
    """The evaluator's ``results`` dict for ``{image id: (prediction JSON, ground-truth JSON)}``.

    The JSONs are written to a temporary folder and read back by ``Box3dEvaluator.loadGT`` and
    ``loadPredictions``; see the module docstring for the parameters (``working_confidence`` is
    the evaluator's ``cw``: −1 picks the best P·R threshold per class).
    """
    if matching not in MATCHING:
        raise ValueError(f"matching must be one of {MATCHING}, got {matching!r}")
    module = load_evaluator()
    helpers = importlib.import_module("cityscapesscripts.evaluation.objectDetectionHelpers")
    method = helpers.MATCHING_MODAL if matching == "modal" else helpers.MATCHING_AMODAL
    parameters = helpers.EvaluationParameters(
        list(labels), min_iou_to_match=min_iou, max_depth=max_depth, step_size=step_size, matching_method=method, cw=working_confidence
    )
    evaluator = module.Box3dEvaluator(parameters)
    with tempfile.TemporaryDirectory(prefix="scenemtl-det3d-") as folder:
        gt_folder, pred_folder = Path(folder, "gt"), Path(folder, "pred")
        gt_folder.mkdir()
        pred_folder.mkdir()
        for index, name in enumerate(sorted(images)):
            prediction, ground_truth = images[name]
            base = f"image{index:06d}"
            (gt_folder / f"{base}_gtBbox3d.json").write_text(json.dumps(ground_truth))
            (pred_folder / f"{base}_pred.json").write_text(json.dumps(prediction))
        with _quiet(module):
            evaluator.checkCw()
            evaluator.loadGT(str(gt_folder))
            evaluator.loadPredictions(str(pred_folder))
            evaluator.evaluate()
    results: dict[str, Any] = evaluator.results
    return results


def _full_size(sensor: Mapping[str, Any]) -> tuple[int, int]:
    """The (H, W) of the images a sensor describes: its ``imgHeight`` × ``imgWidth`` when it holds them
    (``detection.cityscapes.parse_sensor`` adds them), else Cityscapes' 1024×2048."""
    return int(sensor.get("imgHeight", CITYSCAPES_SIZE[0])), int(sensor.get("imgWidth", CITYSCAPES_SIZE[1]))


def _plain(value: Any) -> Any:
    """A JSON-ready copy: tensors and numpy values become lists and Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    return value


class Det3DMetric(StreamingMetric):
    """Cityscapes-3D's Detection Score (mDS), mAP and per-class DS, AP and TP metrics, in percent.

    The official evaluator on the images' prediction and ground-truth JSONs (see the module
    docstring); ``matching``: 'modal' (TaskPrompter) or 'amodal' (the official default). ``to_json``
    converts ``Boxes3D`` (default: ``scenemtl.detection.cityscapes.boxes_to_json``, imported when
    first needed).
    """

    directions = {"mds": True, "map": True, **{f"{name}/{label}": True for label in DETECTION_CLASSES for name in PER_CLASS}}
    main = "mds"
    wants = ("ids", "meta")

    def __init__(
        self,
        matching: str = "modal",
        min_iou: float = 0.7,
        max_depth: int = 100,
        step_size: int = 5,
        working_confidence: float = -1.0,
        labels: Sequence[str] = DETECTION_CLASSES,
        to_json: ToJson | None = None,
    ) -> None:
        super().__init__()
        if matching not in MATCHING:
            raise ValueError(
                f"matching must be one of {MATCHING} ('modal': TaskPrompter, 'amodal': the official default), got {matching!r}"
            )
        if not 0 <= min_iou < 1:
            raise ValueError(f"min_iou must be in [0, 1), got {min_iou}")
        if max_depth <= 0 or step_size <= 0:
            raise ValueError(f"max_depth and step_size must be positive (metres), got {max_depth} and {step_size}")
        if working_confidence != -1.0 and not 0 <= working_confidence <= 1:
            raise ValueError(f"working_confidence must be -1 (automatic) or in [0, 1], got {working_confidence}")
        self.matching, self.min_iou, self.max_depth, self.step_size = matching, min_iou, max_depth, step_size
        self.working_confidence = working_confidence
        self.labels = tuple(labels)
        if self.labels != DETECTION_CLASSES:
            self.directions = {"mds": True, "map": True, **{f"{name}/{label}": True for label in self.labels for name in PER_CLASS}}
        self.to_json = to_json
        #: image id → (prediction JSON, ground-truth JSON, whether the ground truth is the official file)
        self.images: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {}

    # read-only: the variant follows from the options and from where the ground truth came from
    @property
    def variant(self) -> str:  # type: ignore[override]
        """The protocol: evaluator, matching, thresholds, working point and the ground truth's source."""
        official = sum(entry[2] for entry in self.images.values())
        if official == len(self.images):
            source = "official gtBbox3d JSON"
        elif official:
            source = f"official gtBbox3d JSON for {official} of {len(self.images)} images, the rest from targets"
        else:
            source = "GT from targets"
        who = "TaskPrompter" if self.matching == "modal" else "official default"
        point = "max P·R per class" if self.working_confidence == -1.0 else f"score {self.working_confidence:g}"
        return (
            f"cityscapesScripts Box3dEvaluator, {self.matching} 2D matching ({who}), IoU > {self.min_iou:g}, "
            f"TP metrics to {self.max_depth} m in {self.step_size} m bins, working point {point}, {source}"
        )

    def reset(self) -> None:
        """Forget every image."""
        super().reset()
        self.images = {}

    def add_json(self, image_id: str, prediction: Mapping[str, Any], ground_truth: Mapping[str, Any], official: bool = True) -> None:
        """Add one image as JSON dicts in the Cityscapes-3D format (V frame): the prediction
        (``objects`` with ``score``) and the ground truth (``objects``, ``sensor``, ``ignore``)."""
        if not image_id:
            raise ValueError("Det3DMetric needs each image's id (the evaluator pairs files by name), got an empty id")
        for key in ("objects", "sensor"):
            if key not in ground_truth:
                raise ValueError(f"image {image_id}: the ground-truth JSON has no {key!r} (keys: {sorted(ground_truth)})")
        if "objects" not in prediction:
            raise ValueError(f"image {image_id}: the prediction JSON has no 'objects' (keys: {sorted(prediction)})")
        truth = _plain(ground_truth)
        truth.setdefault("ignore", [])
        self.images[str(image_id)] = (_plain(prediction), truth, official)

    def _target_json(self, target: Boxes3D, sensor: dict[str, Any], size: tuple[int, int], to_json: ToJson) -> dict[str, Any]:
        """The ground-truth JSON of a target: its boxes as ``to_json`` writes them, score 1, the sensor,
        and its ignore regions in the sensor's pixels as ``detection.cityscapes`` reads them: edges
        (x1, y1, x2, y2) scaled to the full-size image, written [x1, y1, x2 − x1 − 1, y2 − y1 − 1]."""
        data: dict[str, Any] = _plain(to_json(target, sensor, size))
        data["objects"] = [{**item, "score": 1.0 if item.get("score") is None else item["score"]} for item in data.get("objects", [])]
        data.setdefault("sensor", _plain(sensor))
        if "ignore" not in data:
            height, width = _full_size(sensor)
            sx, sy = width / size[1], height / size[0]
            data["ignore"] = [
                {"2d": [x1 * sx, y1 * sy, max((x2 - x1) * sx - 1, 0.0), max((y2 - y1) * sy - 1, 0.0)]}
                for x1, y1, x2, y2 in target.ignore.double().cpu().tolist()
            ]
        return data

    def update(  # type: ignore[override]
        self,
        prediction: list[Boxes3D],
        target: list[Boxes3D],
        ids: list[str] | None = None,
        meta: list[dict[str, Any]] | None = None,
    ) -> None:
        """Add a batch: predicted and target ``Boxes3D`` per image, the images' ``ids`` and ``meta``.

        ``meta[i]`` gives ``det3d_gt`` (the parsed official gtBbox3d JSON, used as the ground truth
        when present), ``sensor`` (the JSON's camera; else ``det3d_gt['sensor']``) and ``size`` (the
        sample's (H, W), which the boxes' pixels refer to; else the sensor's ``imgHeight`` × ``imgWidth``,
        else 1024×2048).
        """
        if ids is None or len(ids) != len(prediction) or len(target) != len(prediction):
            raise ValueError(
                f"Det3DMetric.update needs one id per image: {len(prediction)} predictions, {len(target)} targets, "
                f"{'no ids' if ids is None else f'{len(ids)} ids'}"
            )
        metas: list[dict[str, Any]] = list(meta) if meta is not None else [{} for _ in ids]
        if len(metas) != len(ids):
            raise ValueError(f"Det3DMetric.update: {len(ids)} images but {len(metas)} meta dicts")
        to_json = self.to_json or functools.partial(_default_to_json(), classes=self.labels)
        for boxes, truth, image_id, info in zip(prediction, target, ids, metas):
            if info.get("pad"):  # evaluation padding moved the pixels: back to the sample's own
                top, left = info["pad"][:2]
                boxes, truth = boxes.shift(top, left), truth.shift(top, left)
            gt_json = info.get("det3d_gt")
            sensor = info.get("sensor") or (gt_json or {}).get("sensor")
            if sensor is None:
                raise ValueError(f"image {image_id}: Det3DMetric needs meta['sensor'] or meta['det3d_gt'] (the camera of the JSON frame)")
            size = tuple(int(s) for s in info.get("size") or _full_size(sensor))
            predicted = to_json(boxes.to("cpu"), sensor, (size[0], size[1]))
            if gt_json is not None:
                self.add_json(image_id, predicted, gt_json, official=True)
            else:
                self.add_json(image_id, predicted, self._target_json(truth.to("cpu"), sensor, (size[0], size[1]), to_json), official=False)

    def merge(self, other: StreamingMetric) -> None:
        """Add another metric's images (an image both have keeps this metric's copy)."""
        for image_id, entry in getattr(other, "images", {}).items():
            self.images.setdefault(image_id, entry)

    def sync(self) -> None:
        """Gather every process's images (``all_gather_object``); no-op without a process group."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.images)
        merged: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {}
        for part in gathered:
            for image_id, entry in part.items():
                merged.setdefault(image_id, entry)
        self.images = merged

    def results(self) -> dict[str, Any]:
        """The evaluator's whole ``results`` dict (curves, per-depth values, working points, GT counts)."""
        images = {name: (entry[0], entry[1]) for name, entry in self.images.items()}
        return evaluate_jsons(images, self.labels, self.matching, self.min_iou, self.max_depth, self.step_size, self.working_confidence)

    def compute(self) -> dict[str, float]:
        """``mds``, ``map`` and, per class with ground truth, ``ds``, ``ap``, ``center_dist``,
        ``size_similarity``, ``os_yaw`` and ``os_pitch_roll`` (``<name>/<class>``), in percent.
        NaN without images."""
        if not self.images:
            return {"mds": math.nan, "map": math.nan}
        results = self.results()
        values = {"mds": float(results["mDetection_Score"]) * 100, "map": float(results["mAP"]) * 100}
        for label in self.labels:
            if not results["GT_stats"].get(label):
                continue
            values[f"ds/{label}"] = float(results["Detection_Score"][label]) * 100
            for name, key in _RESULT_KEYS.items():
                values[f"{name}/{label}"] = float(results[key][label]["auc"]) * 100
        return values


__all__ = ["CITYSCAPES_SIZE", "MATCHING", "PER_CLASS", "Det3DMetric", "evaluate_jsons", "load_evaluator"]
