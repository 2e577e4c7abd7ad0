"""Joint transforms keep every task consistent with the image."""

import numpy as np
import pytest
import torch

from scenemtl.data import transforms as T
from scenemtl.data.synthetic import SyntheticScenes
from scenemtl.tasks import build_task
from scenemtl.data.render import CLASS_NAMES

TASK_NAMES = ["semseg", "depth", "normals", "edge", "saliency"]


@pytest.fixture(scope="module")
def tasks():
    return {name: build_task(name, {}, {"semseg": list(CLASS_NAMES)}) for name in TASK_NAMES}


@pytest.fixture(scope="module")
def dataset():
    return SyntheticScenes(split="train", height=24, width=32, num_train=4)


def fresh(dataset, index=0):
    return dataset.sample(index)


def test_flip_mirrors_everything_and_negates_normals_x(tasks, dataset):
    sample = fresh(dataset)
    original = {k: v.clone() for k, v in sample.items() if k != "meta"}
    flip = T.RandomHorizontalFlip(tasks, p=1.0)
    out = flip(sample, np.random.default_rng(0))
    assert torch.equal(out["image"], original["image"].flip(-1))
    for name in ("semseg", "depth", "edge", "saliency"):
        assert torch.equal(out[name], original[name].flip(-1)), name
    assert torch.equal(out["normals"][0], -original["normals"][0].flip(-1))
    assert torch.equal(out["normals"][1:], original["normals"][1:].flip(-1))
    # flipping twice is the identity
    again = flip(out, np.random.default_rng(0))
    for key, value in original.items():
        assert torch.equal(again[key].to(value.dtype), value), key


@pytest.mark.parametrize("adjust_depth", [False, True])
def test_scale_resamples_labels_nearest_and_handles_depth(tasks, dataset, adjust_depth):
    sample = fresh(dataset)
    depth_values = set(sample["depth"].unique().tolist())
    classes = set(sample["semseg"].unique().tolist())
    scale = T.Compose([T.RandomScale(tasks, 2.0, 2.0, adjust_depth=adjust_depth)])
    out = scale(sample, np.random.default_rng(0))
    assert out["image"].shape[-2:] == (48, 64)
    for name in TASK_NAMES:
        assert out[name].shape[-2:] == (48, 64), name
    assert set(out["semseg"].unique().tolist()) <= classes  # nearest: no blended class ids
    assert set(out["edge"].unique().tolist()) <= {0.0, 1.0}
    new_depths = set(out["depth"].unique().tolist())
    if adjust_depth:
        assert new_depths <= {d / 2 for d in depth_values}
    else:
        assert new_depths <= depth_values  # metric depth unchanged by a zoom
    assert torch.allclose(out["normals"].norm(dim=0), torch.ones(48, 64), atol=1e-5)


def test_pad_fills_each_task_with_its_ignore_value(tasks, dataset):
    sample = T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(fresh(dataset))
    out = T.Pad(tasks, size=(30, 40))(sample)
    assert out["meta"]["pad"] == (3, 4, 24, 32)
    top, left = 3, 4
    assert out["image"].shape == (3, 30, 40)
    assert torch.all(out["image"][:, :top] == 0)
    assert torch.all(out["semseg"][:top] == 255) and torch.all(out["semseg"][:, :left] == 255)
    assert torch.all(out["depth"][:, :top] == 0)
    assert torch.all(out["normals"][:, :, :left] == 0)
    assert torch.all(out["edge"][:, -1] == 255) and torch.all(out["saliency"][:, -1] == 255)
    for name in TASK_NAMES:
        assert not tasks[name].valid_mask(out[name][None])[0, :top].any(), name
    inner = out["semseg"][top : top + 24, left : left + 32]
    assert torch.equal(inner, fresh(dataset)["semseg"])


def test_pad_to_multiple_keeps_the_image_top_left(tasks, dataset):
    out = T.Pad(tasks, multiple=16)(fresh(dataset))
    assert out["image"].shape[-2:] == (32, 32)
    assert out["meta"]["pad"] == (0, 0, 24, 32)


def _max_class_share(labels: torch.Tensor) -> float:
    counts = torch.bincount(labels[labels != 255].flatten())
    return float(counts.max() / counts.sum())


def test_random_crop_retries_until_no_class_dominates(tasks, dataset):
    sample = fresh(dataset)
    sample["semseg"] = torch.zeros_like(sample["semseg"])
    sample["semseg"][:, 24:] = 1  # class 1 only in an 8-pixel strip on the right
    ruled = T.Compose([T.RandomCrop(tasks, (12, 16), cat_max_ratio=0.75)])
    free = T.Compose([T.RandomCrop(tasks, (12, 16), cat_max_ratio=1.0)])
    ruled_ok = free_ok = 0
    for seed in range(30):
        out = ruled({k: (v.clone() if torch.is_tensor(v) else dict(v)) for k, v in sample.items()}, np.random.default_rng(seed))
        assert out["image"].shape[-2:] == (12, 16) and all(out[n].shape[-2:] == (12, 16) for n in TASK_NAMES)
        ruled_ok += _max_class_share(out["semseg"]) < 0.75
        out = free({k: (v.clone() if torch.is_tensor(v) else dict(v)) for k, v in sample.items()}, np.random.default_rng(seed))
        free_ok += _max_class_share(out["semseg"]) < 0.75
    assert ruled_ok >= 25 and free_ok <= 10, (ruled_ok, free_ok)


def test_crop_with_no_size_restores_the_original_size(tasks, dataset):
    pipeline = T.Compose([T.RandomScale(tasks, 0.6, 1.4), T.RandomCrop(tasks, None), T.Pad(tasks, original=True)])
    shrunk = 0
    for seed in range(6):
        out = pipeline(fresh(dataset), np.random.default_rng(seed))
        assert out["image"].shape[-2:] == (24, 32)
        assert out["semseg"].shape == (24, 32)
        shrunk += out["meta"]["pad"][2:] != (24, 32)  # a zoom below 1: the crop came out short and was padded
    assert shrunk


def test_fused_scale_and_crop_equal_the_two_steps(tasks, dataset):
    fused = T.Compose([T.RandomScaleCrop(tasks, (0.5, 2.0), (20, 28), cat_max_ratio=0.75, adjust_depth=True)])
    steps = T.Compose([T.RandomScale(tasks, 0.5, 2.0, adjust_depth=True), T.RandomCrop(tasks, (20, 28), 0.75)])
    for seed in range(8):
        a = fused(fresh(dataset), np.random.default_rng(seed))
        b = steps(fresh(dataset), np.random.default_rng(seed))
        for key in ["image"] + TASK_NAMES:
            assert torch.equal(a[key], b[key]), (key, seed)


def test_nearest_indices_follow_opencv():
    cv2 = pytest.importorskip("cv2")
    source = np.arange(37 * 41, dtype=np.float32).reshape(37, 41)
    for size in [(18, 20), (55, 61), (74, 82), (41, 37)]:
        resized = cv2.resize(source, size[::-1], interpolation=cv2.INTER_NEAREST)
        rows, cols = T.nearest_indices(37, size[0]), T.nearest_indices(41, size[1])
        assert np.array_equal(source[rows[:, None], cols[None, :]], resized), size


def test_photometric_distortion_changes_only_the_image(tasks, dataset):
    sample = fresh(dataset)
    labels = sample["semseg"].clone()
    before = sample["image"].clone()
    changed = 0
    for seed in range(4):
        out = T.Compose([T.PhotometricDistortion()])({**sample, "image": before.clone()}, np.random.default_rng(seed))
        changed += not torch.equal(out["image"], before.float())
    assert changed >= 3  # each of the four parts fires with probability 1/2
    assert out["image"].dtype == torch.float32 and out["image"].shape == before.shape
    assert torch.equal(out["image"], out["image"].round())  # uint8 steps, as mmseg
    assert 0 <= out["image"].min() and out["image"].max() <= 255
    assert torch.equal(out["semseg"], labels)


def test_augmentation_is_a_function_of_the_seed(tasks, dataset):
    pipeline = T.Compose(
        [T.RandomScale(tasks, 0.5, 2.0), T.RandomCrop(tasks, None), T.RandomHorizontalFlip(tasks), T.PhotometricDistortion()]
    )
    a = pipeline(fresh(dataset), np.random.default_rng(7))
    b = pipeline(fresh(dataset), np.random.default_rng(7))
    c = pipeline(fresh(dataset), np.random.default_rng(8))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    assert not torch.equal(a["image"], c["image"])
