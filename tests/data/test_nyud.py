"""NYUD-v2 in both releases (NYUDv2 PNG, NYUD_MT JPG+NPY): decoding, `data check`, augmentation alignment, recipe."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenemtl.cli import main
from scenemtl.config import load_config
from scenemtl.data.check import check_dataset
from scenemtl.data.nyud import CLASS_NAMES, MT_RELEASE, NYUD, PNG_RELEASE
from scenemtl.engine.builder import build_tasks, build_transform, dataset_info
from scenemtl.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "nyud"
TASKS = ["semseg", "depth", "normals", "edge"]


def scene_labels(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocky label ids 0..40 (0 = unlabelled), as the release stores them."""
    blocks = rng.integers(0, 41, (4, 4))
    return np.kron(blocks, np.ones((-(-h // 4), -(-w // 4)), dtype=np.int64))[:h, :w].astype(np.uint8)


def write_nyud(root: Path, mt: bool = False, ids=(("0001", "0002", "0003"), ("0004", "0005")), size=(24, 32)) -> Path:
    """The release on disk: gt_sets/{train,val}.txt and one file per id and task, encoded as released.

    Targets are functions of the stored label so that tests can check alignment after augmentation:
    depth = 1 + id/10 m (0 where unlabelled), normals' x = +0.6 for even ids and −0.6 for odd ones,
    edge = 1 on id 7, and the image's red channel = 6·id.
    """
    rng = np.random.default_rng(1)
    h, w = size
    for folder in ("gt_sets", "images", "segmentation", "depth", "normals", "edge"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, split_ids in zip(("train", "val"), ids):
        (root / "gt_sets" / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
        for i in split_ids:
            labels = scene_labels(rng, h, w)
            image = np.stack([labels * 6, rng.integers(0, 256, (h, w)), rng.integers(0, 256, (h, w))], -1)
            Image.fromarray(image.astype(np.uint8)).save(
                root / "images" / f"{i}.{'jpg' if mt else 'png'}", **({"quality": 100} if mt else {})
            )
            Image.fromarray(labels, mode="L").save(root / "segmentation" / f"{i}.png")
            depth = np.where(labels > 0, 1 + labels / 10, 0).astype(np.float32)
            np.save(root / "depth" / f"{i}.npy", depth)
            nx = np.where(labels % 2 == 0, 0.6, -0.6)
            normals = np.stack([nx, np.zeros_like(nx), np.full_like(nx, 0.8)], -1)
            edge = (labels == 7).astype(np.uint8)
            if mt:
                np.save(root / "normals" / f"{i}.npy", normals.astype(np.float32))
                np.save(root / "edge" / f"{i}.npy", edge.astype(np.float32))
            else:
                Image.fromarray(np.rint((normals + 1) * 255 / 2).astype(np.uint8)).save(root / "normals" / f"{i}.png")
                Image.fromarray(edge * 255, mode="L").save(root / "edge" / f"{i}.png")
    return root


@pytest.mark.parametrize("mt", [False, True])
def test_both_releases_decode_into_the_contract(tmp_path, mt):
    root = write_nyud(tmp_path / ("NYUD_MT" if mt else "NYUDv2"), mt=mt)
    train = NYUD(str(root), "train", TASKS)
    assert len(train) == 3 and len(NYUD(str(root), "val", ["semseg"])) == 2
    assert train.variant == (MT_RELEASE if mt else PNG_RELEASE) and len(CLASS_NAMES) == 40
    sample = train.sample(1)
    stored = np.asarray(Image.open(root / "segmentation" / "0002.png")).astype(np.int64)
    assert sample["meta"]["id"] == "0002" and sample["meta"]["size"] == (24, 32)
    # 0 (unlabelled) → 255, others shifted by −1 to 0..39
    assert torch.equal(sample["semseg"], torch.from_numpy(np.where(stored == 0, 255, stored - 1)))
    assert sample["semseg"].dtype == torch.int64 and int(sample["semseg"][sample["semseg"] != 255].max()) <= 39
    assert torch.equal(sample["depth"][0], torch.from_numpy(np.load(root / "depth" / "0002.npy")))
    expected_nx = np.where(stored % 2 == 0, 0.6, -0.6)
    atol = 0 if mt else 1 / 255  # the PNG release stores 255·(n+1)/2 rounded: 2x/255 − 1 is within a step
    assert np.allclose(sample["normals"][0].numpy(), expected_nx, atol=atol + 1e-6)
    assert np.allclose(sample["normals"][2].numpy(), 0.8, atol=atol + 1e-6)
    assert torch.equal(sample["edge"][0], torch.from_numpy((stored == 7).astype(np.float32)))
    if not mt:  # PNG images are lossless: the red channel is 6·id
        assert torch.equal(sample["image"][0].long(), torch.from_numpy(stored * 6))


def test_the_extraction_folder_is_found_and_broken_roots_are_named(tmp_path):
    write_nyud(tmp_path / "NYUDv2")
    assert len(NYUD(str(tmp_path), "val", ["depth"])) == 2  # data.root may be the folder holding NYUDv2/
    with pytest.raises(ConfigError, match="data.root is not set"):
        NYUD(None, "train", ["semseg"])
    with pytest.raises(DataError, match="gt_sets"):
        NYUD(str(tmp_path / "elsewhere"), "train", ["semseg"])
    root = tmp_path / "NYUDv2"
    for path in (root / "images").iterdir():
        path.rename(path.with_suffix(".bmp"))
    with pytest.raises(DataError, match="neither <id>.png .* nor <id>.jpg"):
        NYUD(str(root), "train", ["semseg"])


def test_data_check_reports_ok_then_every_planted_defect(tmp_path, capsys):
    root = write_nyud(tmp_path / "NYUDv2")
    clean = check_dataset("nyud", str(root))
    assert clean.ok, clean.problems
    assert clean.variant == PNG_RELEASE and clean.samples == {"train": 3, "val": 2}
    assert clean.warnings and "425×560" in clean.warnings[0]  # the fixture is smaller than the release
    (root / "depth" / "0001.npy").unlink()  # missing file
    png = root / "images" / "0002.png"
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])  # truncated PNG
    Image.fromarray(np.zeros((20, 32), np.uint8), mode="L").save(root / "segmentation" / "0003.png")  # wrong size
    with open(root / "gt_sets" / "val.txt", "a") as split:
        split.write("0099\n")  # listed, no files
    np.save(root / "depth" / "0004.npy", -np.ones((24, 32), np.float32))  # out of range
    report = check_dataset("nyud", str(root))
    text = "\n".join(report.problems)
    assert not report.ok
    assert "0001.npy" in text and "missing file" in text
    assert "0002.png" in text and "truncated" in text
    assert "segmentation/0003.png: the semseg map is (20, 32)" in text
    assert "images/0099.png" in text
    assert "val[0] (0004)" in text and "negative" in text
    assert len(report.problems) == 5
    assert main(["data", "check", "nyud", "--root", str(root)]) == 1
    assert "BROKEN: 5 problem(s)" in capsys.readouterr().out
    (root / "gt_sets" / "train.txt").unlink()
    split_missing = check_dataset("nyud", str(root), splits=["train"])
    assert len(split_missing.problems) == 1
    assert split_missing.problems[0].startswith(f"split train: missing split file {root / 'gt_sets' / 'train.txt'}")


def test_recipe_augmentation_keeps_every_target_aligned(tmp_path, monkeypatch):
    root = write_nyud(tmp_path / "NYUDv2", size=(40, 48))
    monkeypatch.setenv("SCENEMTL_NYUD", str(root))
    config = load_config(CONFIGS / "hps.yaml", ["data.augment.crop=[32,40]", "data.augment.photometric=false"])
    info = dataset_info(config)
    tasks = build_tasks(config, info)
    transform = build_transform(config, tasks, info, train=True)
    dataset = NYUD(str(root), "train", TASKS)
    flips = set()
    for seed in range(12):
        sample = transform(dataset.sample(seed % 3), np.random.default_rng(seed))
        semseg, depth, normals, edge = (sample[k] for k in TASKS)
        assert semseg.shape == (32, 40) and depth.shape == (1, 32, 40) and sample["image"].shape == (3, 32, 40)
        labelled = semseg != 255
        stored = semseg[labelled] + 1  # back to the release's ids
        # depth was 1 + id/10 and is divided by the zoom: one common ratio on every labelled pixel
        ratio = depth[0][labelled] / (1 + stored / 10)
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
        # normals follow the same pixels, with x negated exactly when the sample was flipped
        valid = labelled & (normals.norm(dim=0) > 0)
        sign = torch.sign(normals[0][valid]) * torch.where(stored[valid[labelled]] % 2 == 0, 1.0, -1.0)
        assert bool((sign == sign[0]).all())
        flips.add(float(sign[0]))
        edge_known = labelled & (edge[0] != 255)
        assert torch.equal(edge[0][edge_known], (semseg[edge_known] == 6).float())
    assert flips == {1.0, -1.0}


def test_recipe_trains_and_evaluates_from_the_command_line(tmp_path, capsys):
    root = write_nyud(tmp_path / "NYUDv2", ids=(("a", "b", "c", "d"), ("e", "f")), size=(32, 40))
    shrink = [
        f"data.root={root}",
        f"out_dir={tmp_path / 'runs'}",
        "model.backbone.name=test_resnet",
        "model.backbone.weights=null",
        "model.options.head_channels=8",
        "model.options.decoder_stride=8",
        "data.augment.crop=[32,40]",
        "data.eval_pad=[32,40]",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "train.steps=2",
        "train.device=cpu",
        "train.eval_every=0",
        "train.checkpoint_every=0",
    ]
    config = str(CONFIGS / "hps.yaml")
    assert main(["train", config, "--quiet", *[x for item in shrink for x in ("--set", item)]]) == 0
    assert main(["eval", config, "--quiet", "--checkpoint", str(tmp_path / "runs"), *[x for item in shrink for x in ("--set", item)]]) == 0
    results = json.loads(next((tmp_path / "runs" / "eval").glob("results_val_step2.json")).read_text())
    metrics = results["metrics"]
    assert set(metrics) == set(TASKS) and 0 <= metrics["semseg"]["miou"] <= 1 and metrics["depth"]["rmse"] > 0
    assert "odsF" in metrics["edge"]
