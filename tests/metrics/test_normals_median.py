"""Normals: the pixel-pooled median against np.median, per-image and per-batch pooling, option errors."""

import math

import numpy as np
import pytest
import torch

from scenemtl.errors import ConfigError
from scenemtl.metrics import NormalsMetric, angular_error
from scenemtl.metrics.normals import BIN_WIDTH, NUM_BINS
from scenemtl.tasks import build_task


def at_angles(degrees) -> tuple[torch.Tensor, torch.Tensor]:
    """One image ``[1,3,1,N]`` of predictions at the given angles (float64) from the ground truth +z."""
    rad = torch.deg2rad(torch.as_tensor(degrees, dtype=torch.float64))
    pred = torch.stack([torch.sin(rad), torch.zeros_like(rad), torch.cos(rad)])[None, :, None, :]
    gt = torch.zeros_like(pred)
    gt[:, 2] = 1.0
    return pred, gt


def reference_median(pairs) -> float:
    """np.median of the float64 angles over the valid pixels of all (prediction, target) batches."""
    angles = [angular_error(p, t)[(t != 0).any(dim=1)].numpy() for p, t in pairs]
    return float(np.median(np.concatenate(angles)))


def random_batches(seed: int, sizes) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for b, h, w in sizes:
        target = torch.randn(b, 3, h, w, generator=g, dtype=torch.float64)
        target[:, :, 0, 0] = 0  # one invalid pixel per image
        prediction = target + 0.6 * torch.randn(b, 3, h, w, generator=g, dtype=torch.float64)
        batches.append((prediction.float(), target.float()))
    return batches


@pytest.mark.parametrize("sizes", [[(2, 5, 7)], [(3, 4, 4), (1, 3, 3)], [(1, 1, 2)], [(1, 1, 3)], [(4, 30, 40)] * 3])
def test_pooled_median_is_within_a_ten_thousandth_degree_of_np_median(sizes):
    batches = random_batches(sum(b * h * w for b, h, w in sizes), sizes)
    metric = NormalsMetric()
    for p, t in batches:
        metric.update(p, t)
    assert int(metric.count) == sum(b * (h * w - 1) for b, h, w in sizes)  # odd and even counts
    assert abs(metric.compute()["median"] - reference_median(batches)) < 1e-4


@pytest.mark.parametrize("shift", [-1e-9, 0.0, 1e-9])
@pytest.mark.parametrize("count", [7, 8, 4001, 4000])
def test_pooled_median_near_bin_edges(shift, count):
    rng = np.random.default_rng(count)
    edges = rng.integers(0, NUM_BINS, count) * BIN_WIDTH  # many values share a few bins, others are alone
    edges[: count // 2] = rng.choice(edges[: count // 2][:5], count // 2)
    degrees = np.clip(edges + shift, 0, 180)
    pred, gt = at_angles(degrees)
    metric = NormalsMetric()
    metric.update(pred, gt)
    assert abs(metric.compute()["median"] - reference_median([(pred, gt)])) < 1e-4


def test_pooled_median_is_exact_when_the_middle_bins_hold_only_the_middle_values():
    for degrees in ([0.0, 10.0, 20.0, 40.0], [3.14159265, 179.5, 180.0], [0.0, 0.0, 0.0, 90.0], [12.3456789]):
        pred, gt = at_angles(degrees)
        metric = NormalsMetric()
        metric.update(pred, gt)
        assert metric.compute()["median"] == pytest.approx(reference_median([(pred, gt)]), abs=1e-9)


def test_pooled_median_of_a_merged_split_equals_the_whole():
    batches = random_batches(3, [(2, 6, 9)] * 5)
    whole, first, second = NormalsMetric(), NormalsMetric(), NormalsMetric()
    for i, (p, t) in enumerate(batches):
        whole.update(p, t)
        (first if i % 2 else second).update(p, t)
    first.merge(second)
    assert first.compute() == whole.compute()
    assert abs(whole.compute()["median"] - reference_median(batches)) < 1e-4


def test_batch_pooling_averages_each_batchs_errors_with_np_median():
    metric = build_task("normals", {"pooling": "batch"}).metric()
    assert metric.variant == "per-batch mean"
    metric.update(*at_angles([0.0, 10.0, 20.0, 40.0]))  # mean 17.5, np.median 15
    metric.update(*at_angles([35.0]))
    metric.update(torch.ones(1, 3, 1, 2), torch.zeros(1, 3, 1, 2))  # no valid pixel: skipped
    r = metric.compute()
    assert r["mean"] == pytest.approx((17.5 + 35) / 2)
    assert r["median"] == pytest.approx((15 + 35) / 2)
    assert r["rmse"] == pytest.approx(math.sqrt(((0 + 100 + 400 + 1600) / 4 + 35**2) / 2))
    assert r["within_11.25"] == pytest.approx((50 + 0) / 2)
    assert r["within_22.5"] == pytest.approx((75 + 0) / 2)
    assert r["within_30"] == pytest.approx((75 + 0) / 2)


def test_batch_pooling_pools_the_images_of_a_batch():
    pred_a, gt_a = at_angles([0.0, 10.0])
    pred_b, gt_b = at_angles([20.0, 40.0])
    batch = NormalsMetric(pooling="batch")
    batch.update(torch.cat([pred_a, pred_b]), torch.cat([gt_a, gt_b]))
    assert batch.compute()["median"] == pytest.approx(15.0)  # one batch of 4 angles, not two images of 2
    image = NormalsMetric(pooling="image")
    image.update(torch.cat([pred_a, pred_b]), torch.cat([gt_a, gt_b]))
    assert image.compute()["median"] == pytest.approx((0 + 20) / 2)  # lower middle values of each image


def test_image_pooling_averages_each_images_errors_with_the_lower_median():
    metric = build_task("normals", {"pooling": "image"}).metric()
    assert metric.variant == "per-image mean"
    metric.update(*at_angles([0.0, 10.0, 20.0, 40.0]))  # torch.median: 10
    metric.update(*at_angles([35.0]))
    r = metric.compute()
    assert r["mean"] == pytest.approx((17.5 + 35) / 2)
    assert r["median"] == pytest.approx((10 + 35) / 2)
    assert r["rmse"] == pytest.approx(math.sqrt((525 + 1225) / 2))


@pytest.mark.parametrize("pooling", ["image", "batch"])
def test_image_and_batch_pooling_merge_exactly(pooling):
    batches = random_batches(5, [(2, 4, 5)] * 4)
    whole, first, second = (NormalsMetric(pooling) for _ in range(3))
    for i, (p, t) in enumerate(batches):
        whole.update(p, t)
        (first if i < 2 else second).update(p, t)
    second.merge(first)
    assert second.compute() == whole.compute()


def test_pooling_option_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"tasks\.normals\.pooling"):
        build_task("normals", {"pooling": "median"})
    with pytest.raises(ConfigError, match=r"tasks\.normals\.pooling"):
        build_task("normals", {"pooling": None})
    assert build_task("normals", {}).metric().variant == "pixel-pooled"
