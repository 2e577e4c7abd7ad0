"""SYNTHIA-RAND-CITYSCAPES: 16-bit PNG decoding, DenseMTL's split and resizing, `data check`, the recipe."""

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from scenemtl.config import load_config
from scenemtl.data.check import check_dataset
from scenemtl.fileio import read_png_opencv
from scenemtl.data.synthia import CLASS_NAMES, PALETTE, SYNTHIA_TO_TRAIN, Synthia
from scenemtl.engine.builder import build_tasks, build_transform, dataset_info
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "synthia"
TASKS = ["semseg", "depth"]
TRAIN_TO_SYNTHIA = {v: k for k, v in SYNTHIA_TO_TRAIN.items()}


def write_png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit PNG holding ``array``'s channels in file order (OpenCV writes BGR, hence the reversal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = array.astype(np.uint16)
    assert cv2.imwrite(str(path), np.ascontiguousarray(data[..., ::-1] if data.ndim == 3 else data))


def synthia_ids(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocky SYNTHIA class ids 0..22."""
    blocks = rng.integers(0, 23, (4, 4))
    return np.kron(blocks, np.ones((-(-h // 4), -(-w // 4)), dtype=np.int64))[:h, :w]


def write_synthia(root: Path, count: int = 10, size=(24, 32)) -> Path:
    """RAND_CITYSCAPES/{RGB, GT/LABELS, Depth/Depth}/<7 digits>.png as released.

    Targets are functions of the stored class id so that alignment can be checked: label red =
    id, green = an instance id ≥ 256 (its high byte is what Pillow would return), depth = 1 + id
    metres stored in centimetres in three equal channels, except 0 (void → depth 0) and 1 (sky →
    the 65535 code); the image's red channel is 10·id. Frame 0000003 has a one-channel depth PNG.
    """
    rng = np.random.default_rng(3)
    h, w = size
    for i in range(count):
        name = f"{i:07d}.png"
        ids = synthia_ids(rng, h, w)
        image = np.stack([ids * 10, rng.integers(0, 256, (h, w)), rng.integers(0, 256, (h, w))], -1)
        (root / "RGB").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(root / "RGB" / name)
        label = np.stack([ids, rng.integers(256, 3000, (h, w)), np.zeros((h, w), np.int64)], -1)
        write_png16(root / "GT" / "LABELS" / name, label)
        centimetres = np.where(ids == 0, 0, np.where(ids == 1, 65535, 100 * (1 + ids)))
        if i == 3:
            (root / "Depth" / "Depth").mkdir(parents=True, exist_ok=True)
            Image.fromarray(centimetres.astype(np.uint16)).save(root / "Depth" / "Depth" / name)
        else:
            write_png16(root / "Depth" / "Depth" / name, np.repeat(centimetres[..., None], 3, -1))
    return root


def test_16bit_pngs_are_read_in_file_channel_order_with_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 65536, (9, 13, 3)).astype(np.uint16)
    write_png16(tmp_path / "c3.png", array)
    decoded = read_png_opencv(tmp_path / "c3.png", "test PNG", "rewrite it")
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, array)
    # Pillow keeps only the high byte of a 16-bit colour PNG: the reason these go through OpenCV
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c3.png"))[..., 0], (array[..., 0] >> 8).astype(np.uint8))
    grey = rng.integers(0, 65536, (9, 13)).astype(np.uint16)
    write_png16(tmp_path / "same.png", np.stack([grey] * 3, -1))
    assert np.array_equal(read_png_opencv(tmp_path / "same.png", "test PNG", "", anydepth=True), grey)
    blob = (tmp_path / "c3.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"cut.png.*truncated; rewrite it"):
        read_png_opencv(tmp_path / "cut.png", "test PNG", "rewrite it")
    with pytest.raises(DataError, match=r"missing file .*none.png"):
        read_png_opencv(tmp_path / "none.png", "test PNG", "rewrite it")


def test_release_reads_into_the_contract(tmp_path):
    root = write_synthia(tmp_path / "data" / "RAND_CITYSCAPES")
    # data.root may also be the folder the archive was extracted into
    every = Synthia(str(tmp_path / "data"), "train", TASKS), Synthia(str(root), "val", TASKS)
    assert [len(d) for d in every] == [8, 2]
    assert every[0].variant.startswith("SYNTHIA-RAND-CITYSCAPES (GT/LABELS")
    dataset = Synthia(str(root), "train", TASKS, split_rule="densemtl")
    for index in range(len(dataset)):
        name = dataset.sample_id(index)
        sample = dataset.sample(index)
        assert sample["meta"] == {"id": name, "size": (24, 32), "labelled": TASKS}
        ids = np.asarray(Image.open(root / "RGB" / f"{name}.png"))[..., 0].astype(np.int64) // 10
        image = torch.from_numpy(np.array(Image.open(root / "RGB" / f"{name}.png"))).permute(2, 0, 1)
        assert sample["image"].dtype == torch.uint8 and torch.equal(sample["image"], image)
        expected = np.vectorize(lambda i: SYNTHIA_TO_TRAIN.get(int(i), 255))(ids)
        assert sample["semseg"].dtype == torch.int64 and np.array_equal(sample["semseg"].numpy(), expected)
        depth = sample["depth"][0].numpy()
        assert sample["depth"].shape == (1, 24, 32) and sample["depth"].dtype == torch.float32
        assert np.allclose(depth[ids > 1], (1 + ids[ids > 1]).astype(np.float32), rtol=1e-6)
        assert (depth[ids <= 1] == 0).all()  # void stored 0; sky stored 65535 (far_invalid)
    kept = Synthia(str(root), "train", ["depth"], far_invalid=False)
    raw = kept.sample(0)["depth"][0].numpy()
    ids0 = np.asarray(Image.open(root / "RGB" / f"{kept.sample_id(0)}.png"))[..., 0] // 10
    assert np.allclose(raw[ids0 == 1], 655.35)
    assert len(CLASS_NAMES) == 16 and PALETTE.shape == (16, 3) and tuple(PALETTE[0]) == (128, 64, 128)
    assert dataset.info.mean == (0.45, 0.45, 0.45) and dataset.info.std == (0.225, 0.225, 0.225)


def test_parsed_labels_and_depth_folder_variants(tmp_path):
    root = write_synthia(tmp_path / "RAND_CITYSCAPES", count=5)
    (root / "GT" / "LABELS").rename(root / "GT" / "OLD")
    (root / "parsed_LABELS").mkdir()
    for i in range(5):
        stored = read_png_opencv(root / "GT" / "OLD" / f"{i:07d}.png", "label", "")[..., 0].astype(np.uint8)
        Image.fromarray(stored).save(root / "parsed_LABELS" / f"{i:07d}.png")
    (root / "Depth" / "Depth").rename(root / "Depth2")
    (root / "Depth").rmdir()
    (root / "Depth2").rename(root / "Depth")
    dataset = Synthia(str(root), "train", TASKS)
    assert "parsed_LABELS" in dataset.variant
    sample = dataset.sample(0)
    ids = np.asarray(Image.open(root / "RGB" / f"{dataset.sample_id(0)}.png"))[..., 0].astype(np.int64) // 10
    assert np.array_equal(sample["semseg"].numpy(), np.vectorize(lambda i: SYNTHIA_TO_TRAIN.get(int(i), 255))(ids))
    assert sample["depth"].shape == (1, 24, 32)


def test_split_is_densemtls_rule_deterministic_and_disjoint(tmp_path):
    root = write_synthia(tmp_path / "RAND_CITYSCAPES", count=23, size=(8, 8))
    names = sorted(f"{i:07d}" for i in range(23))
    train, val = Synthia(str(root), "train", ["semseg"]).ids, Synthia(str(root), "val", ["semseg"]).ids
    assert (len(train), len(val)) == (18, 5)  # int(0.8 · 23)
    assert not set(train) & set(val) and set(train) | set(val) == set(names)
    assert train == Synthia(str(root), "train", ["depth"]).ids and val == Synthia(str(root), "val", ["depth"]).ids
    # DenseMTL: random.seed(42) then random.shuffle of the listing; train = first int(0.8·N)
    state = random.getstate()
    try:
        random.seed(42)
        first = list(names)
        random.shuffle(first)
        second = list(names)
        random.shuffle(second)  # the val dataset is built next, with the generator's next state
    finally:
        random.setstate(state)
    assert train == first[:18] and val == first[18:]
    assert Synthia(str(root), "val", ["semseg"], split_rule="densemtl").ids == second[18:]
    assert Synthia(str(root), "train", ["semseg"], split_rule="densemtl").ids == train
    other = Synthia(str(root), "train", ["semseg"], split_seed=7).ids
    assert sorted(other) != sorted(train) and len(other) == 18
    with pytest.raises(ConfigError, match="split_rule"):
        Synthia(str(root), "train", ["semseg"], split_rule="random")
    with pytest.raises(ConfigError, match="resize"):
        Synthia(str(root), "train", ["semseg"], resize=[12])


def test_resize_samples_labels_and_depth_at_the_same_pixels(tmp_path):
    root = write_synthia(tmp_path / "RAND_CITYSCAPES", count=5, size=(24, 32))
    full = Synthia(str(root), "train", TASKS, far_invalid=False)
    small = Synthia(str(root), "train", TASKS, far_invalid=False, resize=[15, 20])
    assert small.release_sizes == ((15, 20),)
    sample, original = small.sample(1), full.sample(1)
    assert sample["image"].shape == (3, 15, 20) and sample["meta"]["size"] == (15, 20)
    # the source pixel of every output pixel under Pillow's nearest neighbour (pixel centres, ⌊(x + ½)·src/dst⌋
    # up to rounding), and for contrast OpenCV's INTER_NEAREST rule ⌊x·src/dst⌋ that DenseMTL's depth uses
    index = Image.fromarray(np.arange(24 * 32, dtype=np.int32).reshape(24, 32))
    where = np.array(index.resize((20, 15), Image.Resampling.NEAREST))
    rows, cols = where[:, 0] // 32, where[0] % 32
    assert abs(rows - np.floor((np.arange(15) + 0.5) * 24 / 15)).max() <= 1
    assert not np.array_equal(rows, np.floor(np.arange(15) * 24 / 15))
    assert torch.equal(sample["semseg"], original["semseg"][rows][:, cols])
    assert torch.equal(sample["depth"], original["depth"][:, rows][:, :, cols])
    lanczos = Image.fromarray(original["image"].permute(1, 2, 0).numpy()).resize((20, 15), Image.Resampling.LANCZOS)
    assert torch.equal(sample["image"], torch.from_numpy(np.array(lanczos)).permute(2, 0, 1))


def test_data_check_finds_every_planted_defect(tmp_path):
    root = write_synthia(tmp_path / "RAND_CITYSCAPES", count=10)
    clean = check_dataset("synthia", str(root))
    assert clean.ok, clean.format()
    assert clean.samples == {"train": 8, "val": 2}
    assert len(clean.warnings) == 10 and "the release's are 760×1280" in clean.warnings[0]  # the fixture is 24×32
    (root / "Depth" / "Depth" / "0000002.png").unlink()
    blob = (root / "GT" / "LABELS" / "0000005.png").read_bytes()
    (root / "GT" / "LABELS" / "0000005.png").write_bytes(blob[: len(blob) // 2])
    write_png16(root / "GT" / "LABELS" / "0000007.png", np.zeros((20, 32, 3), np.uint16))
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "RGB" / "0000099.png")  # a frame without labels
    report = check_dataset("synthia", str(root))
    text = "\n".join(report.problems)
    assert not report.ok
    assert "Depth/Depth/0000002.png" in text and "missing file" in text
    assert "GT/LABELS/0000005.png" in text and "truncated" in text
    assert "GT/LABELS/0000007.png: the label map is (20, 32) but its image 0000007.png is (24, 32)" in text
    assert "GT/LABELS/0000099.png" in text
    assert len(report.problems) == 4, text
    with pytest.raises(ConfigError, match="data.root is not set"):
        Synthia(None, "train", TASKS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no folder .*empty/RGB"):
        Synthia(str(tmp_path / "empty"), "train", TASKS)


def test_recipe_augmentation_flips_every_target_together(tmp_path, monkeypatch):
    root = write_synthia(tmp_path / "RAND_CITYSCAPES", count=5, size=(24, 32))
    monkeypatch.setenv("SCENEMTL_SYNTHIA", str(root))
    config = load_config(CONFIGS / "hps.yaml", ["data.options.resize=null"])
    assert config.data.augment.flip and config.data.augment.scale is None and config.data.augment.crop is None
    info = dataset_info(config)
    tasks = build_tasks(config, info)
    transform = build_transform(config, tasks, info, train=True)
    dataset = Synthia(str(root), "train", TASKS, **config.data.options)
    flips = set()
    for seed in range(10):
        raw = dataset.sample(seed % 4)
        sample = transform(dataset.sample(seed % 4), np.random.default_rng(seed))
        semseg, depth = sample["semseg"], sample["depth"][0]
        assert semseg.shape == (24, 32) and sample["image"].shape == (3, 24, 32)
        flipped = not torch.equal(semseg, raw["semseg"])
        assert torch.equal(semseg, raw["semseg"].flip(-1) if flipped else raw["semseg"])
        flips.add(flipped)
        # depth = 1 + SYNTHIA id on every mapped class but sky: the same pixels after the flip
        known = (semseg != 255) & (semseg != 9)
        synthia = torch.tensor([TRAIN_TO_SYNTHIA[int(c)] for c in semseg[known]], dtype=torch.float32)
        assert torch.allclose(depth[known], 1 + synthia)
        # the image's red channel (10·id, normalised with DenseMTL's 0.45 / 0.225) moves with them
        red = torch.round((sample["image"][0] * 0.225 + 0.45) * 255)
        assert torch.allclose(red[known], 10 * synthia)
    assert flips == {True, False}


def test_recipe_trains_and_evaluates(tmp_path, monkeypatch):
    root = write_synthia(tmp_path / "RAND_CITYSCAPES", count=6, size=(24, 32))
    monkeypatch.setenv("SCENEMTL_SYNTHIA", str(root))
    cfg = load_config(
        CONFIGS / "hps.yaml",
        [
            f"out_dir={tmp_path / 'runs' / '{name}'}",
            "model.backbone.name=test_resnet",
            "model.backbone.weights=null",
            "model.options.head_channels=8",
            "data.options.resize=null",
            "data.eval_pad=[24,32]",
            "data.num_workers=0",
            "train.steps=2",
            "train.device=cpu",
            "train.eval_every=0",
            "train.checkpoint_every=0",
        ],
    )
    assert cfg.train.optimizer == "adam" and cfg.train.schedule == "step" and cfg.train.decay_every == 30000
    assert cfg.data.batch_size == 2 and cfg.train.grad_clip == 10.0 and not cfg.train.init_output_bias
    assert cfg.tasks["semseg"].weight == 50.0 and cfg.model.backbone.options == {"output_stride": 16}
    report = Trainer(cfg, progress=False, log=False).fit()
    metrics = report["metrics"]
    assert set(metrics) == {"semseg", "depth"}
    assert 0 <= metrics["semseg"]["miou"] <= 100 and metrics["depth"]["rmse"] > 0  # mIoU in percent
