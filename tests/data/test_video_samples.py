"""Video samples for self-supervised depth: Cityscapes' ``leftImg8bit_sequence`` neighbours, and the transforms
carrying ``frames`` and ``camera`` through zoom, crop, flip and pad consistently with the image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenemtl import geometry
from scenemtl.data import transforms as T
from scenemtl.data.cityscapes import DENSEMTL_CAMERA, Cityscapes16
from scenemtl.data.loader import collate
from scenemtl.errors import ConfigError, DataError
from scenemtl.tasks import build_task
from tests.data.test_cityscapes import write_cityscapes


def write_sequences(root: Path, skip: str | None = None) -> Path:
    """``leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<n±1>_leftImg8bit.png`` beside every annotated frame
    (their red channel holds 100 + 50·offset, so each frame is recognisable); ``skip``: an annotated id whose
    frame n + 1 is not written."""
    for image in sorted(root.glob("leftImg8bit/*/*/*_leftImg8bit.png")):
        split, city = image.parts[-3], image.parts[-2]
        stem = image.name[: -len("_leftImg8bit.png")]
        prefix, frame = stem.rsplit("_", 1)
        folder = root / "leftImg8bit_sequence" / split / city
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.array(Image.open(image))
        for offset in (-1, 1):
            if stem == skip and offset == 1:
                continue
            frame_pixels = pixels.copy()
            frame_pixels[..., 0] = 100 + 50 * offset
            Image.fromarray(frame_pixels).save(folder / f"{prefix}_{int(frame) + offset:06d}_leftImg8bit.png")
    return root


@pytest.fixture()
def cityscapes(tmp_path):
    root = write_cityscapes(tmp_path / "cs", size=(16, 32))
    for path in root.glob("camera/*/*/*.json"):  # a camera file of the 1024×2048 images
        camera = json.loads(path.read_text())
        camera["intrinsic"] = {"fx": 2262.52, "fy": 2265.3, "u0": 1096.98, "v0": 513.14}
        path.write_text(json.dumps(camera))
    return write_sequences(root, skip="aachen_000001_000020")


def test_cityscapes_serves_neighbouring_frames_and_the_camera(cityscapes):
    dataset = Cityscapes16(str(cityscapes), "train", ["semseg"], sequence_folder="leftImg8bit_sequence")
    assert len(dataset) == 3 and "aachen_000001_000020" not in [dataset.sample_id(i) for i in range(len(dataset))]
    assert any("1 annotated frames left out" in note for note in dataset.notes)
    sample = dataset.sample(0)
    frames = sample["frames"]
    assert frames.shape == (3, 3, 16, 32) and frames.dtype == torch.uint8
    assert torch.equal(frames[1], sample["image"])
    assert (frames[0, 0] == 50).all() and (frames[2, 0] == 150).all()
    expected = geometry.resize_intrinsics(geometry.intrinsics(2262.52, 2265.3, 1096.98, 513.14), (1024, 2048), (16, 32))
    assert sample["camera"].dtype == torch.float32 and np.allclose(sample["camera"].numpy(), expected, atol=1e-4)
    resized = Cityscapes16(str(cityscapes), "train", ["semseg"], sequence_folder="leftImg8bit_sequence", size=[8, 16]).sample(0)
    assert resized["frames"].shape == (3, 3, 8, 16) and torch.equal(resized["frames"][1], resized["image"])
    quirk = Cityscapes16(str(cityscapes), "train", ["semseg"], sequence_folder="leftImg8bit_sequence", camera="densemtl").sample(0)
    assert np.allclose(quirk["camera"].numpy(), DENSEMTL_CAMERA) and quirk["meta"]["camera_flip"] == (2048.0, 1024.0)
    batch = collate([sample, dataset.sample(1)])
    assert batch["frames"].shape == (2, 3, 3, 16, 32) and batch["camera"].shape == (2, 3, 3)


def test_missing_video_frames_and_bad_camera_option_are_clear_errors(cityscapes, tmp_path):
    with pytest.raises(ConfigError, match="data.options.camera for 'cityscapes_16' must be 'file'"):
        Cityscapes16(str(cityscapes), "train", ["semseg"], sequence_folder="leftImg8bit_sequence", camera="exact")
    with pytest.raises(DataError, match="no folder .*leftImg8bit_sequence_small.*leftImg8bit_sequence_trainvaltest.zip"):
        Cityscapes16(str(cityscapes), "train", ["semseg"], sequence_folder="leftImg8bit_sequence_small")
    dataset = Cityscapes16(str(cityscapes), "val", ["semseg"], sequence_folder="leftImg8bit_sequence")
    next(cityscapes.glob("leftImg8bit_sequence/val/*/*_000018_leftImg8bit.png")).unlink()
    with pytest.raises(DataError, match=r"video frame -1 of frankfurt_000000_000019 is missing"):
        dataset.sample(0)


def project(camera: torch.Tensor, point: np.ndarray) -> np.ndarray:
    uvw = camera.double().numpy() @ point
    return uvw[:2] / uvw[2]


def video_sample(height: int = 20, width: int = 30) -> dict:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    frames = np.stack([rng.integers(0, 256, (height, width, 3)).astype(np.uint8), image, rng.integers(0, 256, (height, width, 3))])
    return {
        "image": torch.from_numpy(image).permute(2, 0, 1),
        "semseg": torch.from_numpy(rng.integers(0, 3, (height, width))),
        "frames": torch.from_numpy(frames.astype(np.uint8)).permute(0, 3, 1, 2).contiguous(),
        "camera": torch.tensor([[25.0, 0, 14.5], [0, 24.0, 9.5], [0, 0, 1]]),
        "meta": {"id": "x", "size": (height, width)},
    }


POINT = np.array([0.7, -0.4, 3.0])  # a camera-frame point inside the view


def test_zoom_and_crop_move_frames_and_camera_with_the_image():
    tasks = {"semseg": build_task("semseg", {}, {"semseg": ["a", "b", "c"]})}
    sample = video_sample()
    before = project(sample["camera"], POINT)
    zoomed = _zoomed(sample)  # the transform changes the sample in place
    out = T.RandomScaleCrop(tasks, scale=(1.5, 1.5), crop=(16, 24))(sample, np.random.default_rng(3))
    image = out["image"]  # H×W×3 float32 after the zoom (OpenCV), a window of it
    assert out["frames"].shape == (3, 3, 16, 24)
    # the middle frame is the image, resampled the same way (uint8 rounding aside)
    assert np.abs(out["frames"][1].permute(1, 2, 0).numpy().astype(np.float32) - image).max() <= 1.0
    # the camera follows: a scene point lands where the zoom and crop move its pixel
    windows = [(t, c) for t in range(15) for c in range(22) if np.array_equal(np.asarray(image), zoomed[t : t + 16, c : c + 24])]
    assert len(windows) == 1
    top, left = windows[0]
    after = project(out["camera"], POINT)
    assert np.allclose(after, (before + 0.5) * 1.5 - 0.5 - [left, top], atol=1e-4)


def _zoomed(sample: dict) -> np.ndarray:
    import cv2

    hwc = sample["frames"][1].permute(1, 2, 0).numpy().astype(np.float32)
    return cv2.resize(hwc, (45, 30), interpolation=cv2.INTER_LINEAR)


def test_flip_and_pad_move_frames_and_camera_with_the_image():
    tasks = {"semseg": build_task("semseg", {}, {"semseg": ["a", "b", "c"]})}
    sample = video_sample()
    before = project(sample["camera"], POINT)
    frames = sample["frames"].clone()
    out = T.RandomHorizontalFlip(tasks, p=1.0)(sample, np.random.default_rng(0))
    assert torch.equal(out["frames"], frames.flip(-1)) and torch.equal(out["frames"][1], out["image"])
    mirrored = POINT * [-1, 1, 1]  # the mirrored image shows the mirrored scene
    assert np.allclose(project(out["camera"], mirrored), [30 - 1 - before[0], before[1]], atol=1e-4)
    padded = T.pad_sample(out, tasks, (24, 36), centre=True)
    assert padded["frames"].shape == (3, 3, 24, 36) and (padded["frames"][..., :2, :] == 0).all()
    assert np.allclose(project(padded["camera"], mirrored), [30 - 1 - before[0] + 3, before[1] + 2], atol=1e-4)


def test_densemtl_flip_moves_the_principal_point_its_way():
    """DenseMTL: flip the loaded 512×1024 image, crop at x1, K = [2048 − u0 − x1, 1024 − v0 − y1] with its constants."""
    tasks = {"semseg": build_task("semseg", {}, {"semseg": ["a", "b"]})}
    sample = video_sample(height=8, width=16)
    sample["camera"] = torch.from_numpy(DENSEMTL_CAMERA.astype(np.float32))
    sample["meta"]["camera_flip"] = (2048.0, 1024.0)
    out = T.RandomScaleCrop(tasks, crop=(8, 6))(sample, np.random.default_rng(1))
    left = 1096.98 - float(out["camera"][0, 2])
    out = T.RandomHorizontalFlip(tasks, p=1.0)(out, np.random.default_rng(0))
    x1 = 16 - 6 - left  # DenseMTL's crop column in the flipped image: the same pixels
    assert float(out["camera"][0, 2]) == pytest.approx(2048 - 1096.98 - x1, abs=1e-3)
    assert float(out["camera"][1, 2]) == pytest.approx(1024 - 513.137, abs=1e-3)


@pytest.mark.parametrize("flip", [False, True])
def test_rendered_clips_stay_geometrically_consistent_through_the_transforms(flip):
    """Synthetic clip → zoom, crop (and flip): warping frame +1 into frame 0 with the transformed camera, the
    label depth and the true pose (mirrored with the image) reproduces frame 0; a wrong pose does not."""
    from scenemtl.data.synthetic import SyntheticScenes
    from scenemtl.settings.photometric import warp

    dataset = SyntheticScenes(split="train", height=48, width=64, num_train=2, frames=True)
    tasks = {"depth": build_task("depth", {})}
    steps = [T.RandomScaleCrop(tasks, scale=(1.3, 1.3), crop=(40, 56))] + ([T.RandomHorizontalFlip(tasks, p=1.0)] if flip else [])
    sample = dataset.sample(0)
    pose = torch.tensor(sample["meta"]["poses"][1], dtype=torch.float64)
    out = T.Compose(steps)(sample, np.random.default_rng(0))
    if flip:  # the mirrored image shows the mirrored scene: conjugate the motion by the mirror
        mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
        pose = mirror @ pose @ mirror
    frames = out["frames"].double()[None] / 255
    depth = out["depth"].double()[None]
    camera = out["camera"].double()[None]

    def error(motion: torch.Tensor) -> float:
        warped = warp(frames[:, 2], depth, camera, motion[None])
        inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
        return float((warped - frames[:, 1])[inner].abs().mean())

    wrong = pose.clone()
    wrong[0, 3] += 0.3
    assert error(pose) < 0.03 and error(wrong) > 2 * error(pose), (error(pose), error(wrong))
