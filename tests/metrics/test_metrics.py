"""Streaming metrics against hand-computed values, streaming equals one-shot, Δm."""

import math

import pytest
import torch

from scenemtl.errors import DataError
from scenemtl.metrics import (
    ConfusionMatrixMetric,
    DepthMetric,
    NormalsMetric,
    SaliencyMetric,
    delta_m,
    relative_change,
)


def test_miou_from_accumulated_confusion_matrix():
    metric = ConfusionMatrixMetric(3, class_names=["a", "b", "c"])
    target = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 2]])
    metric.update(pred, target)
    result = metric.compute()
    # class a: TP 1, FN 1 → 1/2; class b: TP 2, FP 1 → 2/3; class c absent from GT and (valid) prediction
    assert result["iou/a"] == pytest.approx(50.0)
    assert result["iou/b"] == pytest.approx(200 / 3)
    assert math.isnan(result["iou/c"])
    assert result["miou"] == pytest.approx((50 + 200 / 3 + 0) / 3)  # InvPT: an absent class counts 0
    assert result["miou_present"] == pytest.approx((50 + 200 / 3) / 2)  # nanmean over classes that occur
    assert result["pixel_acc"] == pytest.approx(75.0)


def test_miou_is_accumulated_not_averaged_per_image():
    metric = ConfusionMatrixMetric(2)
    metric.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1]]))  # image 1
    metric.update(torch.tensor([[1]]), torch.tensor([[1]]))  # image 2
    # accumulated: class 0 IoU 3/4, class 1 IoU 1/2
    assert metric.compute()["miou"] == pytest.approx((75 + 50) / 2)


def test_miou_rejects_out_of_range_labels():
    with pytest.raises(DataError, match="class id 5"):
        ConfusionMatrixMetric(2).update(torch.tensor([[0]]), torch.tensor([[5]]))
    with pytest.raises(DataError, match="class id -1"):
        ConfusionMatrixMetric(2).update(torch.tensor([[0]]), torch.tensor([[-1]]))


def test_depth_errors_pooled_over_pixels():
    metric = DepthMetric()
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 9.0]]]])
    gt = torch.tensor([[[[2.0, 2.0], [4.0, 0.0]]]])  # last pixel invalid
    metric.update(pred, gt)
    r = metric.compute()
    assert r["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1) / 3))
    assert r["abs_rel"] == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert r["abs_err"] == pytest.approx(2 / 3)
    assert r["log_rmse"] == pytest.approx(math.sqrt((math.log(0.5) ** 2 + math.log(0.75) ** 2) / 3))
    assert r["delta1"] == pytest.approx(100 / 3)  # ratios 2, 1, 4/3: only the exact pixel is under 1.25


def test_depth_cap_and_pixel_pooling_across_batches():
    capped = DepthMetric(max_depth=10.0)
    capped.update(torch.tensor([[[[1.0, 1.0]]]]), torch.tensor([[[[1.0, 50.0]]]]))
    assert capped.compute()["rmse"] == 0.0
    pooled = DepthMetric()
    pooled.update(torch.tensor([[[[0.0]]]]), torch.tensor([[[[1.0]]]]))  # one pixel, error ~1
    pooled.update(torch.zeros(1, 1, 1, 3) + 1, torch.ones(1, 1, 1, 3))  # three exact pixels
    assert pooled.compute()["rmse"] == pytest.approx(math.sqrt(1 / 4), rel=1e-6)


def test_normals_angles_mean_median_and_thresholds():
    metric = NormalsMetric()
    angles = torch.tensor([0.0, 10.0, 20.0, 40.0])
    rad = torch.deg2rad(angles)
    pred = torch.stack([torch.sin(rad), torch.zeros(4), torch.cos(rad)]).view(1, 3, 1, 4)
    gt = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 1, 4).clone()
    gt = torch.cat([gt, torch.zeros(1, 3, 1, 1)], dim=3)  # plus one invalid pixel
    pred = torch.cat([pred * 2.5, torch.ones(1, 3, 1, 1)], dim=3)  # unnormalised prediction is fine
    metric.update(pred, gt)
    r = metric.compute()
    assert r["mean"] == pytest.approx(17.5, abs=1e-4)
    assert r["median"] == pytest.approx(15.0, abs=0.01)
    assert r["rmse"] == pytest.approx(math.sqrt((0 + 100 + 400 + 1600) / 4), abs=1e-4)
    assert r["within_11.25"] == pytest.approx(50.0)
    assert r["within_22.5"] == pytest.approx(75.0)
    assert r["within_30"] == pytest.approx(75.0)


def test_opposite_normals_are_180_degrees():
    metric = NormalsMetric()
    metric.update(torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1), torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1))
    assert metric.compute()["mean"] == pytest.approx(180.0)


def test_saliency_max_f_with_beta_squared_point_three():
    metric = SaliencyMetric()
    prob = torch.tensor([[[[0.9, 0.6, 0.3, 0.1, 0.5]]]])
    gt = torch.tensor([[[[1.0, 0.0, 1.0, 0.0, 255.0]]]])
    metric.update(prob, gt)
    r = metric.compute()
    b2 = 0.3

    def f(p, rec):
        return (1 + b2) * p * rec / (b2 * p + rec)

    # thresholds ≤ 0.3: P = 2/3, R = 1; (0.3, 0.6]: P = 1/2, R = 1/2; (0.6, 0.9]: P = 1, R = 1/2
    expected = max(f(2 / 3, 1.0), f(0.5, 0.5), f(1.0, 0.5))
    assert r["max_f"] == pytest.approx(expected * 100)
    assert r["iou"] == pytest.approx(100 * 1 / 3)  # at 0.5: predicted {0.9, 0.6}, truth {0.9, 0.3}


def test_saliency_without_labels_is_nan_not_zero():
    metric = SaliencyMetric()
    metric.update(torch.rand(1, 1, 2, 2), torch.full((1, 1, 2, 2), 255.0))
    assert math.isnan(metric.compute()["max_f"])


@pytest.mark.parametrize(
    "make, pred, target",
    [
        (
            lambda: ConfusionMatrixMetric(4),
            lambda g: torch.randint(0, 4, (6, 5, 7), generator=g),
            lambda g: torch.randint(0, 4, (6, 5, 7), generator=g),
        ),
        (DepthMetric, lambda g: torch.rand(6, 1, 5, 7, generator=g) * 5, lambda g: torch.rand(6, 1, 5, 7, generator=g) * 5),
        (NormalsMetric, lambda g: torch.randn(6, 3, 5, 7, generator=g), lambda g: torch.randn(6, 3, 5, 7, generator=g)),
        (SaliencyMetric, lambda g: torch.rand(6, 1, 5, 7, generator=g), lambda g: (torch.rand(6, 1, 5, 7, generator=g) > 0.5).float()),
    ],
)
def test_streaming_and_merging_equal_one_pass(make, pred, target):
    g = torch.Generator().manual_seed(0)
    p, t = pred(g), target(g)
    whole = make()
    whole.update(p, t)
    first, second = make(), make()
    first.update(p[:2], t[:2])
    second.update(p[2:], t[2:])
    first.merge(second)  # what sync() does across processes
    for key, value in whole.compute().items():
        assert first.compute()[key] == pytest.approx(value, nan_ok=True), key
    first.reset()
    assert all(float(v.abs().sum()) == 0 for v in first.state_dict().values())


def test_delta_m_signs_follow_metric_direction():
    results = {"semseg": {"miou": 44.0}, "depth": {"rmse": 0.45}}
    reference = {"semseg": {"miou": 40.0}, "depth": {"rmse": 0.50}}
    directions = {"semseg": {"miou": True}, "depth": {"rmse": False}}
    dm = delta_m(results, reference, directions, {"semseg": ["miou"], "depth": ["rmse"]})
    assert dm == pytest.approx((10.0 + 10.0) / 2)
    assert relative_change(0.55, 0.50, higher_is_better=False) == pytest.approx(-10.0)


def test_per_image_miou_averages_each_images_miou():
    metric = ConfusionMatrixMetric(2, per_image=True)
    metric.update(torch.tensor([[[0, 0, 0, 0]], [[1, 1, 1, 1]]]), torch.tensor([[[0, 0, 0, 1]], [[1, 1, 1, 1]]]))
    # image 1: class 0 IoU 3/4, class 1 IoU 0 → 37.5; image 2: only class 1, IoU 1 → 100
    result = metric.compute()
    assert result["miou"] == pytest.approx((37.5 + 100) / 2)
    assert "per-image" in metric.variant
    pooled = ConfusionMatrixMetric(2)
    pooled.update(torch.tensor([[[0, 0, 0, 0]], [[1, 1, 1, 1]]]), torch.tensor([[[0, 0, 0, 1]], [[1, 1, 1, 1]]]))
    assert pooled.compute()["miou"] == pytest.approx((75 + 80) / 2)  # accumulated: class 0 3/4, class 1 4/5


def test_depth_per_image_variant_and_cap():
    pred = torch.tensor([[[[1.0, 1.0]]], [[[2.0, 2.0]]]])
    gt = torch.tensor([[[[2.0, 1.0]]], [[[2.0, 100.0]]]])
    per_image = DepthMetric(per_image=True, max_depth=50)
    per_image.update(pred, gt)
    # image 1: MSE 0.5; image 2: the 100 m pixel is capped away, MSE 0 → RMSE = sqrt(mean MSE) = 0.5
    assert per_image.compute()["rmse"] == pytest.approx(0.5)
    assert per_image.compute()["abs_rel"] == pytest.approx((0.25 + 0) / 2)
    assert "per-image" in per_image.variant and "50" in per_image.variant


def test_saliency_mtinet_protocol_averages_per_image_precision_and_recall():
    metric = SaliencyMetric(protocol="mtinet")
    prob = torch.tensor([[[[0.95, 0.1, 0.1, 0.1]]], [[[0.95, 0.95, 0.1, 0.1]]]])
    gt = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]], [[[1.0, 0.0, 0.0, 0.0]]]])
    metric.update(prob, gt)
    # at every threshold in 0.2…0.9: image 1 P=1, R=1/2; image 2 P=1/2, R=1 → mean P = mean R = 3/4, F = 3/4
    result = metric.compute()
    assert result["max_f"] == pytest.approx(75.0, abs=1e-6)
    assert result["iou"] == pytest.approx(50.0, abs=1e-6)  # Jaccard 1/2 on both images
    with pytest.raises(ValueError, match="protocol"):
        SaliencyMetric(protocol="nope")


def test_saliency_invpt_protocol_applies_the_second_sigmoid_of_the_official_meter():
    # probabilities 0.3 (salient) and 0.1, 0.5 (not): sigmoid gives 0.574, 0.525, 0.622
    prob = torch.tensor([[[[0.3, 0.1, 0.5, 0.9]]]])
    gt = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]]]])
    invpt, pooled = SaliencyMetric(protocol="invpt"), SaliencyMetric()
    invpt.update(prob, gt)
    pooled.update(prob, gt)
    # the official meter: thresholds 0.05…0.95 on sigmoid(p); at 0.55 the 0.3 and 0.9 pixels are in,
    # 0.1 is out, 0.5 is in: P = 2/3, R = 1; at 0.6: 0.5 and 0.9 in: P = 1/2, R = 1/2; at 0.65–0.7: 0.9: P = 1, R = 1/2
    f = [1.3 * p * r / (0.3 * p + r) for p, r in ((2 / 3, 1.0), (0.5, 0.5), (1.0, 0.5))]
    assert invpt.compute()["max_f"] == pytest.approx(max(f) * 100, abs=1e-6)
    assert invpt.compute()["max_f_threshold"] == pytest.approx(0.65, abs=1e-6)  # first of the tied 0.65, 0.7
    # plain thresholds on p instead: at 0.25 (p ≥ 0.3: 0.3, 0.5, 0.9) P = 2/3, R = 1; at 0.55: P = 1, R = 1/2
    assert pooled.compute()["max_f"] == pytest.approx(max(1.3 * (2 / 3) / (0.2 + 1), 1.3 * 0.5 / (0.3 + 0.5)) * 100)
    assert "second sigmoid" in invpt.variant
