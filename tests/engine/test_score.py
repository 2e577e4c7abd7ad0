"""Evaluation targets from the releases, and `scenemtl score` on saved prediction folders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat

from scenemtl.cli import main
from scenemtl.config import validate
from scenemtl.data.nyud import NYUD
from scenemtl.data.pascal_context import PascalContext
from scenemtl.engine import builder
from scenemtl.errors import DataError
from scenemtl.metrics.boundary import BoundaryMetric, relabel
from tests.data.test_nyud import write_nyud
from tests.data.test_pascal_context import write_pascal


def test_nyud_and_pascal_provide_seisms_label_images_in_evaluation_splits(tmp_path):
    root = write_nyud(tmp_path / "NYUDv2")
    config = validate({"data": {"name": "nyud", "root": str(root)}, "tasks": {"edge": {}, "semseg": {}}})
    val = builder.build_dataset(config, "val")
    train = builder.build_dataset(config, "train")
    sample = val[0]
    stored = np.asarray(Image.open(root / "edge" / f"{val.ids[0]}.png"))
    assert sample["edge_labels"].dtype == torch.int64 and np.array_equal(sample["edge_labels"][0].numpy(), stored)
    assert set(np.unique(stored)) <= {0, 255} and "edge_labels" not in train[0]  # training samples do not carry it
    assert "edge_labels" in builder.build_dataset(config, "train", evaluation=True)[0]
    pascal = write_pascal(tmp_path / "PASCAL_MT")
    config = validate({"data": {"name": "pascal_context", "root": str(pascal)}, "tasks": {"edge": {}}})
    dataset = builder.build_dataset(config, "val")
    sample = dataset[0]
    label_map = loadmat(pascal / "pascal-context" / "trainval" / f"{dataset.ids[0]}.mat")["LabelMap"]
    assert np.array_equal(sample["edge_labels"][0].numpy(), relabel(label_map))
    assert isinstance(dataset, PascalContext) and NYUD.provides_eval == ("edge_labels",)


def write_predictions(root, ids, rng, missing=(), extra=()):
    """Saved predictions as the seeds write them: edge PNGs of 255·p, class-id PNGs, depth .npy, normals PNGs."""
    for task in ("edge", "semseg", "depth", "normals"):
        (root / task).mkdir(parents=True, exist_ok=True)
    for sample_id in list(ids) + list(extra):
        if sample_id in missing:
            continue
        Image.fromarray(rng.integers(0, 256, (24, 32)).astype(np.uint8)).save(root / "edge" / f"{sample_id}.png")
        Image.fromarray(rng.integers(0, 40, (24, 32)).astype(np.uint8)).save(root / "semseg" / f"{sample_id}.png")
        np.save(root / "depth" / f"{sample_id}.npy", rng.uniform(1, 5, (24, 32)).astype(np.float32))
        Image.fromarray(rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)).save(root / "normals" / f"{sample_id}.png")


def test_score_reads_the_seeds_formats_and_equals_the_metrics_fed_directly(tmp_path):
    root = write_nyud(tmp_path / "NYUDv2")
    pred = tmp_path / "pred"
    write_predictions(pred, ["0004", "0005"], np.random.default_rng(0), extra=["9999"])
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "score",
                "nyud",
                "--root",
                str(root),
                "--split",
                "val",
                "--pred",
                str(pred),
                "--protocol",
                "invpt",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert set(report["metrics"]) == {"edge", "semseg", "depth", "normals"} and report["protocol"] == "invpt"
    assert sorted(report["extra_predictions"]) == [
        "depth/9999.npy",
        "edge/9999.png",
        "normals/9999.png",
        "semseg/9999.png",
    ]  # listed, not scored
    assert "seg2bmap" in report["variants"]["edge"] and out.with_suffix(".md").read_text().startswith("Protocol")
    # the edge numbers are the metric's on the PNG levels against the stored edge maps read as label images
    direct = BoundaryMetric(0.011)
    for sample_id in ("0004", "0005"):
        levels = torch.from_numpy(np.array(Image.open(pred / "edge" / f"{sample_id}.png")))[None, None]
        stored = torch.from_numpy(np.asarray(Image.open(root / "edge" / f"{sample_id}.png")).astype(np.int64))
        direct.update(levels, (stored[None, None] > 0).float(), ids=[sample_id], eval_target=stored[None, None])
    assert report["metrics"]["edge"]["odsF"] == pytest.approx(direct.compute()["odsF"], abs=0)


def test_score_lists_missing_files_and_refuses_wrong_sizes(tmp_path):
    root = write_nyud(tmp_path / "NYUDv2")
    pred = tmp_path / "pred"
    write_predictions(pred, ["0004", "0005"], np.random.default_rng(0), missing=["0005"])
    from scenemtl.engine.score import score

    with pytest.raises(DataError, match=r"4 prediction file\(s\) missing .*semseg/0005, depth/0005, normals/0005, edge/0005"):
        score("nyud", str(root), "val", pred, progress=False)
    write_predictions(pred, ["0005"], np.random.default_rng(1))
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(pred / "edge" / "0005.png")
    with pytest.raises(DataError, match=r"0005.png: the prediction is \(20, 32\)"):
        score("nyud", str(root), "val", pred, tasks=["edge"], progress=False)
