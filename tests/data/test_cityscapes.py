"""Cityscapes: the official release (PNG labels, uint16 disparity, camera JSON) and MTAN's .npy copy,
written in their real layouts and read through the real loaders; both recipes train."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenemtl.config import load_config
from scenemtl.data.check import check_dataset
from scenemtl.data.cityscapes import (
    Cityscapes,
    Cityscapes7,
    Cityscapes16,
    CityscapesNpy,
    CityscapesNpy19,
)
from scenemtl.engine.builder import build_tasks, build_transform, dataset_info
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CITIES = {"train": {"aachen": 2, "bochum": 2}, "val": {"frankfurt": 2}, "test": {"berlin": 1}}
# disparity PNG values written, and the image's green channel that encodes each (index × 30)
P_VALUES = [0, 1, 2, 257, 513, 2049, 30000]
# cityscapesScripts' label id → train id, and DenseMTL's cls16 (written out here, not imported)
TRAIN_19 = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
TRAIN_16 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 23: 9, 24: 10, 25: 11, 26: 12, 28: 13, 32: 14, 33: 15}
CATEGORY_7 = {
    7: 0,
    8: 0,
    11: 1,
    12: 1,
    13: 1,
    17: 2,
    19: 2,
    20: 2,
    21: 3,
    22: 3,
    23: 4,
    24: 5,
    25: 5,
    26: 6,
    27: 6,
    28: 6,
    31: 6,
    32: 6,
    33: 6,
}


def expected_labels(ids: np.ndarray, table: dict) -> np.ndarray:
    out = np.full(ids.shape, 255, np.int64)
    for label_id, cls in table.items():
        out[ids == label_id] = cls
    return out


def expected_depth(p: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    d = (p.astype(np.float64) - 1) / 256
    return np.where(d > 0, baseline * fx / np.where(d > 0, d, 1), 0.0)


def write_cityscapes(root: Path, size=(16, 32), small: bool = False, cities: dict = CITIES) -> Path:
    """The official layout: leftImg8bit/, gtFine/ labelIds, disparity/ uint16, camera/ JSON (+ a half-size copy)."""
    rng = np.random.default_rng(0)
    h, w = size
    for split, cities in cities.items():
        for city, count in cities.items():
            for k in range(count):
                stem = f"{city}_{k:06d}_{19 + k:06d}"
                folders = {name: root / name / split / city for name in ("leftImg8bit", "gtFine", "disparity", "camera")}
                for folder in folders.values():
                    folder.mkdir(parents=True, exist_ok=True)
                ids = rng.integers(0, 34, (h, w)).astype(np.uint8)
                which = rng.integers(0, len(P_VALUES), (h, w))
                p = np.array(P_VALUES, np.uint16)[which]
                image = np.stack([ids * 7, which * 30, rng.integers(0, 256, (h, w))], axis=-1).astype(np.uint8)
                Image.fromarray(image).save(folders["leftImg8bit"] / f"{stem}_leftImg8bit.png")
                Image.fromarray(ids, mode="L").save(folders["gtFine"] / f"{stem}_gtFine_labelIds.png")
                Image.fromarray(p).save(folders["disparity"] / f"{stem}_disparity.png")
                camera = {
                    "extrinsic": {"baseline": 0.2 + 0.01 * k, "pitch": 0.04, "x": 1.7},
                    "intrinsic": {"fx": 2000.0 + k, "fy": 2000.0, "u0": w / 2, "v0": h / 2},
                }
                (folders["camera"] / f"{stem}_camera.json").write_text(json.dumps(camera))
                if small:
                    copy = root / "leftImg8bit_small" / split / city
                    copy.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).resize((w // 2, h // 2)).save(copy / f"{stem}_leftImg8bit.png")
    return root


def stored(root: Path, split: str, stem: str):
    city = stem.split("_")[0]
    ids = np.array(Image.open(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"))
    p = np.array(Image.open(root / "disparity" / split / city / f"{stem}_disparity.png"))
    camera = json.loads((root / "camera" / split / city / f"{stem}_camera.json").read_text())
    return ids, p, camera["extrinsic"]["baseline"], camera["intrinsic"]["fx"]


def test_release_reads_into_the_contract(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    train = Cityscapes(str(root), "train", ["semseg", "depth"])
    assert len(train) == 4 and len(Cityscapes(str(root), "test", ["semseg"])) == 1
    assert [train.sample_id(i) for i in range(4)] == [
        "aachen_000000_000019",
        "aachen_000001_000020",
        "bochum_000000_000019",
        "bochum_000001_000020",
    ]
    sample = train.sample(1)
    stem = "aachen_000001_000020"
    image = np.array(Image.open(root / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png"))
    assert sample["image"].dtype == torch.uint8 and torch.equal(sample["image"], torch.from_numpy(image).permute(2, 0, 1))
    ids, p, baseline, fx = stored(root, "train", stem)
    assert p.dtype == np.uint16 and baseline == pytest.approx(0.21) and fx == 2001.0
    assert sample["semseg"].dtype == torch.int64
    assert np.array_equal(sample["semseg"].numpy(), expected_labels(ids, TRAIN_19))
    depth = sample["depth"]
    assert depth.dtype == torch.float32 and depth.shape == (1, 16, 32)
    assert np.allclose(depth[0].numpy(), expected_depth(p, baseline, fx), rtol=1e-6)
    assert bool((depth[0][torch.from_numpy(p <= 1)] == 0).all())  # p = 0 (no match) and p = 1 (d = 0): invalid
    assert depth[0][torch.from_numpy(p == 257)].unique().tolist() == pytest.approx([0.21 * 2001.0])  # d = 1 px
    assert sample["meta"] == {"id": stem, "size": (16, 32), "labelled": ["semseg", "depth"]}
    assert len(Cityscapes.info.class_names["semseg"]) == 19 and Cityscapes.info.palettes["semseg"][0].tolist() == [128, 64, 128]


def test_class_sets_16_and_7(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    ids = stored(root, "val", "frankfurt_000000_000019")[0]
    assert np.array_equal(Cityscapes16(str(root), "val", ["semseg"]).sample(0)["semseg"].numpy(), expected_labels(ids, TRAIN_16))
    assert np.array_equal(Cityscapes7(str(root), "val", ["semseg"]).sample(0)["semseg"].numpy(), expected_labels(ids, CATEGORY_7))
    names16 = Cityscapes16.info.class_names["semseg"]
    assert len(names16) == 16 and not {"truck", "terrain", "train"} & set(names16) and names16[13] == "bus"
    assert Cityscapes7.info.class_names["semseg"] == ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]
    assert Cityscapes16.info.palettes["semseg"].shape == (16, 3) and Cityscapes7.info.palettes["semseg"].shape == (7, 3)


def test_small_copy_resamples_labels_and_depth_to_its_images(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes", small=True)
    dataset = Cityscapes(str(root), "val", ["semseg", "depth"], image_folder="leftImg8bit_small")
    sample = dataset.sample(1)
    assert sample["image"].shape == (3, 8, 16) and sample["semseg"].shape == (8, 16) and sample["depth"].shape == (1, 8, 16)
    ids, p, baseline, fx = stored(root, "val", "frankfurt_000001_000020")
    # nearest at pixel centres: output pixel i reads input pixel 2i + 1
    assert np.array_equal(sample["semseg"].numpy(), expected_labels(ids[1::2, 1::2], TRAIN_19))
    assert np.allclose(sample["depth"][0].numpy(), expected_depth(p[1::2, 1::2], baseline, fx), rtol=1e-6)
    assert dataset.release_sizes == () and "leftImg8bit_small" in dataset.variant
    # a map of another aspect ratio than its image is still an error
    Image.fromarray(np.zeros((16, 20), np.uint8), mode="L").save(
        root / "gtFine" / "val" / "frankfurt" / "frankfurt_000001_000020_gtFine_labelIds.png"
    )
    with pytest.raises(DataError, match=r"labelIds.png: the semseg map is 16×20 but its image .* is 8×16"):
        dataset.sample(1)


def test_size_option_resizes_image_labels_and_depth(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    dataset = Cityscapes16(str(root), "train", ["semseg", "depth"], size=[8, 16], max_depth=300.0)
    sample = dataset.sample(0)
    assert sample["image"].shape == (3, 8, 16) and sample["meta"]["size"] == (8, 16) and dataset.release_sizes == ((8, 16),)
    ids, p, baseline, fx = stored(root, "train", "aachen_000000_000019")
    assert np.array_equal(sample["semseg"].numpy(), expected_labels(ids[1::2, 1::2], TRAIN_16))
    depth = expected_depth(p[1::2, 1::2], baseline, fx)
    depth[depth >= 300.0] = 0  # max_depth: 400 m (d = 1 px) and beyond become invalid, 200 m stays
    assert np.allclose(sample["depth"][0].numpy(), depth, rtol=1e-6) and 0 < sample["depth"].max() < 300
    with pytest.raises(ConfigError, match=r"data.options.size must be \[height, width\]"):
        Cityscapes(str(root), "train", ["semseg"], size=[8])


def test_broken_copies_name_the_file_and_the_fix(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    with pytest.raises(ConfigError, match="data.root is not set"):
        Cityscapes(None, "train", ["semseg"])
    with pytest.raises(DataError, match=r"no folder .*leftImg8bit_small/train .*gtFine_trainvaltest.zip"):
        Cityscapes(str(root), "train", ["semseg"], image_folder="leftImg8bit_small")
    label = root / "gtFine" / "train" / "bochum" / "bochum_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.full((16, 32), 40, np.uint8), mode="L").save(label)
    dataset = Cityscapes(str(root), "train", ["semseg", "depth"])
    with pytest.raises(DataError, match="ids go up to 40, Cityscapes label ids are 0..33"):
        dataset.sample(2)
    camera = root / "camera" / "train" / "aachen" / "aachen_000000_000019_camera.json"
    camera.write_text(json.dumps({"intrinsic": {"fx": 2000.0}}))
    with pytest.raises(DataError, match="camera.json: no extrinsic.baseline"):
        dataset.sample(0)
    (root / "disparity" / "train").rename(root / "disparity" / "old")
    with pytest.raises(DataError, match=r"no folder .*disparity/train \(the depth labels of train\)"):
        Cityscapes(str(root), "train", ["depth"])


def test_data_check_reports_ok_then_every_planted_defect(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    clean = check_dataset("cityscapes", str(root))
    assert clean.ok, clean.problems
    assert clean.samples == {"train": 4, "val": 2, "test": 1} and "19 classes" in clean.variant
    assert any("1024×2048" in warning for warning in clean.warnings)  # the fixture is smaller than the release
    train = root / "gtFine" / "train"
    (root / "camera" / "train" / "aachen" / "aachen_000000_000019_camera.json").unlink()  # missing file
    png = root / "disparity" / "train" / "aachen" / "aachen_000001_000020_disparity.png"
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])  # truncated PNG
    Image.fromarray(np.zeros((12, 32), np.uint8), mode="L").save(
        train / "bochum" / "bochum_000000_000019_gtFine_labelIds.png"
    )  # wrong size
    (train / "bochum" / "bochum_000001_000020_gtFine_labelIds.png").unlink()  # an image without its labels
    report = check_dataset("cityscapes", str(root))
    text = "\n".join(report.problems)
    assert "aachen_000000_000019_camera.json" in text and "missing file" in text
    assert "aachen_000001_000020_disparity.png" in text and "truncated" in text
    assert "bochum_000000_000019_gtFine_labelIds.png: the semseg map is 12×32 but its image" in text
    assert "bochum_000001_000020_gtFine_labelIds.png" in text
    assert len(report.problems) == 4 and report.samples["val"] == 2


def test_recipe_augmentation_keeps_targets_aligned(tmp_path, monkeypatch):
    root = write_cityscapes(tmp_path / "cityscapes")
    monkeypatch.setenv("SCENEMTL_CITYSCAPES", str(root))
    config = load_config(CONFIGS / "cityscapes" / "hps.yaml", ["data.options.size=null"])
    assert config.data.augment.flip and config.data.augment.scale is None and config.data.augment.crop is None
    info = dataset_info(config)
    tasks = build_tasks(config, info)
    transform = build_transform(config, tasks, info, train=True)
    dataset = Cityscapes16(str(root), "train", ["semseg", "depth"], **config.data.options)
    mean, std = torch.tensor(info.mean).view(3, 1, 1), torch.tensor(info.std).view(3, 1, 1)
    lookup = torch.full((256,), 255, dtype=torch.int64)
    for label_id, cls in TRAIN_16.items():
        lookup[label_id] = cls
    flips = set()
    for seed in range(8):
        raw = dataset.sample(seed % 4)
        sample = transform(dict(raw), np.random.default_rng(seed))
        pixels = ((sample["image"] * std + mean) * 255).round().long()
        # the image encodes each pixel's label id (red / 7) and disparity (green / 30)
        assert torch.equal(sample["semseg"], lookup[pixels[0] // 7])
        p = torch.tensor(P_VALUES)[pixels[1] // 30].numpy()
        city = "aachen" if seed % 4 < 2 else "bochum"
        camera = json.loads(next((root / "camera" / "train" / city).glob(f"*{raw['meta']['id']}*")).read_text())
        depth = expected_depth(p, camera["extrinsic"]["baseline"], camera["intrinsic"]["fx"])
        depth[depth >= 80.0] = 0
        assert np.allclose(sample["depth"][0].numpy(), depth, rtol=1e-6)
        flips.add(torch.equal(sample["semseg"], raw["semseg"]))
    assert flips == {True, False}  # some samples flipped, some not


def write_cityscapes_npy(root: Path, counts=(4, 2), size=(32, 64)) -> Path:
    """MTAN's copy: {train,val}/{image,label_7,label_19,depth}/<i>.npy, float arrays, −1 / 0 invalid."""
    rng = np.random.default_rng(1)
    h, w = size
    for split, n in zip(("train", "val"), counts):
        for folder in ("image", "label_7", "label_19", "depth"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", (rng.integers(0, 256, (h, w, 3)) / 255.0).astype(np.float32))
            for classes in (7, 19):
                label = rng.integers(0, classes, (h, w)).astype(np.float32)
                label[:2] = -1.0
                np.save(root / split / f"label_{classes}" / f"{i}.npy", label)
            inverse = rng.uniform(0.01, 0.49, (h, w, 1)).astype(np.float32)
            inverse[:, :3] = 0.0
            np.save(root / split / "depth" / f"{i}.npy", inverse)
    return root


def test_npy_copy_reads_into_the_contract(tmp_path):
    root = write_cityscapes_npy(tmp_path / "cityscapes2")
    train = CityscapesNpy(str(root), "train", ["semseg", "inverse_depth"])
    assert len(train) == 4 and train.info.tasks == ("semseg", "inverse_depth") and train.info.std == (1.0, 1.0, 1.0)
    sample = train.sample(2)
    image = np.load(root / "train" / "image" / "2.npy")
    assert torch.equal(sample["image"], torch.from_numpy(np.rint(image * 255).astype(np.uint8)).permute(2, 0, 1))
    label = np.load(root / "train" / "label_7" / "2.npy")
    assert bool((sample["semseg"][:2] == 255).all())
    assert torch.equal(sample["semseg"][2:], torch.from_numpy(label[2:]).long()) and int(sample["semseg"][2:].max()) < 7
    inverse = np.load(root / "train" / "depth" / "2.npy")
    assert sample["inverse_depth"].shape == (1, 32, 64)
    assert torch.equal(sample["inverse_depth"][0], torch.from_numpy(inverse[..., 0]))
    assert sample["meta"] == {"id": "train_0002", "size": (32, 64), "labelled": ["semseg", "inverse_depth"]}
    nineteen = CityscapesNpy19(str(root), "val", ["semseg"]).sample(1)["semseg"]
    assert torch.equal(nineteen[2:], torch.from_numpy(np.load(root / "val" / "label_19" / "1.npy")[2:]).long())
    assert len(CityscapesNpy19.info.class_names["semseg"]) == 19 and len(CityscapesNpy.info.class_names["semseg"]) == 7
    nested = tmp_path / "download"
    nested.mkdir()
    root.rename(nested / "cityscapes2")
    assert len(CityscapesNpy(str(nested), "val", ["inverse_depth"])) == 2  # the archive's own folder is found


def test_npy_broken_copies_and_data_check(tmp_path):
    root = write_cityscapes_npy(tmp_path / "cityscapes2")
    with pytest.raises(ConfigError, match="data.root is not set"):
        CityscapesNpy(None, "train", ["semseg"])
    with pytest.raises(DataError, match=r"no folder .*/train"):
        CityscapesNpy(str(tmp_path / "cityscapes2" / "train"), "train", ["semseg"])
    (root / "val" / "label_7").rename(root / "val" / "labels_hidden")
    with pytest.raises(DataError, match="label_7 for task 'semseg' .*this copy has label_19"):
        CityscapesNpy(str(root), "val", ["semseg"])
    (root / "val" / "labels_hidden").rename(root / "val" / "label_7")
    clean = check_dataset("cityscapes_npy", str(root))
    assert clean.ok, clean.problems
    assert clean.samples == {"train": 4, "val": 2}
    assert clean.warnings and "128×256 or 256×512" in clean.warnings[0]  # the fixture is smaller than the release
    (root / "train" / "depth" / "0.npy").unlink()  # missing file
    npy = root / "train" / "label_7" / "1.npy"
    npy.write_bytes(npy.read_bytes()[: len(npy.read_bytes()) // 2])  # truncated
    np.save(root / "train" / "depth" / "2.npy", np.zeros((32, 60, 1), np.float32))  # wrong size
    np.save(root / "train" / "image" / "5.npy", np.zeros((32, 64, 3), np.float32))  # image 4.npy missing
    report = check_dataset("cityscapes_npy", str(root))
    text = "\n".join(report.problems)
    assert "depth/0.npy" in text and "missing file" in text
    assert "label_7/1.npy" in text and "cannot read" in text
    assert "depth/2.npy: the inverse_depth map is 32×60 but its image" in text
    assert "image/4.npy" in text  # ids are 0..N−1: 5.npy exists, so 4.npy is missing
    assert "label_7/5.npy" in text
    assert len(report.problems) == 5 and report.samples["train"] == 6


@pytest.mark.parametrize(
    "config, overrides",
    [
        ("cityscapes/hps.yaml", ["data.options.size=null", "data.eval_pad=[16,32]", "model.backbone.options={}"]),
        ("cityscapes_npy/hps.yaml", []),
        ("cityscapes_npy/mtan.yaml", ["model.options.filters=[4,8,8,16,16]"]),
    ],
)
def test_recipes_train_and_evaluate_on_the_releases(tmp_path, monkeypatch, config, overrides):
    monkeypatch.setenv("SCENEMTL_CITYSCAPES", str(write_cityscapes(tmp_path / "cityscapes")))
    monkeypatch.setenv("SCENEMTL_CITYSCAPES_NPY", str(write_cityscapes_npy(tmp_path / "cityscapes2")))
    hps = (
        [
            "model.backbone.name=test_resnet",
            "model.backbone.weights=null",
            "model.options.head_channels=8",
            "model.options.decoder_stride=8",
        ]
        if "hps" in config
        else []
    )
    cfg = load_config(
        CONFIGS / config,
        [
            f"out_dir={tmp_path / 'runs' / '{name}'}",
            "train.steps=2",
            "train.decay_every=1",
            "train.eval_every=0",
            "train.checkpoint_every=0",
            "data.num_workers=0",
            "data.batch_size=2",
            "data.eval_batch_size=2",
            "train.device=cpu",
            *hps,
            *overrides,
        ],
    )
    assert cfg.train.optimizer == "adam" and cfg.train.schedule == "step" and not cfg.train.init_output_bias
    trainer = Trainer(cfg, progress=False, log=False)
    report = trainer.fit()
    gamma = 0.1 if config.startswith("cityscapes/") else 0.5
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(1e-4 * gamma**2)
    metrics = report["metrics"]
    depth_task = "depth" if config.startswith("cityscapes/") else "inverse_depth"
    assert set(metrics) == {"semseg", depth_task}
    assert 0 <= metrics["semseg"]["miou"] <= 100 and metrics[depth_task]["abs_err"] > 0
