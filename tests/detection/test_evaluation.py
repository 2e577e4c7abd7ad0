"""Cityscapes-3D scoring through the official evaluator on a two-image fixture built here.

The fixture: the camera of cityscapesScripts' ``docs/Box3DImageTransform.ipynb`` sample, and per
image a car and a bicycle at about 12 m and 33 m (the evaluator's 10 m and 30 m distance bins: its TP
metrics need at least two bins per class), their amodal boxes projected from the 3D boxes.
"""

from __future__ import annotations

import copy
import logging
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from cityscapesscripts.helpers.box3dImageTransform import CRS_S, CRS_V, Box3dImageTransform, Camera  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402

from scenemtl.detection.boxes import DETECTION_CLASSES, Boxes3D  # noqa: E402
from scenemtl.detection.evaluation import Det3DMetric, evaluate_jsons, load_evaluator  # noqa: E402
from tests.data.test_cityscapes3d import SENSOR  # noqa: E402  (the sample camera of cityscapesScripts' notebook)

CAR, BICYCLE = (4.3, 1.72, 1.53), (1.8, 0.6, 1.2)
#: image id → objects (label, centre in V, dimensions, yaw in V)
SCENES = {
    "frankfurt_000000_000294": [("car", (12.0, 2.0, 0.8), CAR, 0.1), ("bicycle", (33.0, -3.0, 0.6), BICYCLE, 1.2)],
    "lindau_000001_000019": [("car", (33.0, -4.0, 0.8), CAR, -0.3), ("bicycle", (12.0, 1.5, 0.6), BICYCLE, 0.4)],
}


def camera() -> Camera:
    return Camera(SENSOR["fx"], SENSOR["fy"], SENSOR["u0"], SENSOR["v0"], SENSOR["sensor_T_ISO_8855"])


def v_object(label: str, center, dims, yaw: float, instance: int) -> dict[str, Any]:
    """A gtBbox3d object: 3D box in V, amodal box projected from it, the modal box a little smaller."""
    rotation = Quaternion(axis=[0, 0, 1], angle=yaw)
    transform = Box3dImageTransform(camera())
    transform.initialize_box(list(dims), rotation, list(center), coordinate_system=CRS_V)
    x1, y1, x2, y2 = transform.get_amodal_box_2d()
    return {
        "2d": {"modal": [x1 + 3, y1 + 2, x2 - x1 - 6, y2 - y1 - 4], "amodal": [x1, y1, x2 - x1, y2 - y1]},
        "3d": {"center": list(center), "dimensions": list(dims), "rotation": rotation.q.tolist(), "format": "CRS_ISO8855"},
        "occlusion": 0.0,
        "truncation": 0.0,
        "instanceId": instance,
        "label": label,
        "score": 1.0,
    }


def ground_truth() -> dict[str, dict[str, Any]]:
    return {
        name: {
            "imgWidth": 2048,
            "imgHeight": 1024,
            "sensor": SENSOR,
            "objects": [v_object(*spec, instance=26000 + k) for k, spec in enumerate(objects)],
            "ignore": [],
        }
        for name, objects in SCENES.items()
    }


def as_predictions(gt: dict[str, Any]) -> dict[str, Any]:
    """The ground truth written as a prediction file: objects with score 1, no sensor, no ignore."""
    return {"objects": [{key: copy.deepcopy(obj[key]) for key in ("2d", "3d", "label", "score")} for obj in gt["objects"]]}


def score(predictions: dict[str, dict], gts: dict[str, dict], matching: str = "modal") -> dict[str, float]:
    metric = Det3DMetric(matching=matching)
    for name in gts:
        metric.add_json(name, predictions.get(name, {"objects": []}), gts[name])
    return metric.compute()


@pytest.mark.parametrize("matching", ["modal", "amodal"])
def test_ground_truth_as_prediction_scores_100(matching):
    gts = ground_truth()
    values = score({name: as_predictions(gt) for name, gt in gts.items()}, gts, matching)
    assert set(values) == {"mds", "map"} | {
        f"{n}/{c}" for c in ("car", "bicycle") for n in ("ds", "ap", "center_dist", "size_similarity", "os_yaw", "os_pitch_roll")
    }
    for key, value in values.items():
        assert value == pytest.approx(100.0, abs=1e-9), key


def test_a_shifted_prediction_lowers_the_detection_score_only():
    gts = ground_truth()
    predictions = {name: as_predictions(gt) for name, gt in gts.items()}
    for prediction in predictions.values():
        for obj in prediction["objects"]:
            if obj["label"] == "car":
                obj["3d"]["center"][0] += 1.0  # 1 m further along V's x; the modal box (matching) unchanged
    values = score(predictions, gts)
    assert values["ap/car"] == pytest.approx(100.0)
    assert values["center_dist/car"] == pytest.approx(99.0)  # 1 − 1 m / 100 m
    assert values["ds/car"] == pytest.approx(100 * (0.99 + 3) / 4)
    assert values["ds/bicycle"] == pytest.approx(100.0)
    assert values["mds"] == pytest.approx((values["ds/car"] + 100) / 2)


def test_a_missed_object_lowers_ap_and_leaves_one_distance_bin():
    gts = ground_truth()
    predictions = {name: as_predictions(gt) for name, gt in gts.items()}
    first = predictions["frankfurt_000000_000294"]
    first["objects"] = [obj for obj in first["objects"] if obj["label"] != "car"]  # the car at 12 m
    values = score(predictions, gts)
    assert values["ap/car"] == pytest.approx(50.0)  # recall 1/2 at precision 1
    # the remaining true positive lies in one distance bin: the evaluator's TP metrics ("AUC", the mean
    # over bins) need two, so they and DS are 0
    assert values["center_dist/car"] == 0 and values["ds/car"] == 0
    assert values["ds/bicycle"] == pytest.approx(100.0) and values["mds"] == pytest.approx(50.0)
    assert values["map"] == pytest.approx(75.0)


def test_no_prediction_scores_zero_and_no_ground_truth_nan():
    gts = ground_truth()
    values = score({}, gts)
    assert values["mds"] == 0 and values["map"] == 0
    assert all(values[f"{n}/{c}"] == 0 for c in ("car", "bicycle") for n in ("ds", "ap"))
    empty = {name: {**gt, "objects": []} for name, gt in gts.items()}
    values = score({name: as_predictions(gt) for name, gt in gts.items()}, empty)
    assert math.isnan(values["mds"]) and math.isnan(values["map"]) and set(values) == {"mds", "map"}
    assert all(math.isnan(v) for v in Det3DMetric().compute().values())


#: cityscapesScripts' axis change C → S (``get_K_multiplier``)
K_MULTIPLIER = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def to_boxes(gt: dict[str, Any], scores: bool) -> Boxes3D:
    """The objects of a gtBbox3d JSON as ``Boxes3D`` in S, in the conventions of ``detection.cityscapes``:
    ``rotations = R_S · K_MULTIPLIER`` (V-style box axes into S) and a JSON box [x, y, w, h] (inclusive
    pixels) as the edges (x, y, x + w + 1, y + h + 1)."""
    transform = Box3dImageTransform(camera())
    centers, sizes, rotations, labels = [], [], [], []
    for obj in gt["objects"]:
        transform.initialize_box(obj["3d"]["dimensions"], obj["3d"]["rotation"], obj["3d"]["center"], coordinate_system=CRS_V)
        size, center, rotation = transform.get_parameters(coordinate_system=CRS_S)
        centers.append(center)
        sizes.append(size)
        rotations.append(rotation.rotation_matrix @ K_MULTIPLIER)
        labels.append(DETECTION_CLASSES.index(obj["label"]))
    modal = np.array([obj["2d"]["modal"] for obj in gt["objects"]], dtype=np.float64).reshape(-1, 4)
    modal[:, 2:] += 1
    k = torch.tensor([[SENSOR["fx"], 0, SENSOR["u0"]], [0, SENSOR["fy"], SENSOR["v0"]], [0, 0, 1]], dtype=torch.float32)
    ignore = np.array([region["2d"] for region in gt.get("ignore", [])], dtype=np.float64).reshape(-1, 4)
    ignore[:, 2:] += ignore[:, :2] + 1
    return Boxes3D(
        ignore=torch.tensor(ignore, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.int64),
        centers=torch.tensor(np.array(centers), dtype=torch.float32).reshape(-1, 3),
        sizes=torch.tensor(np.array(sizes), dtype=torch.float32).reshape(-1, 3),
        rotations=torch.tensor(np.array(rotations), dtype=torch.float32).reshape(-1, 3, 3),
        boxes2d=torch.tensor(np.concatenate([modal[:, :2], modal[:, :2] + modal[:, 2:]], 1), dtype=torch.float32),
        camera=k,
        scores=torch.ones(len(labels)) if scores else None,
    )


def s_to_json(boxes: Boxes3D, sensor: dict, image_size: tuple[int, int]) -> dict[str, Any]:
    """A stand-in for ``detection.cityscapes.boxes_to_json`` (S → V by cityscapesScripts' transform)."""
    assert image_size == (1024, 2048)
    cam = Camera(sensor["fx"], sensor["fy"], sensor["u0"], sensor["v0"], sensor["sensor_T_ISO_8855"])
    objects = []
    for i in range(len(boxes)):
        transform = Box3dImageTransform(cam)
        rotation = Quaternion(matrix=boxes.rotations[i].double().numpy() @ K_MULTIPLIER.T, atol=1e-5)
        transform.initialize_box(boxes.sizes[i].tolist(), rotation, boxes.centers[i].tolist(), coordinate_system=CRS_S)
        size, center, rotation_v = transform.get_parameters(coordinate_system=CRS_V)
        x1, y1, x2, y2 = transform.get_amodal_box_2d()
        m1, n1, m2, n2 = boxes.boxes2d[i].tolist()
        objects.append(
            {
                "2d": {"amodal": [x1, y1, x2 - x1, y2 - y1], "modal": [m1, n1, m2 - m1 - 1, n2 - n1 - 1]},
                "3d": {"center": center.tolist(), "dimensions": size.tolist(), "rotation": rotation_v.q.tolist()},
                "label": DETECTION_CLASSES[int(boxes.labels[i])],
                "score": None if boxes.scores is None else float(boxes.scores[i]),
            }
        )
    return {"objects": objects}


def batch(names: list[str], official: bool = True):
    gts = ground_truth()
    prediction = [to_boxes(gts[name], scores=True) for name in names]
    target = [to_boxes(gts[name], scores=False) for name in names]
    meta = [{"id": name, "size": (1024, 2048), "sensor": SENSOR, **({"det3d_gt": gts[name]} if official else {})} for name in names]
    return prediction, target, names, meta


def test_one_update_two_updates_and_sync_give_the_same_numbers():
    names = sorted(SCENES)
    whole = Det3DMetric(to_json=s_to_json)
    whole.update(*batch(names))
    halves = Det3DMetric(to_json=s_to_json)
    halves.update(*batch(names[:1]))
    halves.update(*batch(names[1:]))
    expected = whole.compute()
    assert halves.compute() == expected
    halves.sync()  # no process group: nothing to gather
    assert halves.compute() == expected
    # through the float32 S frame and back: 100 up to rounding
    assert expected["mds"] == pytest.approx(100.0, abs=1e-4) and expected["map"] == 100.0
    assert "official gtBbox3d JSON" in whole.variant and "modal 2D matching (TaskPrompter)" in whole.variant
    # the ground truth built from the targets (score 1, the sensor, no ignore regions) scores the same
    built = Det3DMetric(to_json=s_to_json)
    built.update(*batch(names, official=False))
    assert built.compute() == pytest.approx(expected, abs=1e-4)
    assert built.variant.endswith("GT from targets")


def test_ignore_regions_drop_false_positives_in_official_and_built_ground_truth():
    gts = ground_truth()
    names = sorted(gts)
    gts[names[1]]["ignore"] = [{"2d": [0, 300, 400, 300]}]
    predictions = {name: as_predictions(gt) for name, gt in gts.items()}
    stray = v_object("car", (20.0, 8.0, 0.8), CAR, 0.0, instance=0)
    stray["2d"]["modal"] = [50, 350, 100, 80]  # inside the ignore region, far from the cars
    predictions[names[1]]["objects"].append({key: stray[key] for key in ("2d", "3d", "label", "score")})
    assert score(predictions, gts)["ap/car"] == pytest.approx(100.0)
    no_ignore = {name: {**gt, "ignore": []} for name, gt in gts.items()}
    assert score(predictions, no_ignore)["ap/car"] == pytest.approx(200 / 3)  # precision 2/3 at every threshold
    # the same through update, with the ground truth built from the targets (their ignore regions)
    metric = Det3DMetric(to_json=s_to_json)
    prediction = [to_boxes({**predictions[name], "ignore": []}, scores=True) for name in names]
    target = [to_boxes(gts[name], scores=False) for name in names]
    metric.update(prediction, target, names, [{"sensor": SENSOR, "size": (1024, 2048)} for _ in names])
    assert metric.images[names[1]][1]["ignore"] == [{"2d": [0.0, 300.0, 400.0, 300.0]}]
    assert metric.compute()["ap/car"] == pytest.approx(100.0)


def test_sync_gathers_the_images_of_every_process(tmp_path, monkeypatch):
    gts = ground_truth()
    names = sorted(gts)
    single = Det3DMetric()
    for name in names:
        single.add_json(name, as_predictions(gts[name]), gts[name])
    expected = single.compute()
    # a real process group of one (Gloo): all_gather_object of one
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        single.sync()
        assert single.compute() == expected
    finally:
        torch.distributed.destroy_process_group()
    # two processes, simulated: rank 0 holds the first image, rank 1 both (a padded sampler repeats one)
    rank0, rank1 = Det3DMetric(), Det3DMetric()
    rank0.add_json(names[0], as_predictions(gts[names[0]]), gts[names[0]])
    for name in names:
        rank1.add_json(name, as_predictions(gts[name]), gts[name])
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [rank0.images, rank1.images]))
    rank0.sync()
    assert sorted(rank0.images) == names and rank0.compute() == expected


def test_update_checks_its_inputs():
    prediction, target, names, meta = batch(sorted(SCENES))
    metric = Det3DMetric(to_json=s_to_json)
    with pytest.raises(ValueError, match="one id per image"):
        metric.update(prediction, target)
    with pytest.raises(ValueError, match="sensor"):
        metric.update(prediction[:1], target[:1], names[:1], [{}])
    with pytest.raises(ValueError, match="empty id"):
        metric.update(prediction[:1], target[:1], [""], meta[:1])
    with pytest.raises(ValueError, match="matching must be one of"):
        Det3DMetric(matching="bev")
    assert Det3DMetric(matching="amodal").variant.startswith("cityscapesScripts Box3dEvaluator, amodal 2D matching (official default)")
    assert all(Det3DMetric.directions.values()) and Det3DMetric.main == "mds" and "os_pitch_roll/train" in Det3DMetric.directions


def test_evaluate_jsons_exposes_the_whole_results():
    gts = ground_truth()
    results = evaluate_jsons({name: (as_predictions(gt), gt) for name, gt in gts.items()})
    assert results["GT_stats"]["car"] == 2 and results["eval_params"]["matching_method"] == "Modal"
    assert results["working_confidence"]["car"] == pytest.approx(0.0)  # every threshold gives P·R = 1: the first wins


def test_update_with_the_projects_converter():
    cityscapes = pytest.importorskip("scenemtl.detection.cityscapes", reason="scenemtl.detection.cityscapes is not written yet")
    names = sorted(SCENES)
    metric = Det3DMetric(to_json=cityscapes.boxes_to_json)
    metric.update(*batch(names))
    values = metric.compute()
    assert values["map"] == pytest.approx(100.0) and values["mds"] == pytest.approx(100.0, abs=1e-3)


def test_importing_the_evaluator_leaves_logging_alone(tmp_path):
    code = (
        "import logging, os\n"
        "from scenemtl.detection.evaluation import load_evaluator\n"
        "root = logging.getLogger()\n"
        "before = (list(root.handlers), root.level)\n"
        "load_evaluator()\n"
        "assert (list(root.handlers), root.level) == before, (root.handlers, root.level)\n"
        "assert not os.path.exists('eval.log')\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120)
    # in this process too (pytest's handlers stay as they were)
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    load_evaluator()
    assert (list(root.handlers), root.level) == before
