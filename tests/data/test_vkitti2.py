"""Virtual KITTI 2: colour-coded classes, centimetre depth, DenseMTL's frames and split, `data check`, the recipe."""

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenemtl.config import load_config
from scenemtl.data.check import check_dataset
from scenemtl.data.vkitti2 import CLASS_NAMES, PALETTE, VirtualKitti2
from scenemtl.engine.builder import build_tasks, build_transform, dataset_info
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "vkitti2"
TASKS = ["semseg", "depth"]
UNKNOWN = 14  # fixture id for a colour outside the table: (0, 0, 0) "Undefined" or a stray colour


def class_ids(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocky class ids 0..13, and 14 for pixels of no class."""
    blocks = rng.integers(0, 15, (4, 6))
    return np.kron(blocks, np.ones((-(-h // 4), -(-w // 6)), dtype=np.int64))[:h, :w]


def colours_of(ids: np.ndarray) -> np.ndarray:
    """The release's colour coding; id 14 becomes Undefined (0, 0, 0) in the top half, a stray colour below."""
    table = np.concatenate([PALETTE, [[0, 0, 0]]]).astype(np.uint8)
    colours = table[ids]
    stray = (ids == UNKNOWN) & (np.arange(ids.shape[0])[:, None] >= ids.shape[0] // 2)
    colours[stray] = (1, 2, 3)
    return colours


def write_vkitti2(root: Path, frames=(("Scene01", 6), ("Scene02", 4)), size=(20, 36), layout: str = "merged") -> Path:
    """Scene*/<variation>/frames/{rgb,classSegmentation,depth}/Camera_<c>/… as the three archives extract.

    Depth = 1 + class id metres (stored in centimetres), 65535 on the sky (class 1) as the release,
    so that alignment can be checked. ``layout`` 'merged' (one tree), 'readme' (DenseMTL's README:
    rgb/, classSegmentation/, depth/ each holding Scene*/) or 'archives' (vkitti_2.0.3_<modality>/).
    Decoys that DenseMTL does not read: a 'clone' frame and a Camera_1 frame.
    """
    rng = np.random.default_rng(5)
    h, w = size

    def base(modality: str) -> Path:
        return {"merged": root, "readme": root / modality, "archives": root / f"vkitti_2.0.3_{modality}"}[layout]

    def folder(modality: str, scene: str, variation: str = "15-deg-left", camera: str = "Camera_0") -> Path:
        path = base(modality) / scene / variation / "frames" / modality / camera
        path.mkdir(parents=True, exist_ok=True)
        return path

    for scene, count in frames:
        for f in range(count):
            ids = class_ids(rng, h, w)
            image = np.stack([ids * 12, rng.integers(0, 256, (h, w)), rng.integers(0, 256, (h, w))], -1)
            Image.fromarray(image.astype(np.uint8)).save(folder("rgb", scene) / f"rgb_{f:05d}.jpg", quality=95)
            Image.fromarray(colours_of(ids)).save(folder("classSegmentation", scene) / f"classgt_{f:05d}.png")
            centimetres = np.where(ids == 1, 65535, 100 * (1 + ids)).astype(np.uint16)
            Image.fromarray(centimetres).save(folder("depth", scene) / f"depth_{f:05d}.png")
    decoy = np.zeros((h, w, 3), np.uint8)
    Image.fromarray(decoy).save(folder("rgb", frames[0][0], variation="clone") / "rgb_00000.jpg")
    Image.fromarray(decoy).save(folder("rgb", frames[0][0], camera="Camera_1") / "rgb_00000.jpg")
    return root


def expected_classes(colours: np.ndarray) -> np.ndarray:
    out = np.full(colours.shape[:2], 255, dtype=np.int64)
    for i, colour in enumerate(PALETTE):
        out[(colours == colour).all(-1)] = i
    return out


def test_release_reads_into_the_contract(tmp_path):
    root = write_vkitti2(tmp_path / "vkitti2")
    train, val = VirtualKitti2(str(root), "train", TASKS), VirtualKitti2(str(root), "val", TASKS)
    assert (len(train), len(val)) == (8, 2)  # the 10 frames of 15-deg-left/Camera_0; decoys left out
    assert "15-deg-left, Camera_0, 2 scenes, merged" in train.variant
    skies = 0
    for dataset in (train, val):
        for index in range(len(dataset)):
            name = dataset.sample_id(index)
            scene, variation, camera, frame = name.split("/")
            frames = root / scene / variation / "frames"
            sample = dataset.sample(index)
            assert sample["meta"] == {"id": name, "size": (20, 36), "labelled": TASKS}
            jpeg = np.array(Image.open(frames / "rgb" / camera / f"rgb_{frame}.jpg"))
            image = torch.from_numpy(jpeg).permute(2, 0, 1)
            assert sample["image"].dtype == torch.uint8 and torch.equal(sample["image"], image)
            colours = np.array(Image.open(frames / "classSegmentation" / camera / f"classgt_{frame}.png"))
            semseg = sample["semseg"].numpy()
            assert sample["semseg"].dtype == torch.int64 and np.array_equal(semseg, expected_classes(colours))
            assert (semseg == 255).any()  # Undefined and the stray colour are ignored
            stored = np.array(Image.open(frames / "depth" / camera / f"depth_{frame}.png"))
            depth = sample["depth"][0].numpy()
            assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (1, 20, 36)
            assert np.array_equal(depth[stored != 65535], stored[stored != 65535].astype(np.float32) / 100)
            assert (depth[stored == 65535] == 0).all()  # sky → invalid
            skies += int((stored == 65535).sum())
            valid = (semseg != 255) & (semseg != 1)
            assert np.allclose(depth[valid], 1 + semseg[valid])
    assert skies > 0
    kept = VirtualKitti2(str(root), "train", ["depth"], far_invalid=False)
    far = torch.cat([kept.sample(i)["depth"] for i in range(len(kept))])
    assert torch.isclose(far.max(), torch.tensor(655.35))
    assert len(CLASS_NAMES) == 14 and CLASS_NAMES[1] == "sky" and tuple(PALETTE[13]) == (0, 139, 139)
    assert train.info.mean == (0.45, 0.45, 0.45) and train.release_sizes == ((375, 1242),)


@pytest.mark.parametrize("layout", ["readme", "archives"])
def test_one_folder_per_archive_layouts(tmp_path, layout):
    root = write_vkitti2(tmp_path / "vkitti2", frames=(("Scene06", 3),), layout=layout)
    dataset = VirtualKitti2(str(root), "val", TASKS)
    assert "one folder per archive" in dataset.variant and len(dataset) == 1
    sample = dataset.sample(0)
    valid = (sample["semseg"] != 255) & (sample["semseg"] != 1)
    assert torch.allclose(sample["depth"][0][valid], 1.0 + sample["semseg"][valid])


def test_split_is_densemtls_on_the_same_frames(tmp_path):
    root = write_vkitti2(tmp_path / "vkitti2", frames=(("Scene01", 9), ("Scene02", 5), ("Scene20", 7)), size=(8, 12))
    # DenseMTL's prepare_filenames: every file under the root, sorted; those in 15-deg-left/frames/rgb/Camera_0;
    # random.shuffle after random.seed(42); train = the first int(0.8 N); val from the next shuffle
    listing = sorted(os.path.join(top, f).replace(os.sep, "/") for top, _, files in os.walk(root) for f in files)
    files = [p for p in listing if "15-deg-left/frames/rgb/Camera_0" in p]
    state = random.getstate()
    try:
        random.seed(42)
        first, second = list(files), list(files)
        random.shuffle(first)
        random.shuffle(second)
    finally:
        random.setstate(state)

    def to_id(path: str) -> str:
        parts = path.split("/")
        return f"{parts[-6]}/{parts[-5]}/{parts[-2]}/{parts[-1][len('rgb_') : -len('.jpg')]}"

    cut = int(len(files) * 0.8)
    train = VirtualKitti2(str(root), "train", ["semseg"]).ids
    val = VirtualKitti2(str(root), "val", ["semseg"]).ids
    assert (len(files), cut) == (21, 16)
    assert train == [to_id(p) for p in first[:cut]]  # DenseMTL's training frames, in its order
    assert val == [to_id(p) for p in first[cut:]] and not set(train) & set(val)
    assert set(train) | set(val) == {to_id(p) for p in files}
    assert VirtualKitti2(str(root), "val", ["semseg"], split_rule="densemtl").ids == [to_id(p) for p in second[cut:]]
    assert VirtualKitti2(str(root), "val", ["depth"]).ids == val  # stable across instances and tasks
    clone = VirtualKitti2(str(root), "val", [], variation="clone")  # the decoy frame (no labels)
    assert clone.ids == ["Scene01/clone/Camera_0/00000"]
    assert len(VirtualKitti2(str(root), "train", [], camera="Camera_1")) == 0  # int(0.8 · 1) = 0
    with pytest.raises(ConfigError, match="Did you mean '15-deg-left'"):
        VirtualKitti2(str(root), "train", TASKS, variation="15-deg-lft")
    with pytest.raises(ConfigError, match="split_seed"):
        VirtualKitti2(str(root), "train", TASKS, split_seed="42")


def test_resize_keeps_labels_and_depth_on_the_same_pixels(tmp_path):
    root = write_vkitti2(tmp_path / "vkitti2", frames=(("Scene01", 5),))
    small = VirtualKitti2(str(root), "train", TASKS, resize=[16, 30], far_invalid=False)
    full = VirtualKitti2(str(root), "train", TASKS, far_invalid=False)
    sample, original = small.sample(2), full.sample(2)
    assert sample["image"].shape == (3, 16, 30) and sample["meta"]["size"] == (16, 30)
    index = Image.fromarray(np.arange(20 * 36, dtype=np.int32).reshape(20, 36))
    where = torch.from_numpy(np.array(index.resize((30, 16), Image.Resampling.NEAREST)).astype(np.int64))
    assert torch.equal(sample["semseg"], original["semseg"].flatten()[where])
    assert torch.equal(sample["depth"][0], original["depth"][0].flatten()[where])
    assert small.release_sizes == ((16, 30),)


def test_data_check_finds_every_planted_defect(tmp_path):
    root = write_vkitti2(tmp_path / "vkitti2")
    clean = check_dataset("vkitti2", str(root))
    assert clean.ok, clean.format()
    assert clean.samples == {"train": 8, "val": 2} and "375×1242" in clean.warnings[0]
    frames = root / "Scene01" / "15-deg-left" / "frames"
    (frames / "depth" / "Camera_0" / "depth_00001.png").unlink()
    blob = (frames / "classSegmentation" / "Camera_0" / "classgt_00002.png").read_bytes()
    (frames / "classSegmentation" / "Camera_0" / "classgt_00002.png").write_bytes(blob[: len(blob) // 2])
    Image.fromarray(np.zeros((20, 30), np.uint16)).save(frames / "depth" / "Camera_0" / "depth_00003.png")
    Image.fromarray(np.zeros((20, 36, 3), np.uint8)).save(frames / "rgb" / "Camera_0" / "rgb_00099.jpg")
    report = check_dataset("vkitti2", str(root))
    text = "\n".join(report.problems)
    assert "depth/Camera_0/depth_00001.png" in text and "missing file" in text
    assert "classSegmentation/Camera_0/classgt_00002.png" in text and "truncated" in text
    assert "depth/Camera_0/depth_00003.png: the depth map is (20, 30) but its image rgb_00003.jpg is (20, 36)" in text
    assert "classSegmentation/Camera_0/classgt_00099.png" in text
    assert len(report.problems) == 4, text
    with pytest.raises(ConfigError, match="data.root is not set"):
        VirtualKitti2(None, "train", TASKS)
    (tmp_path / "empty" / "Scene01").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Scene\*/15-deg-left/frames/rgb/Camera_0"):
        VirtualKitti2(str(tmp_path / "empty"), "train", TASKS)


def test_recipe_augmentation_flips_every_target_together(tmp_path, monkeypatch):
    root = write_vkitti2(tmp_path / "vkitti2")
    monkeypatch.setenv("SCENEMTL_VKITTI2", str(root))
    config = load_config(CONFIGS / "hps.yaml", ["data.options.resize=[16,30]"])
    assert config.data.options["variation"] == "15-deg-left" and config.data.augment.flip
    info = dataset_info(config)
    tasks = build_tasks(config, info)
    transform = build_transform(config, tasks, info, train=True)
    dataset = VirtualKitti2(str(root), "train", TASKS, **config.data.options)
    flips = set()
    for seed in range(10):
        raw = dataset.sample(seed % 4)
        sample = transform(dataset.sample(seed % 4), np.random.default_rng(seed))
        semseg, depth = sample["semseg"], sample["depth"][0]
        assert semseg.shape == (16, 30) and sample["image"].shape == (3, 16, 30)
        flipped = not torch.equal(semseg, raw["semseg"])
        assert torch.equal(semseg, raw["semseg"].flip(-1) if flipped else raw["semseg"])
        assert torch.equal(sample["depth"], raw["depth"].flip(-1) if flipped else raw["depth"])
        valid = (semseg != 255) & (semseg != 1)
        assert torch.allclose(depth[valid], 1.0 + semseg[valid])
        flips.add(flipped)
    assert flips == {True, False}


def test_recipe_trains_and_evaluates(tmp_path, monkeypatch):
    root = write_vkitti2(tmp_path / "vkitti2", frames=(("Scene01", 4), ("Scene02", 2)), size=(24, 32))
    monkeypatch.setenv("SCENEMTL_VKITTI2", str(root))
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
    assert cfg.train.optimizer == "adam" and cfg.train.decay_gamma == 0.1 and cfg.train.steps == 2
    assert cfg.tasks["depth"].options == {} and cfg.eval.protocol == "densemtl"
    report = Trainer(cfg, progress=False, log=False).fit()
    metrics = report["metrics"]
    assert report["protocol"] == "densemtl" and report["variants"]["depth"].startswith("per-image mean")
    assert "clamped" in report["variants"]["depth"]
    assert set(metrics) == {"semseg", "depth"}
    assert 0 <= metrics["semseg"]["miou"] <= 100 and metrics["depth"]["rmse"] > 0  # mIoU in percent
