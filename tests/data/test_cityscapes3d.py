"""Cityscapes-3D: gtBbox3d JSON ↔ Boxes3D through cityscapesScripts, and the ``cityscapes3d`` dataset read
from fixtures in the release's on-disk layout.

The fixture images are small (32×64 by default, the release's 1:2 aspect ratio) while the boxes stay in
the JSON's 2048×1024 pixel space with the real sensor of cityscapesScripts' notebook sample
(``docs/Box3DImageTransform.ipynb``): full-size PNGs would cost seconds per test, and the small ones
exercise the loader's resampling of boxes and camera from the JSON's size to the image's.
``write_cityscapes3d(root, size=(1024, 2048))`` writes release-size files for tests that want them.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cityscapesscripts.helpers.annotation import CsBbox3d  # noqa: E402
from cityscapesscripts.helpers.box3dImageTransform import CRS_S, CRS_V, Box3dImageTransform, Camera  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402

from scenemtl.data import DATASETS  # noqa: E402
from scenemtl.data.cityscapes3d import Cityscapes3D  # noqa: E402
from scenemtl.detection import Boxes3D  # noqa: E402
from scenemtl.detection.cityscapes import boxes_from_json, boxes_to_json  # noqa: E402
from scenemtl.errors import ConfigError, DataError  # noqa: E402

# cityscapesScripts' docs/Box3DImageTransform.ipynb: a real gtBbox3d sensor and object (a car at 34 m)
SENSOR = {
    "sensor_T_ISO_8855": [
        [0.9990881051503779, -0.01948468779721943, -0.03799085532693703, -1.6501524664770573],
        [0.019498764210995674, 0.9998098810245096, 0.0, -0.1331288872611436],
        [0.03798363254444427, -0.0007407747301939942, 0.9992780868764849, -1.2836173638418473],
    ],
    "fx": 2262.52,
    "fy": 2265.3017905988554,
    "u0": 1096.98,
    "v0": 513.137,
    "baseline": 0.209313,
}
NOTEBOOK_CAR = {
    "2d": {"modal": [609, 420, 198, 111], "amodal": [602, 415, 214, 118]},
    "3d": {
        "center": [33.95, 5.05, 0.57],
        "dimensions": [4.3, 1.72, 1.53],
        "rotation": [0.9735839424380041, -0.010751769161021867, 0.0027191710555974913, 0.22805988817753894],
        "type": "Mid Size Car",
        "format": "CRS_ISO8855",
    },
    "occlusion": 0.0,
    "truncation": 0.0,
    "instanceId": 26010,
    "label": "car",
    "score": 1.0,
}
IGNORE = {"2d": [1800, 300, 100, 80], "label": "car group", "instanceId": -1}
CITIES = {"train": {"aachen": 2}, "val": {"frankfurt": 2}}
# disparity PNG values written (p = 0 invalid, p = 1 disparity 0, p = 257 disparity 1 px)
P_VALUES = [0, 1, 2, 257, 513, 2049, 30000]
BASELINE, FX = SENSOR["baseline"], SENSOR["fx"]


def notebook_annotation() -> dict:
    """The notebook's gtBbox3d JSON (one car) with an ignore region."""
    return {
        "imgWidth": 2048,
        "imgHeight": 1024,
        "sensor": copy.deepcopy(SENSOR),
        "objects": [copy.deepcopy(NOTEBOOK_CAR)],
        "ignore": [IGNORE],
    }


def make_object(label: str, center: list[float], dims: list[float], yaw: float, instance: int) -> dict:
    """An unoccluded object in V: its 2D boxes are the projection of its 3D box, truncated to integers as
    the notebook derives the amodal box."""
    rotation = Quaternion(axis=[0.0, 0.0, 1.0], degrees=yaw)
    transform = Box3dImageTransform(Camera(SENSOR["fx"], SENSOR["fy"], SENSOR["u0"], SENSOR["v0"], SENSOR["sensor_T_ISO_8855"]))
    transform.initialize_box(dims, rotation, center, coordinate_system=CRS_V)
    x1, y1, x2, y2 = (int(v) for v in transform.get_amodal_box_2d())
    box = [x1, y1, x2 - x1, y2 - y1]
    return {
        "2d": {"modal": box, "amodal": box},
        "3d": {"center": center, "dimensions": dims, "rotation": list(rotation.elements), "type": label, "format": "CRS_ISO8855"},
        "occlusion": 0.0,
        "truncation": 0.0,
        "instanceId": instance,
        "label": label,
        "score": 1.0,
    }


def fixture_annotation(split: str, k: int) -> dict:
    """Image 0: the notebook car (34 m), a car at 12 m, a caravan (not a detection class) and an ignore
    region; image 1: trucks at 12 m and 33 m in val, only the caravan in train (no detection object)."""
    caravan = make_object("caravan", [20.0, 8.0, 1.3], [6.0, 2.3, 2.6], 0.0, 27001)
    if k % 2 == 0:
        objects = [copy.deepcopy(NOTEBOOK_CAR), make_object("car", [12.0, -2.5, 0.75], [4.5, 1.8, 1.5], 10.0, 26011), caravan]
    elif split == "train":
        objects = [caravan]
    else:
        objects = [
            make_object("truck", [12.5, 4.0, 1.6], [7.0, 2.5, 3.2], -5.0, 27010),
            make_object("truck", [33.0, -7.0, 1.6], [8.0, 2.5, 3.4], 80.0, 27011),
        ]
    return {
        "imgWidth": 2048,
        "imgHeight": 1024,
        "sensor": copy.deepcopy(SENSOR),
        "objects": objects,
        "ignore": [IGNORE] if k % 2 == 0 else [],
    }


def write_cityscapes3d(root: Path, size: tuple[int, int] = (32, 64), cities: dict = CITIES) -> Path:
    """The release's layout: leftImg8bit/, gtFine/ labelIds, disparity/ uint16, camera/ and gtBbox3d/ JSON
    (see ``fixture_annotation``); ``size`` (H, W) of the PNGs, the boxes always for 2048×1024."""
    rng = np.random.default_rng(0)
    h, w = size
    for split, per_city in cities.items():
        for city, count in per_city.items():
            for k in range(count):
                stem = f"{city}_{k:06d}_{19 + k:06d}"
                folders = {name: root / name / split / city for name in ("leftImg8bit", "gtFine", "disparity", "camera", "gtBbox3d")}
                for folder in folders.values():
                    folder.mkdir(parents=True, exist_ok=True)
                ids = rng.integers(0, 34, (h, w)).astype(np.uint8)
                ids[:, :4] = 10  # rail track (TaskPrompter's "sky" line zeroes it)
                p = np.array(P_VALUES, np.uint16)[rng.integers(0, len(P_VALUES), (h, w))]
                image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
                Image.fromarray(image).save(folders["leftImg8bit"] / f"{stem}_leftImg8bit.png")
                Image.fromarray(ids, mode="L").save(folders["gtFine"] / f"{stem}_gtFine_labelIds.png")
                Image.fromarray(p).save(folders["disparity"] / f"{stem}_disparity.png")
                camera = {
                    "extrinsic": {"baseline": BASELINE, "pitch": 0.038, "roll": 0.0, "yaw": -0.0195, "x": 1.7, "y": 0.1, "z": 1.22},
                    "intrinsic": {"fx": FX, "fy": SENSOR["fy"], "u0": SENSOR["u0"], "v0": SENSOR["v0"]},
                }
                (folders["camera"] / f"{stem}_camera.json").write_text(json.dumps(camera))
                (folders["gtBbox3d"] / f"{stem}_gtBbox3d.json").write_text(json.dumps(fixture_annotation(split, k)))
    return root


def stored(root: Path, split: str, stem: str) -> tuple[np.ndarray, np.ndarray]:
    city = stem.split("_")[0]
    ids = np.array(Image.open(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"))
    p = np.array(Image.open(root / "disparity" / split / city / f"{stem}_disparity.png"))
    return ids, p


def official(obj: dict, coordinate_system: int) -> Box3dImageTransform:
    transform = Box3dImageTransform(Camera(SENSOR["fx"], SENSOR["fy"], SENSOR["u0"], SENSOR["v0"], SENSOR["sensor_T_ISO_8855"]))
    box = CsBbox3d()
    box.fromJsonText(obj)
    transform.initialize_box_from_annotation(box, coordinate_system=coordinate_system)
    return transform


def rotation_matrix(q: list[float]) -> np.ndarray:
    return Quaternion(q).rotation_matrix


def test_json_to_boxes_matches_the_official_vertices_and_round_trips():
    annotation = notebook_annotation()
    boxes, sensor = boxes_from_json(annotation)
    assert isinstance(boxes, Boxes3D) and len(boxes) == 1 and boxes.labels.tolist() == [0]
    assert sensor == {**SENSOR, "imgWidth": 2048, "imgHeight": 1024}  # plain values, as in the JSON
    # the conventions: Boxes3D.corners() are the 8 official S-frame vertices (as a set)
    transform = official(NOTEBOOK_CAR, CRS_V)
    vertices = np.array(list(transform.get_vertices(coordinate_system=CRS_S).values()))
    corners = boxes.corners()[0].double().numpy()
    assert np.abs(corners[:, None] - vertices[None]).sum(-1).min(1).max() < 1e-4
    assert np.abs(corners[:, None] - vertices[None]).sum(-1).min(0).max() < 1e-4
    size_s, center_s, _ = transform.get_parameters(coordinate_system=CRS_S)
    assert np.allclose(boxes.centers[0].numpy(), center_s, atol=1e-5) and np.allclose(boxes.sizes[0].numpy(), size_s)
    # the camera is the sensor's (pixel centres at integers); JSON [x, y, w, h] are inclusive pixels
    assert np.allclose(boxes.camera.numpy(), [[2262.52, 0, 1096.98], [0, 2265.3017905988554, 513.137], [0, 0, 1]])
    assert boxes.boxes2d[0].tolist() == [609, 420, 609 + 198 + 1, 420 + 111 + 1]
    assert boxes.ignore.tolist() == [[1800, 300, 1901, 381]]
    # the projected centre (pixel-centre coordinates, + 0.5 in the boxes' edge coordinates) lies in the modal box
    u, v = (boxes.projected_centers()[0] + 0.5).tolist()
    x1, y1, x2, y2 = boxes.boxes2d[0].tolist()
    assert x1 < u < x2 and y1 < v < y2
    # and the official projection of the vertices gives the notebook's amodal box, truncated
    assert [int(c) for c in transform.get_amodal_box_2d()] == [602, 415, 816, 533]
    # JSON → Boxes3D → JSON: V-frame centre, size and rotation to 1e-5, modal box exact
    written = boxes_to_json(boxes, sensor, (1024, 2048))["objects"][0]
    assert np.allclose(written["3d"]["center"], NOTEBOOK_CAR["3d"]["center"], atol=1e-5)
    assert np.allclose(written["3d"]["dimensions"], NOTEBOOK_CAR["3d"]["dimensions"], atol=1e-5)
    assert np.allclose(rotation_matrix(written["3d"]["rotation"]), rotation_matrix(NOTEBOOK_CAR["3d"]["rotation"]), atol=1e-5)
    assert np.allclose(written["3d"]["rotation"], NOTEBOOK_CAR["3d"]["rotation"], atol=1e-5)  # w ≥ 0, as the JSON's
    assert written["2d"]["modal"] == NOTEBOOK_CAR["2d"]["modal"] and written["label"] == "car" and written["score"] == 1.0
    assert np.allclose(written["2d"]["amodal"], [602.53, 415.63, 213.64, 118.36], atol=0.01)  # the evaluator's projection


def test_resized_samples_and_predictions_round_trip():
    annotation = notebook_annotation()
    full, sensor = boxes_from_json(annotation)
    half, _ = boxes_from_json(annotation, size=(512, 1024))
    assert torch.allclose(half.boxes2d, full.boxes2d / 2) and torch.equal(half.centers, full.centers)
    assert half.camera[0, 0] == pytest.approx(2262.52 / 2) and half.camera[0, 2] == pytest.approx((1096.98 + 0.5) / 2 - 0.5)
    # the centre still projects inside the modal box at the new size
    u, v = (half.projected_centers()[0] + 0.5).tolist()
    x1, y1, x2, y2 = half.boxes2d[0].tolist()
    assert x1 < u < x2 and y1 < v < y2
    # predictions of the resized sample are written at the release's size; rotations need not be exactly orthogonal
    scored = Boxes3D(**{**half.__dict__, "scores": torch.tensor([0.75]), "rotations": half.rotations * 1.0001})
    written = boxes_to_json(scored, sensor, (512, 1024))["objects"][0]
    assert written["2d"]["modal"] == NOTEBOOK_CAR["2d"]["modal"] and written["score"] == 0.75
    assert np.allclose(written["3d"]["center"], NOTEBOOK_CAR["3d"]["center"], atol=1e-5)
    assert np.allclose(rotation_matrix(written["3d"]["rotation"]), rotation_matrix(NOTEBOOK_CAR["3d"]["rotation"]), atol=1e-5)
    # a sensor that names its image size (e.g. a synthetic scene's) is taken at that size
    small = boxes_to_json(half, {**sensor, "imgHeight": 512, "imgWidth": 1024}, (512, 1024))["objects"][0]
    assert small["2d"]["modal"] == [304.5, 210.0, 98.5, 55.0]


def test_other_classes_are_skipped_and_malformed_keys_named():
    annotation = notebook_annotation()
    annotation["objects"].append({"label": "caravan"})  # not a detection class: not read
    assert len(boxes_from_json(annotation)[0]) == 1
    bus_only, _ = boxes_from_json(annotation, classes=("bus",))
    assert len(bus_only) == 0 and bus_only.centers.shape == (0, 3) and bus_only.rotations.shape == (0, 3, 3)
    broken = notebook_annotation()
    del broken["objects"][0]["3d"]["rotation"]
    with pytest.raises(DataError, match=r"no key 'objects\[0\]\.3d\.rotation'"):
        boxes_from_json(broken)
    broken = notebook_annotation()
    broken["objects"][0]["2d"]["modal"] = [1, 2, 3]
    with pytest.raises(DataError, match=r"'objects\[0\]\.2d\.modal' must be 4 finite numbers"):
        boxes_from_json(broken)
    broken = notebook_annotation()
    del broken["sensor"]["fx"]
    with pytest.raises(DataError, match=r"no key 'sensor\.fx'"):
        boxes_from_json(broken)
    broken = notebook_annotation()
    broken["sensor"]["sensor_T_ISO_8855"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(DataError, match=r"'sensor\.sensor_T_ISO_8855' must be 3×4"):
        boxes_from_json(broken)


def test_dataset_samples_follow_the_contract(tmp_path):
    root = write_cityscapes3d(tmp_path / "cityscapes")
    assert DATASETS.get("cityscapes3d") is Cityscapes3D
    val = Cityscapes3D(str(root), "val", ["semseg", "inverse_depth", "depth", "det3d"])
    assert len(val) == 2 and [val.sample_id(i) for i in range(2)] == ["frankfurt_000000_000019", "frankfurt_000001_000020"]
    sample = val.sample(0)
    stem = "frankfurt_000000_000019"
    image = np.array(Image.open(root / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png"))
    assert sample["image"].dtype == torch.uint8 and torch.equal(sample["image"], torch.from_numpy(image).permute(2, 0, 1))
    ids, p = stored(root, "val", stem)
    lookup = np.full(256, 255, np.int64)
    lookup[[7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]] = np.arange(19)
    assert sample["semseg"].dtype == torch.int64 and np.array_equal(sample["semseg"].numpy(), lookup[ids])
    disparity = sample["inverse_depth"]
    assert disparity.dtype == torch.float32 and disparity.shape == (1, 32, 64)
    assert np.array_equal(disparity[0].numpy(), np.where(p > 0, (p.astype(np.float32) - 1) / 256, 0))
    assert bool((disparity[0][torch.from_numpy(p <= 1)] == 0).all())  # p = 0 (no match) and p = 1 (d = 0): invalid, 0
    assert disparity[0][torch.from_numpy(p == 257)].unique().tolist() == [1.0]
    depth = sample["depth"]
    assert depth.dtype == torch.float32 and depth.shape == (1, 32, 64)
    d = (p.astype(np.float64) - 1) / 256
    assert np.allclose(depth[0].numpy(), np.where(d > 0, BASELINE * FX / np.where(d > 0, d, 1), 0), rtol=1e-6)
    boxes = sample["det3d"]
    assert isinstance(boxes, Boxes3D) and boxes.labels.tolist() == [0, 0]  # two cars; the caravan is not a class
    # the boxes and camera at the image's 32×64 (the JSON's 1024×2048 / 32)
    assert torch.allclose(boxes.boxes2d[0], torch.tensor([609, 420, 808, 532]) / 32)
    assert boxes.camera[0, 0] == pytest.approx(FX / 32) and boxes.ignore.shape == (1, 4)
    u, v = (boxes.projected_centers() + 0.5).unbind(-1)
    assert bool(((boxes.boxes2d[:, 0] < u) & (u < boxes.boxes2d[:, 2]) & (boxes.boxes2d[:, 1] < v) & (v < boxes.boxes2d[:, 3])).all())
    meta = sample["meta"]
    assert set(meta) == {"id", "size", "labelled", "sensor", "det3d_gt"} and meta["id"] == stem and meta["size"] == (32, 64)
    assert meta["sensor"] == {**SENSOR, "imgWidth": 2048, "imgHeight": 1024} and meta["det3d_gt"] == json.loads(
        (root / "gtBbox3d" / "val" / "frankfurt" / f"{stem}_gtBbox3d.json").read_text()
    )
    assert json.loads(json.dumps(meta)) == {**meta, "size": [32, 64]}  # plain values
    trucks = val.sample(1)["det3d"]
    assert trucks.labels.tolist() == [1, 1] and trucks.ignore.shape == (0, 4)
    assert Cityscapes3D.info.class_names["det3d"] == ["car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert len(Cityscapes3D.info.class_names["semseg"]) == 19 and Cityscapes3D.info.tasks == ("semseg", "inverse_depth", "depth", "det3d")


def test_size_option_and_disparity_rescale(tmp_path):
    root = write_cityscapes3d(tmp_path / "cityscapes")
    ids, p = stored(root, "val", "frankfurt_000001_000020")
    plain = Cityscapes3D(str(root), "val", ["semseg", "inverse_depth", "det3d"], size=[16, 32]).sample(1)
    assert plain["image"].shape == (3, 16, 32) and plain["semseg"].shape == (16, 32) and plain["meta"]["size"] == (16, 32)
    picked = p[1::2, 1::2]  # nearest at pixel centres: output pixel i reads input pixel 2i + 1
    expected = np.where(picked > 0, (picked.astype(np.float32) - 1) / 256, 0)
    assert np.array_equal(plain["inverse_depth"][0].numpy(), expected)  # TaskPrompter: values not rescaled
    rescaled = Cityscapes3D(str(root), "val", ["inverse_depth"], size=[16, 32], disparity_rescale=True).sample(1)
    assert np.allclose(rescaled["inverse_depth"][0].numpy(), expected * 0.5)
    assert torch.allclose(plain["det3d"].boxes2d * 64, Cityscapes3D(str(root), "val", ["det3d"]).sample(1)["det3d"].boxes2d * 32)
    assert plain["det3d"].camera[0, 0] == pytest.approx(FX / 64)


def test_drop_empty_train_and_rail_track_option(tmp_path):
    root = write_cityscapes3d(tmp_path / "cityscapes")
    train = Cityscapes3D(str(root), "train", ["semseg"])
    assert len(train) == 1 and train.sample_id(0) == "aachen_000000_000019"
    assert train.notes == [
        "1 of 2 train images left out: no object of the 6 detection classes (TaskPrompter's find_bad_samples; "
        "data.options.drop_empty_train: false keeps them)"
    ]
    every = Cityscapes3D(str(root), "train", ["det3d"], drop_empty_train=False)
    assert len(every) == 2 and not every.notes and len(every.sample(1)["det3d"]) == 0
    ids, p = stored(root, "train", "aachen_000000_000019")
    rail = torch.from_numpy(ids == 10)
    valid = torch.from_numpy(p > 1)
    default = Cityscapes3D(str(root), "train", ["inverse_depth", "depth"]).sample(0)
    legacy = Cityscapes3D(str(root), "train", ["inverse_depth", "depth"], legacy_rail_track_zero=True).sample(0)
    for task in ("inverse_depth", "depth"):
        assert bool((default[task][0][rail & valid] > 0).all()) and bool((legacy[task][0][rail] == 0).all())
        assert torch.equal(default[task][0][~rail], legacy[task][0][~rail])


def test_missing_and_malformed_files_name_the_file_and_the_fix(tmp_path):
    root = write_cityscapes3d(tmp_path / "cityscapes")
    with pytest.raises(ConfigError, match="data.root is not set"):
        Cityscapes3D(None, "val", ["det3d"])
    with pytest.raises(ConfigError, match="has no split 'test'"):
        Cityscapes3D(str(root), "test", ["det3d"])
    boxes = root / "gtBbox3d" / "val" / "frankfurt" / "frankfurt_000000_000019_gtBbox3d.json"
    annotation = json.loads(boxes.read_text())
    del annotation["objects"][1]["3d"]["center"]
    boxes.write_text(json.dumps(annotation))
    val = Cityscapes3D(str(root), "val", ["det3d"])
    with pytest.raises(
        DataError, match=r"frankfurt_000000_000019_gtBbox3d.json: malformed gtBbox3d annotation: no key 'objects\[1\]\.3d\.center'"
    ):
        val.sample(0)
    boxes.unlink()
    with pytest.raises(DataError, match=r"missing file .*frankfurt_000000_000019_gtBbox3d.json .*gtBbox3d_trainvaltest.zip"):
        val.sample(0)
    (root / "gtBbox3d" / "train").rename(root / "gtBbox3d" / "old")
    with pytest.raises(DataError, match=r"no folder .*gtBbox3d/train .*gtBbox3d_trainvaltest.zip.*drop_empty_train: false"):
        Cityscapes3D(str(root), "train", ["semseg"])
    assert len(Cityscapes3D(str(root), "train", ["semseg"], drop_empty_train=False)) == 2
    with pytest.raises(DataError, match=r"no folder .*gtBbox3d/train \(the det3d labels of train\)"):
        Cityscapes3D(str(root), "train", ["det3d"], drop_empty_train=False)
    Image.fromarray(np.zeros((32, 60), np.uint16)).save(root / "disparity" / "val" / "frankfurt" / "frankfurt_000001_000020_disparity.png")
    with pytest.raises(DataError, match=r"disparity.png: the disparity map is 32×60 but its image .* is 32×64"):
        Cityscapes3D(str(root), "val", ["inverse_depth"]).sample(1)


@pytest.fixture
def evaluator(tmp_path, monkeypatch):
    """cityscapesScripts' evaluator module; its import writes ``eval.log`` into the working directory and
    adds handlers to the root logger, so it is imported in ``tmp_path`` and the handlers are removed."""
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from cityscapesscripts.evaluation import evalObjectDetection3d, objectDetectionHelpers

    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    return evalObjectDetection3d, objectDetectionHelpers


@pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
def test_ground_truth_written_as_predictions_scores_perfectly(tmp_path, evaluator):
    evaluation, helpers = evaluator
    root = write_cityscapes3d(tmp_path / "cityscapes")
    val = Cityscapes3D(str(root), "val", ["det3d"])
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for index in range(len(val)):
        sample = val.sample(index)
        written = boxes_to_json(sample["det3d"], sample["meta"]["sensor"], sample["meta"]["size"])
        (predictions / f"{sample['meta']['id']}_pred.json").write_text(json.dumps(written))
    for matching in (helpers.MATCHING_MODAL, helpers.MATCHING_AMODAL):
        params = helpers.EvaluationParameters(["car", "truck", "bus", "train", "motorcycle", "bicycle"], matching_method=matching)
        box_evaluator = evaluation.Box3dEvaluator(params)
        box_evaluator.loadGT(str(root / "gtBbox3d" / "val"))
        box_evaluator.loadPredictions(str(predictions))
        box_evaluator.evaluate()
        results = box_evaluator.results
        assert dict(results["GT_stats"]) == {"car": 2, "truck": 2, "bus": 0, "train": 0, "motorcycle": 0, "bicycle": 0}
        for label in ("car", "truck"):  # two distance bins each (12 m and 33 m), so every DDTP metric counts
            assert results["AP"][label]["auc"] == pytest.approx(1.0)
            assert results["Detection_Score"][label] == pytest.approx(1.0, abs=1e-6)
        assert results["mDetection_Score"] == pytest.approx(1.0, abs=1e-6)
