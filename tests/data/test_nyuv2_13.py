"""MTAN's preprocessed NYUv2 (13 classes): the real .npy layout, read into the data contract; MTAN's recipe runs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from scenemtl.config import load_config
from scenemtl.data.nyuv2_13 import CLASS_NAMES, NYUv2Thirteen
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "nyuv2_13"


def write_nyuv2_13(root: Path, counts=(3, 2), size=(32, 40)) -> Path:
    """MTAN's release: {train,val}/{image,label,depth,normal}/<i>.npy, float arrays, −1 / 0 invalid."""
    rng = np.random.default_rng(0)
    h, w = size
    for split, n in zip(("train", "val"), counts):
        for folder in ("image", "label", "depth", "normal"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", (rng.integers(0, 256, (h, w, 3)) / 255.0).astype(np.float32))
            label = rng.integers(0, 13, (h, w)).astype(np.float32)
            label[:2] = -1.0
            np.save(root / split / "label" / f"{i}.npy", label)
            depth = rng.uniform(0.5, 8.0, (h, w, 1)).astype(np.float32)
            depth[:, :3] = 0.0
            np.save(root / split / "depth" / f"{i}.npy", depth)
            normal = rng.normal(size=(h, w, 3))
            normal /= np.linalg.norm(normal, axis=2, keepdims=True)
            normal[-2:] = 0.0
            np.save(root / split / "normal" / f"{i}.npy", normal.astype(np.float32))
    return root


def test_release_reads_into_the_contract(tmp_path):
    root = write_nyuv2_13(tmp_path / "nyuv2")
    train = NYUv2Thirteen(str(root), "train", ["semseg", "depth", "normals"])
    assert len(train) == 3 and len(NYUv2Thirteen(str(root), "val", ["semseg"])) == 2
    sample = train.sample(1)
    image = np.load(root / "train" / "image" / "1.npy")
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 32, 40)
    assert torch.equal(sample["image"], torch.from_numpy(np.rint(image * 255).astype(np.uint8)).permute(2, 0, 1))
    label = np.load(root / "train" / "label" / "1.npy")
    assert sample["semseg"].dtype == torch.int64
    assert bool((sample["semseg"][:2] == 255).all()) and torch.equal(sample["semseg"][2:], torch.from_numpy(label[2:]).long())
    assert sample["depth"].shape == (1, 32, 40) and bool((sample["depth"][0, :, :3] == 0).all())
    normal = np.load(root / "train" / "normal" / "1.npy")
    assert torch.allclose(sample["normals"], torch.from_numpy(normal).permute(2, 0, 1))
    assert len(CLASS_NAMES) == 13 and train.info.mean == (0.0, 0.0, 0.0)


def test_broken_copies_name_the_file_and_the_fix(tmp_path):
    root = write_nyuv2_13(tmp_path / "nyuv2")
    with pytest.raises(ConfigError, match="data.root is not set"):
        NYUv2Thirteen(None, "train", ["semseg"])
    with pytest.raises(DataError, match="no folder .*test"):
        NYUv2Thirteen(str(tmp_path), "train", ["semseg"])
    (root / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(DataError, match=r"depth holds 2 .npy files but .* holds 3"):
        NYUv2Thirteen(str(root), "train", ["depth"])
    (root / "train" / "label" / "1.npy").write_bytes(b"not numpy")
    dataset = NYUv2Thirteen(str(root), "train", ["semseg"])
    with pytest.raises(DataError, match=r"label/1.npy"):
        dataset.sample(1)
    np.save(root / "train" / "label" / "0.npy", np.zeros((5, 5), np.float32))
    with pytest.raises(DataError, match=r"expected shape \(32, 40\)"):
        dataset.sample(0)
    (root / "val" / "image" / "0.npy").unlink()
    with pytest.raises(DataError, match="0.npy is missing"):
        NYUv2Thirteen(str(root), "val", ["semseg"])


@pytest.mark.parametrize("config, balancer", [("mtan.yaml", "upgrad"), ("segnet.yaml", "dwa"), ("stl.yaml", "equal")])
def test_mtan_recipe_trains_on_the_release(tmp_path, monkeypatch, config, balancer):
    root = write_nyuv2_13(tmp_path / "nyuv2", counts=(4, 2))
    monkeypatch.setenv("SCENEMTL_NYUV2_13", str(root))
    narrow = (
        ["model.options.filters=[4,8,8,16,16]"] if config != "stl.yaml" else ["model.options.per_task_options={filters: [4, 8, 8, 16, 16]}"]
    )
    cfg = load_config(
        CONFIGS / config,
        [
            f"out_dir={tmp_path / 'runs' / '{name}'}",
            "train.steps=3",
            "train.decay_every=2",
            "train.eval_every=0",
            "train.checkpoint_every=0",
            "data.num_workers=0",
            "train.device=cpu",
            f"balancer.name={balancer}",
            *narrow,
        ],
    )
    assert cfg.train.optimizer == "adam" and cfg.train.schedule == "step" and cfg.data.batch_size == 2
    trainer = Trainer(cfg, progress=False, log=False)
    report = trainer.fit()
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(1e-4 * 0.5)  # halved after decay_every steps
    metrics = report["metrics"]
    assert set(metrics) == {"semseg", "depth", "normals"}
    assert {"miou", "pixel_acc"} <= set(metrics["semseg"]) and {"abs_err", "abs_rel"} <= set(metrics["depth"])
    assert "within_11.25" in metrics["normals"]


def test_balancing_benchmark_file_is_valid():
    from scenemtl.engine.benchmark import load_benchmark

    bench, _ = load_benchmark(CONFIGS / "balancing.yaml")
    assert bench.delta_m_lower_is_better and len(bench.seeds) == 3
    assert sum(len(v) for v in bench.delta_metrics.values()) == 9
    assert len(bench.specs()) == 17
