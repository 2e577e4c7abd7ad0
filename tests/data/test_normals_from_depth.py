"""Normals derived from depth by the driving datasets (Cityscapes, SYNTHIA, Virtual KITTI 2), as DenseMTL derives them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scenemtl import geometry
from scenemtl.data.cityscapes import DENSEMTL_CAMERA, Cityscapes16
from scenemtl.data.synthia import CAMERA as SYNTHIA_CAMERA
from scenemtl.data.synthia import Synthia
from scenemtl.data.vkitti2 import CAMERA as VKITTI2_CAMERA
from scenemtl.data.vkitti2 import VirtualKitti2
from scenemtl.errors import ConfigError, DataError
from tests.data.test_cityscapes import write_cityscapes
from tests.data.test_synthia import write_synthia
from tests.data.test_vkitti2 import write_vkitti2


def densemtl_normals(code: np.ndarray, camera: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """DenseMTL's normals as its ``loss/normals.py`` computes them, written out step by step in numpy:
    unproject ``code`` (its inverse depth code) with the inverse camera, four cross products of
    circular-neighbour differences, normalise, |z|; the mask without border, eroded 3×3."""
    h, w = code.shape
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rays = np.linalg.inv(camera) @ np.stack([u.ravel(), v.ravel(), np.ones(h * w)])
    points = (rays * code.ravel()).reshape(3, h, w)

    def step(dx: int, dy: int) -> np.ndarray:  # P[y + dy, x + dx] - P[y, x], wrapping
        return np.roll(points, (-dy, -dx), axis=(1, 2)) - points

    bases = [((1, 0), (0, -1)), ((-1, 0), (0, 1)), ((1, 1), (1, -1)), ((-1, -1), (-1, 1))]
    total = sum(np.cross(step(*a), step(*b), axis=0) for a, b in bases)
    normals = total / np.maximum(np.linalg.norm(total, axis=0), 1e-12)
    normals[2] = np.abs(normals[2])
    mask = valid.copy()
    mask[[0, -1], :] = False
    mask[:, [0, -1]] = False
    padded = np.pad(~mask, 1)
    eroded = ~np.max([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)
    return np.where(eroded, normals, 0.0)


def check(sample: dict, camera: np.ndarray, mode: str, evaluation: bool) -> None:
    normals = sample["normals"]
    assert normals.shape == (3, *sample["image"].shape[-2:]) and normals.dtype == torch.float32
    depth = sample["depth"][0].double()
    if mode == "metric":
        expected = geometry.normals_from_depth(depth[None, None], camera, orient="flip")[0]
    else:
        metres = depth.numpy()
        valid = metres > 0
        if evaluation:
            valid &= (metres - 0.99 > 1e-3) & (metres - 0.99 < 80)
        code = 65536.0 / (100.0 * np.where(valid, metres, 1.0) + 1.0)
        expected = torch.from_numpy(densemtl_normals(code, camera, valid)).float()
    assert torch.allclose(normals, expected.float(), atol=1e-5)
    labelled = (normals != 0).any(0)
    assert labelled.any() and torch.allclose(normals[:, labelled].norm(dim=0), torch.ones(1), atol=1e-5)


@pytest.mark.parametrize("mode", ["metric", "densemtl"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_synthia_and_vkitti2_derive_normals_from_their_depth(tmp_path, mode, split):
    synthia = write_synthia(tmp_path / "synthia")
    vkitti = write_vkitti2(tmp_path / "vkitti2")
    for cls, root, release, camera, resize in (
        (Synthia, synthia, (24, 32), SYNTHIA_CAMERA, [12, 20]),
        (VirtualKitti2, vkitti, (20, 36), VKITTI2_CAMERA, None),
    ):
        for size in (release, resize):
            dataset = cls(str(root), split, ["depth", "normals"], normals=mode, resize=size if size != release else None)
            sample = dataset.sample(0)
            shape = tuple(sample["image"].shape[-2:])
            expected_camera = geometry.resize_intrinsics(camera, release, shape) if mode == "metric" else camera
            check(sample, expected_camera, mode, split != "train")
            alone = cls(str(root), split, ["normals"], normals=mode, resize=size if size != release else None).sample(0)
            assert "depth" not in alone and torch.equal(alone["normals"], sample["normals"])
            assert alone["meta"]["labelled"] == ["normals"]


@pytest.mark.parametrize("mode", ["metric", "densemtl"])
def test_cityscapes_normals_use_the_camera_file_or_densemtls_constants(tmp_path, mode):
    root = write_cityscapes(tmp_path / "cs", size=(16, 32))
    # a smooth valid disparity (10…25 px: 16…40 m) with one hole, so that normals survive the erosion
    rows, cols = np.meshgrid(np.arange(16), np.arange(32), indexing="ij")
    disparity = (1 + 256 * (10 + 0.5 * rows + 0.2 * cols)).astype(np.uint16)
    disparity[8, 16] = 0
    for path in root.glob("disparity/*/*/*.png"):
        Image.fromarray(disparity).save(path)
    for split in ("train", "val"):
        dataset = Cityscapes16(str(root), split, ["semseg", "depth", "normals"], normals=mode)
        sample = dataset.sample(0)
        city, stem = dataset.items[0]
        intrinsic = json.loads((root / "camera" / split / city / f"{stem}_camera.json").read_text())["intrinsic"]
        camera = geometry.intrinsics(intrinsic["fx"], intrinsic["fy"], intrinsic["u0"], intrinsic["v0"])
        camera = geometry.resize_intrinsics(camera, (1024, 2048), (16, 32))  # the file describes the full-size images
        check(sample, camera if mode == "metric" else DENSEMTL_CAMERA, mode, split != "train")
        resized = Cityscapes16(str(root), split, ["depth", "normals"], normals=mode, size=[8, 16]).sample(0)
        check(
            resized, geometry.resize_intrinsics(camera, (16, 32), (8, 16)) if mode == "metric" else DENSEMTL_CAMERA, mode, split != "train"
        )


def test_bad_normals_option_and_camera_file_are_clear_errors(tmp_path):
    root = write_cityscapes(tmp_path / "cs", size=(16, 32))
    with pytest.raises(ConfigError, match="data.options.normals for 'cityscapes_16' must be one of"):
        Cityscapes16(str(root), "train", ["normals"], normals="exact")
    dataset = Cityscapes16(str(root), "train", ["normals"])
    city, stem = dataset.items[0]
    path = root / "camera" / "train" / city / f"{stem}_camera.json"
    path.write_text('{"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0}}')
    with pytest.raises(DataError, match="camera.json: no intrinsic.u0 and intrinsic.v0"):
        dataset.sample(0)
    assert "normals" in Cityscapes16(str(root), "train", ["depth"]).info.tasks


def test_legacy_column_metric_is_densemtls_and_not_the_angle_per_pixel(tmp_path):
    from scenemtl.metrics.normals import NormalsMetric

    rng = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 3, 6, 7, generator=rng, dtype=torch.float64)
    target = torch.nn.functional.normalize(torch.randn(2, 3, 6, 7, generator=rng, dtype=torch.float64), dim=1)
    legacy = NormalsMetric(pooling="densemtl_columns")
    assert set(legacy.wants) == {"logits", "eval_target"}
    legacy.update(torch.zeros_like(prediction), torch.zeros_like(target), logits=prediction, eval_target=target)
    # DenseMTL's Normals._metrics per image (3,H,W), written out: norms over dim 1 (the rows), torch.median
    rows = []
    for p, g in zip(prediction, target):
        error = torch.rad2deg(2 * torch.atan2(torch.norm(p - g, dim=1), torch.norm(p + g, dim=1)))
        rows.append([error.mean(), error.median(), error.pow(2).mean(), *((error < t).double().mean() for t in (11.25, 22.5, 30))])
    mean = torch.tensor(rows).mean(0)
    result = legacy.compute()
    assert result["mean"] == pytest.approx(float(mean[0]), abs=1e-9) and result["median"] == pytest.approx(float(mean[1]), abs=1e-9)
    assert result["rmse"] == pytest.approx(float(mean[2]) ** 0.5, abs=1e-9)
    assert result["within_22.5"] == pytest.approx(float(mean[4]) * 100, abs=1e-7)
    per_pixel = NormalsMetric(pooling="image")
    per_pixel.update(prediction, target)
    assert abs(per_pixel.compute()["mean"] - result["mean"]) > 1.0
    same = NormalsMetric(pooling="densemtl_columns")
    same.update(target, target, logits=target, eval_target=target)
    assert same.compute()["mean"] == pytest.approx(0.0, abs=1e-6)


def test_densemtl_datasets_serve_the_unmasked_ground_truth_for_the_legacy_metric(tmp_path):
    root = write_synthia(tmp_path / "synthia")
    dataset = Synthia(str(root), "val", ["depth", "normals"], normals="densemtl", far_invalid=False)
    dataset.request_eval_targets(["normals_unmasked", "edge_labels"])
    sample = dataset.sample(0)
    assert dataset.eval_keys == ("normals_unmasked",)
    full = sample["normals_unmasked"]
    metres = sample["depth"][0].double().numpy()
    valid = metres > 0
    code = 65536.0 / (100.0 * np.where(valid, metres, metres[valid].max()) + 1.0)
    expected = densemtl_normals(code, SYNTHIA_CAMERA, np.ones_like(valid))
    inner = (slice(None), slice(2, -2), slice(2, -2))  # the border is masked in the reference transcription
    assert torch.allclose(full[inner], torch.from_numpy(expected).float()[inner], atol=1e-5)
    assert (full.norm(dim=0) > 0.99).all()  # every pixel has a normal, masked or not
    labelled = (sample["normals"] != 0).any(0)
    assert torch.allclose(full[:, labelled], sample["normals"][:, labelled])
    metric_mode = Synthia(str(root), "val", ["normals"])
    metric_mode.request_eval_targets(["normals_unmasked"])
    assert "normals_unmasked" not in metric_mode.sample(0)
