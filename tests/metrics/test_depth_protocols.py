"""Depth protocols: DenseMTL's clamp and median scaling, MTAN's per-batch averaging, option errors."""

import math

import pytest
import torch

from scenemtl.errors import ConfigError
from scenemtl.metrics import DepthMetric
from scenemtl.tasks import build_task


def depth(*rows):
    """A batch ``[B,1,1,W]`` from one list of values per image."""
    return torch.tensor(rows, dtype=torch.float64)[:, None, None, :]


def test_clamp_keeps_gt_inside_the_range_and_clamps_the_prediction():
    metric = build_task("depth", {"clamp": [0.001, 80], "pooling": "image"}).metric()
    # gt 100 and 80 are outside 0.001 < gt < 80 (not clamped, dropped); gt 0.001 too; gt 0 is invalid anyway
    pred = depth([0.0, 200.0, 100.0, 5.0, 80.0, 3.0])
    gt = depth([2.0, 50.0, 100.0, 0.0, 80.0, 0.001])
    metric.update(pred, gt)
    r = metric.compute()
    # left: prediction 0 → 0.001 against 2 m, prediction 200 → 80 against 50 m
    assert r["rmse"] == pytest.approx(math.sqrt((1.999**2 + 30**2) / 2))
    assert r["abs_err"] == pytest.approx((1.999 + 30) / 2)
    assert r["abs_rel"] == pytest.approx((1.999 / 2 + 30 / 50) / 2)
    assert r["sq_rel"] == pytest.approx((1.999**2 / 2 + 30**2 / 50) / 2)
    assert r["log_rmse"] == pytest.approx(math.sqrt((math.log(0.001 / 2) ** 2 + math.log(80 / 50) ** 2) / 2))
    assert r["delta1"] == 0.0  # ratios 2000 and 1.6
    # without the clamp: the 200 m prediction counts as is, and gt 100 m and 80 m are valid
    plain = DepthMetric(pooling="image")
    plain.update(pred, gt)
    assert plain.compute()["abs_err"] == pytest.approx((2 + 150 + 0 + 0 + 3 - 0.001) / 5)


def test_median_scaling_uses_each_images_lower_medians_before_the_clamp():
    metric = build_task("depth", {"median_scaling": True, "clamp": [0.001, 80]}).metric()
    # image 1: lower medians (torch.median) gt 2, pred 4 → ×0.5 → [1, 2, 5, 100] → clamped [1, 2, 5, 80]
    # image 2: gt 10, pred 5 → ×2 → exact
    metric.update(depth([2.0, 4.0, 10.0, 200.0]), depth([1.0, 2.0, 3.0, 4.0]))
    metric.update(depth([5.0, 0.0, 0.0, 0.0]), depth([10.0, 0.0, 0.0, 0.0]))
    r = metric.compute()
    assert r["abs_err"] == pytest.approx((0 + 0 + 2 + 76 + 0) / 5)
    assert r["rmse"] == pytest.approx(math.sqrt((4 + 76**2) / 5))
    assert r["delta1"] == pytest.approx(300 / 5)  # ratios 1, 1, 5/3, 20, 1
    # (averaged medians, 2.5 and 7, would scale by 5/14; clamping first would leave 40 m against 4 m)


def test_median_scaling_makes_the_errors_invariant_to_a_global_scale():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 1, 5, 6, generator=g, dtype=torch.float64) * 10 + 1
    pred = gt * (1 + 0.2 * torch.randn(3, 1, 5, 6, generator=g, dtype=torch.float64)).abs()
    results = []
    for scale in (1.0, 7.5):
        metric = DepthMetric(median_scaling=True)
        metric.update(pred * scale, gt)
        results.append(metric.compute())
    assert results[0] == pytest.approx(results[1], rel=1e-12)


def test_batch_pooling_averages_each_batchs_errors_over_batches():
    metric = build_task("depth", {"pooling": "batch"}).metric()
    assert "per-batch mean" in metric.variant
    metric.update(depth([1.0, 2.0], [3.0, 7.0]), depth([2.0, 2.0], [4.0, 0.0]))  # 3 valid pixels
    metric.update(depth([5.0, 5.0]), depth([4.0, 0.0]))  # 1 valid pixel
    metric.update(depth([5.0, 5.0]), depth([0.0, 0.0]))  # no valid pixel: skipped
    r = metric.compute()
    # batch 1: |err| 1, 0, 1; rel 0.5, 0, 0.25. Batch 2: |err| 1, rel 0.25.
    assert r["abs_err"] == pytest.approx((2 / 3 + 1) / 2)
    assert r["abs_rel"] == pytest.approx((0.75 / 3 + 0.25) / 2)
    assert r["rmse"] == pytest.approx(math.sqrt((2 / 3 + 1) / 2))
    assert r["delta1"] == pytest.approx((100 / 3 + 0) / 2)  # ratios 2, 1, 4/3 | 1.25 (not < 1.25)
    pixel = DepthMetric()
    pixel.update(depth([1.0, 2.0], [3.0, 7.0]), depth([2.0, 2.0], [4.0, 0.0]))
    pixel.update(depth([5.0, 5.0]), depth([4.0, 0.0]))
    assert pixel.compute()["abs_err"] == pytest.approx(3 / 4)  # pooled over the 4 pixels instead


def test_batch_pooling_does_not_depend_on_the_order_or_split_of_batches():
    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(2, 1, 4, 4, generator=g) * 5, torch.rand(2, 1, 4, 4, generator=g) * 5) for _ in range(4)]
    whole, first, second = (DepthMetric(pooling="batch") for _ in range(3))
    for pred, gt in batches:
        whole.update(pred, gt)
    for pred, gt in batches[2:]:
        first.update(pred, gt)
    for pred, gt in reversed(batches[:2]):
        second.update(pred, gt)
    first.merge(second)
    assert first.compute() == whole.compute()


@pytest.mark.parametrize(
    "options, key",
    [
        ({"pooling": "mean"}, "tasks.depth.pooling"),
        ({"clamp": [80, 0.001]}, "tasks.depth.clamp"),
        ({"clamp": [0.001]}, "tasks.depth.clamp"),
        ({"clamp": "0.001,80"}, "tasks.depth.clamp"),
        ({"clamp": [-1, 80]}, "tasks.depth.clamp"),
        ({"clamp": [0.001, float("inf")]}, "tasks.depth.clamp"),
        ({"clamp": [False, 80]}, "tasks.depth.clamp"),
        ({"median_scaling": "yes"}, "tasks.depth.median_scaling"),
    ],
)
def test_bad_options_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_task("depth", options)


def test_variant_names_pooling_clamp_and_scaling():
    variant = build_task("depth", {"pooling": "image", "clamp": [0.001, 80], "median_scaling": True}).metric().variant
    assert variant.startswith("per-image mean") and "median scaling" in variant and "0.001 < gt < 80" in variant
    assert build_task("inverse_depth", {"pooling": "batch"}).metric().variant == "per-batch mean"
