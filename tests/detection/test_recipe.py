"""The Cityscapes-3D recipe end to end on CPU: TaskPrompter-Swin (tiny) with semseg, disparity and 3D detection on
fixture data in the release's layout, through training, the official evaluator and `scenemtl eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenemtl.cli import main
from scenemtl.config import load_config
from scenemtl.engine.trainer import Trainer
from tests.data.test_cityscapes3d import write_cityscapes3d

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "cityscapes3d" / "taskprompter.yaml"
TINY = [
    "data.options.size=[128, 256]",
    "data.num_workers=0",
    "data.batch_size=1",
    "model.backbone.weights=null",
    "model.backbone.options={embed_dim: 16, depths: [2, 2, 2, 2], num_heads: [1, 2, 2, 4], window_size: 4}",
    "model.options={img_size: [64, 128], embed_dim: 12, final_embed_dim: 10, chan_embed_dim: 16, chan_nheads: 4, head: deconv}",
    "tasks.det3d.width=64",
    "train.steps=2",
    "train.log_every=1",
    "train.device=cpu",
    "train.allocator=system",
]


@pytest.mark.slow
def test_recipe_trains_and_is_scored_by_the_official_evaluator(tmp_path, monkeypatch):
    root = write_cityscapes3d(tmp_path / "cs3d", size=(64, 128))
    monkeypatch.chdir(tmp_path)
    config = load_config(RECIPE, [f"data.root={root}", f"out_dir={tmp_path / 'runs' / '{name}'}", *TINY])
    trainer = Trainer(config, progress=False)
    assert trainer.model.heads["det3d"].strides[:4] == (8.0, 16.0, 32.0, 32.0)  # at img_size; ×2 for the 128×256 input
    trainer.fit()
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses and {"semseg", "inverse_depth", "det3d"} <= set(losses[-1])
    metrics = json.loads((trainer.run_dir / "results.json").read_text())["metrics"]
    assert {"mds", "map"} <= set(metrics["det3d"]) and "miou" in metrics["semseg"] and "rmse" in metrics["inverse_depth"]
    # the checkpoint through the command line, on the val split
    overrides = [f"--set=data.root={root}", *[f"--set={o}" for o in TINY]]
    out = tmp_path / "results.json"
    assert main(["eval", str(RECIPE), "--checkpoint", str(trainer.run_dir), "--out", str(out), "--quiet", *overrides]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"]["det3d"]["mds"] == pytest.approx(metrics["det3d"]["mds"], abs=1e-9)
    # prediction on a plain image: boxes decoded with the recipe's camera, drawn and written as JSON
    image = next((root / "leftImg8bit" / "val").rglob("*.png"))
    predictions = tmp_path / "predictions"
    assert main(["predict", str(image), "--checkpoint", str(trainer.run_dir), "--out", str(predictions), "--quiet"]) == 0
    written = json.loads((predictions / "det3d" / f"{image.stem}.json").read_text())
    assert written["frame"].startswith("camera") and isinstance(written["boxes"], list)
    assert (predictions / "det3d" / f"{image.stem}.png").is_file() and (predictions / "panels" / f"{image.stem}.png").is_file()
    # with the image's sensor: decoded with its camera and written in its vehicle frame, as the evaluator reads it
    annotation = next((root / "gtBbox3d" / "val").rglob(image.name.replace("leftImg8bit.png", "gtBbox3d.json")))
    in_v = tmp_path / "in_v"
    assert (
        main(["predict", str(image), "--checkpoint", str(trainer.run_dir), "--out", str(in_v), "--sensor", str(annotation), "--quiet"]) == 0
    )
    written = json.loads((in_v / "det3d" / f"{image.stem}.json").read_text())
    assert written["frame"].startswith("Cityscapes-3D vehicle frame") and isinstance(written["objects"], list)
    assert written["sensor"]["fx"] == json.loads(annotation.read_text())["sensor"]["fx"]


def test_prediction_json_in_the_sensors_vehicle_frame_reads_back_as_the_predicted_boxes(tmp_path):
    """``scenemtl predict --sensor``'s JSON: the boxes in V, which ``boxes_from_json`` brings back to S unchanged."""
    import torch

    from scenemtl.detection.cityscapes import boxes_from_json, read_sensor, sensor_camera
    from scenemtl.engine.predict import _instance_json
    from scenemtl.errors import ConfigError
    from scenemtl.tasks import build_task
    from tests.data.test_cityscapes3d import fixture_annotation

    annotation = fixture_annotation("val", 0)
    file = tmp_path / "frame_gtBbox3d.json"
    file.write_text(json.dumps(annotation))
    sensor = read_sensor(file)
    (tmp_path / "bare.json").write_text(json.dumps(annotation["sensor"]))
    assert read_sensor(tmp_path / "bare.json")["fx"] == sensor["fx"]
    size = (256, 512)
    truth, _ = boxes_from_json(annotation, size=size)
    assert torch.allclose(truth.camera.double(), torch.as_tensor(sensor_camera(sensor, size)), atol=1e-4)
    predicted = truth.select(torch.arange(len(truth)))
    predicted.scores = torch.linspace(0.9, 0.5, len(truth))

    class Stub:  # what _instance_json asks of a Predictor
        tasks = {"det3d": build_task("det3d", {})}

    Stub.sensor = sensor
    written = _instance_json(predicted, Stub, "det3d", size)  # type: ignore[arg-type]
    assert written["frame"].startswith("Cityscapes-3D vehicle frame") and len(written["objects"]) == len(truth) > 0
    assert [o["score"] for o in written["objects"]] == pytest.approx(predicted.scores.tolist())
    back, _ = boxes_from_json({**written, "sensor": annotation["sensor"]}, size=size)
    assert torch.allclose(back.centers, truth.centers, atol=1e-3) and torch.allclose(back.sizes, truth.sizes, atol=1e-4)
    assert torch.allclose(back.rotations, truth.rotations, atol=1e-4)
    Stub.sensor = None
    plain = _instance_json(predicted, Stub, "det3d", size)  # type: ignore[arg-type]
    assert plain["frame"].startswith("camera") and plain["boxes"][0]["center"] == pytest.approx(truth.centers[0].tolist())
    (tmp_path / "bad.json").write_text(json.dumps({"objects": []}))
    with pytest.raises(ConfigError, match="bad.json.*gtBbox3d JSON"):
        read_sensor(tmp_path / "bad.json")


def test_images_without_a_camera_use_the_tasks_camera_scaled_to_their_size():
    import torch

    from scenemtl.errors import ConfigError
    from scenemtl.tasks import build_task

    plain = build_task("det3d", {})
    with pytest.raises(ConfigError, match="tasks.det3d.camera=\\[fx, fy, u0, v0\\]"):
        plain.prediction_inputs({"image": torch.zeros(1, 3, 8, 16)})
    task = build_task("det3d", {"camera": [2262.52, 2265.3, 1096.98, 513.14], "camera_size": [1024, 2048]})
    cameras = task.prediction_inputs({"image": torch.zeros(2, 3, 520, 1024), "meta": [{"size": (512, 1024)}] * 2})["cameras"]
    assert cameras.shape == (2, 3, 3)
    assert cameras[0, 0, 0] == pytest.approx(1131.26) and cameras[0, 0, 2] == pytest.approx((1096.98 + 0.5) / 2 - 0.5)
    with pytest.raises(ConfigError, match="camera must be"):
        build_task("det3d", {"camera": [1.0, 2.0]})


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["hps", "invpt"])
def test_det3d_trains_beside_dense_tasks_on_other_architectures(tiny_config, arch):
    """hps (its backbone's levels) and invpt (its three stages' task features) carry the det3d head too."""
    overrides = [
        "tasks={semseg: {weight: 1.0}, det3d: {weight: 1.0, width: 64, dcn: false}}",
        "data.options={height: 64, width: 64, num_train: 4, num_val: 2}",
        "data.augment={scale: null, flip: true, photometric: false}",
        "data.batch_size=2",
        "train.steps=2",
        "train.init_output_bias=false",
    ]
    if arch == "invpt":
        overrides += [
            "model.arch=invpt",
            "model.backbone={name: test_vit}",
            "model.options={img_size: [64, 64], embed_dim: 16, pred_channels: 8}",
        ]
    trainer = Trainer(tiny_config(*overrides), progress=False, log=False)
    trainer.fit()
    metrics = trainer.evaluate()["metrics"]
    assert "mds" in metrics["det3d"] and "miou" in metrics["semseg"]


def test_info_counts_the_detection_branch(tiny_config):
    from scenemtl.engine.info import model_info

    config = tiny_config("tasks={semseg: {weight: 1.0}, det3d: {weight: 1.0, width: 64, dcn: false}}")
    report = model_info(config, (64, 64))
    assert report.per_task["det3d"] > 0 and report.per_task["semseg"] > 0


def test_architectures_without_an_instance_head_refuse_det3d():
    from scenemtl.config import ModelConfig
    from scenemtl.errors import ConfigError
    from scenemtl.models import build_model
    from scenemtl.tasks import build_task

    tasks = {"semseg": build_task("semseg", {}, {"semseg": ["a", "b"]}), "det3d": build_task("det3d", {})}
    with pytest.raises(ConfigError, match="architecture 'padnet' has no head for the instance task.*hps, invpt, taskprompter"):
        build_model(ModelConfig(arch="padnet", backbone={"name": "test_resnet"}), tasks)
    with pytest.raises(ConfigError, match="on a Swin backbone only"):
        build_model(ModelConfig(arch="taskprompter", backbone={"name": "test_vit"}, options={"img_size": [64, 64]}), tasks)
