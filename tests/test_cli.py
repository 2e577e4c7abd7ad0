"""The command line end to end: train, eval, predict, list; user errors are one line, exit 2."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from scenemtl.cli import main
from tests.conftest import TINY


@pytest.fixture
def config_file(tmp_path):
    raw = dict(TINY, out_dir=str(tmp_path / "runs" / "{name}"))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_train_eval_predict_end_to_end(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--quiet", "--set", "train.steps=3"]) == 0
    run = tmp_path / "runs" / "tiny"
    assert (run / "results.json").is_file() and (run / "checkpoints").is_dir()
    out = capsys.readouterr().out
    assert "| semseg | miou ↑ |" in out

    results = tmp_path / "eval.json"
    assert main(["eval", str(config_file), "--checkpoint", str(run), "--out", str(results), "--quiet"]) == 0
    report = json.loads(results.read_text())
    trained = json.loads((run / "results.json").read_text())
    assert report["metrics"]["depth"]["rmse"] == pytest.approx(trained["metrics"]["depth"]["rmse"], rel=1e-6)
    assert report["variants"]["semseg"] == "accumulated confusion matrix"
    assert len(report["curves"]["edge"]["precision"]) == 101 and "odsF" in report["metrics"]["edge"]
    markdown = results.with_suffix(".md").read_text()
    pngs = tmp_path / "edge_pngs"
    assert (
        main(
            [
                "eval",
                str(config_file),
                "--checkpoint",
                str(run),
                "--out",
                str(tmp_path / "e2.json"),
                "--quiet",
                "--save-png",
                f"edge={pngs}",
            ]
        )
        == 0
    )
    saved = sorted(pngs.glob("*.png"))
    assert [p.stem for p in saved] == [f"val_{i:05d}" for i in range(8)]
    assert Image.open(saved[0]).size == (48, 32) and Image.open(saved[0]).mode == "L"
    assert main(["eval", str(config_file), "--checkpoint", str(run), "--save-png", f"normals={tmp_path / 'n'}"]) == 2
    assert not (tmp_path / "n").exists()
    assert "| edge | odsF ↑ |" in markdown and "**semseg: IoU per class**" in markdown and "| floor |" in markdown

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(images / "odd.png")
    Image.fromarray(rng.integers(0, 255, (61, 45, 3), dtype=np.uint8)).save(images / "photo.jpg", quality=90)
    out_dir = tmp_path / "pred"
    assert main(["predict", str(images), "--checkpoint", str(run), "--out", str(out_dir), "--quiet"]) == 0
    for stem, size in (("odd", (37, 53)), ("photo", (61, 45))):
        assert np.load(out_dir / "semseg" / f"{stem}.npy").shape == size
        assert np.load(out_dir / "normals" / f"{stem}.npy").shape == (*size, 3)
        assert Image.open(out_dir / "depth" / f"{stem}.png").size == size[::-1]
        panel = Image.open(out_dir / "panels" / f"{stem}.png")
        assert panel.size[0] == size[1] * 6  # input + five tasks
    depth = np.load(out_dir / "depth" / "odd.npy")
    assert depth.dtype == np.float32 and depth.min() >= 0


def test_resume_via_cli(config_file, tmp_path):
    assert main(["train", str(config_file), "--quiet", "--set", "train.steps=2"]) == 0
    assert main(["train", str(config_file), "--quiet", "--set", "train.steps=3", "--resume"]) == 0
    meta = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())
    assert meta["step"] == 3


def test_user_errors_are_one_line(config_file, tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in error_line(capsys)
    assert main(["train", str(config_file), "--set", "train.stepz=3"]) == 2
    assert "Did you mean 'steps'?" in error_line(capsys)
    assert main(["train", str(config_file), "--set", "data.name=synthetik"]) == 2
    assert "Did you mean 'synthetic'?" in error_line(capsys)
    assert main(["train", str(config_file), "--set", "data.options.heigth=10"]) == 2
    assert "data.options.heigth" in error_line(capsys)
    assert main(["train", str(config_file), "--set", f"data.root={tmp_path / 'no_such_dataset'}"]) == 2
    assert "dataset folder not found" in error_line(capsys)
    assert not (tmp_path / "runs").exists()  # nothing was written for a run that could not start


def test_predict_rejects_a_corrupt_image_and_writes_nothing(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--quiet", "--set", "train.steps=1"]) == 0
    capsys.readouterr()
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out_dir = tmp_path / "pred"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("earlier work")
    run = tmp_path / "runs" / "tiny"
    assert main(["predict", str(good), str(bad), "--checkpoint", str(run), "--out", str(out_dir)]) == 2
    assert "bad.jpg" in error_line(capsys)
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt"]
    assert main(["predict", str(tmp_path / "missing.png"), "--checkpoint", str(run), "--out", str(out_dir)]) == 2
    assert "missing.png" in error_line(capsys)


def test_checkpoint_of_another_model_is_refused(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--quiet", "--set", "train.steps=1"]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "tiny"
    assert main(["eval", str(config_file), "--checkpoint", str(run), "--set", "model.arch=stl"]) == 2
    assert "for another model" in error_line(capsys)
    assert main(["eval", str(config_file), "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "checkpoint not found" in error_line(capsys)
    not_ckpt = tmp_path / "random.safetensors"
    not_ckpt.write_bytes(b"garbage")
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(image), "--checkpoint", str(not_ckpt), "--out", str(tmp_path / "p")]) == 2
    assert "random.safetensors" in error_line(capsys)


def test_list_shows_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("semseg", "human_parts", "hps", "stl", "synthetic", "fixed", "test_resnet", "self_supervised_depth", "min_entropy"):
        assert word in out


def test_list_settings_names_recipes_that_exist_and_validate(capsys):
    from pathlib import Path

    from scenemtl.config import load_config
    from scenemtl.settings import SETTINGS

    assert main(["list", "settings"]) == 0
    out = capsys.readouterr().out
    root = Path(__file__).resolve().parents[1]
    recipes = [recipe for setting in SETTINGS for recipe in setting.recipes]
    assert recipes and all(recipe in out for recipe in recipes)
    for recipe in recipes:
        config = load_config(root / recipe)
        assert config.objectives, recipe


@pytest.mark.slow
def test_sigint_stops_after_a_step_with_a_checkpoint_to_resume(config_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "runs" / "tiny"
    command = [sys.executable, "-m", "scenemtl.cli", "train", str(config_file), "--quiet", "--set", "train.steps=100000"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() or '"train"' not in (run / "metrics.jsonl").read_text():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 75, err  # stopped, resumable
    assert "--resume" in err
    from scenemtl.engine.checkpoint import read_meta

    step = read_meta(run).step
    assert step >= 2
    assert main(["train", str(config_file), "--quiet", "--resume", "--set", f"train.steps={step + 1}"]) == 0
    assert json.loads((run / "results.json").read_text())["step"] == step + 1


def test_eval_saves_panels_with_the_ground_truth_below(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--quiet", "--set", "train.steps=1"]) == 0
    run, panels = tmp_path / "runs" / "tiny", tmp_path / "panels"
    args = ["eval", str(config_file), "--checkpoint", str(run), "--out", str(tmp_path / "e.json"), "--quiet"]
    assert main([*args, "--save-panels", str(panels), "--panels", "3"]) == 0
    saved = sorted(panels.glob("*.png"))
    assert len(saved) == 3  # the first three images of the split
    panel = np.asarray(Image.open(saved[0]))
    height, width = 32, 48  # TINY's scenes: six columns (input + five tasks), two rows (predictions, ground truth)
    assert panel.shape[1] == 6 * width and panel.shape[0] > 2 * height
    # the ground-truth row repeats the input: the same pixels in both rows' first column
    rows = [y for y in range(panel.shape[0] - height) if np.array_equal(panel[y : y + height, :width], panel[-height:, :width])]
    assert rows and rows[0] < panel.shape[0] - height
