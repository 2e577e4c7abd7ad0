"""Depth outputs other than metres: monodepth2's sigmoid disparity (DenseMTL SDE), DenseMTL's inverse-depth code,
and DenseMTL's legacy 0.99 m ground-truth offset."""

from __future__ import annotations

import math

import pytest
import torch

from scenemtl.errors import ConfigError
from scenemtl.metrics import DepthMetric
from scenemtl.tasks import build_task


def test_sigmoid_disparity_decodes_to_the_depth_range():
    task = build_task("depth", {"output": "disparity"})
    logits = torch.tensor([-1e4, 0.0, 1e4]).reshape(1, 1, 1, 3)
    depth = task.predict(logits)[0, 0, 0]
    assert depth[0] == pytest.approx(100.0) and depth[2] == pytest.approx(0.1)
    assert depth[1] == pytest.approx(1 / (0.01 + (10 - 0.01) * 0.5))
    narrow = build_task("depth", {"output": "disparity", "depth_range": [1.0, 10.0]})
    assert narrow.predict(torch.full((1, 1, 1, 1), 1e4)).item() == pytest.approx(1.0)
    # the prior: the output that decodes to the mean training depth
    prior = task.output_prior([torch.full((1, 1, 2, 2), 7.5)])
    assert task.predict(prior.reshape(1, 1, 1, 1)).item() == pytest.approx(7.5, rel=1e-5)
    with pytest.raises(ConfigError, match="tasks.depth.depth_range"):
        build_task("depth", {"output": "disparity", "depth_range": [5, 1]})
    with pytest.raises(ConfigError, match="tasks.depth.output must be one of"):
        build_task("depth", {"output": "inverse"})


def test_densemtl_code_decodes_exactly_or_with_its_legacy_offset():
    metres = torch.tensor([2.0, 20.0, 79.0]).reshape(1, 1, 1, 3)
    code = 65536.0 / (100.0 * metres + 1.0)
    exact = build_task("depth", {"output": "densemtl_code"})
    assert torch.allclose(exact.predict(code), metres, rtol=1e-5)
    legacy = build_task("depth", {"output": "densemtl_code", "legacy_offset": True})
    assert torch.allclose(legacy.predict(code), metres - 0.99, rtol=1e-5)  # DenseMTL's 655.36/d − 1
    assert legacy.metric().gt_offset == 0.99 and "legacy" in legacy.metric().variant


def test_legacy_offset_shortens_the_ground_truth_and_median_scaling_removes_scale():
    torch.manual_seed(0)
    gt = torch.rand(2, 1, 6, 7) * 30 + 2
    prediction = gt * (1 + 0.1 * torch.randn_like(gt))
    offset = DepthMetric(pooling="image", clamp=(1e-3, 80.0), gt_offset=0.99)
    offset.update(prediction - 0.99, gt)
    shifted = DepthMetric(pooling="image", clamp=(1e-3, 80.0))
    shifted.update(prediction - 0.99, gt - 0.99)
    assert offset.compute() == pytest.approx(shifted.compute())
    scaled = [DepthMetric(pooling="image", clamp=(1e-3, 80.0), median_scaling=True) for _ in range(2)]
    scaled[0].update(prediction, gt)
    scaled[1].update(prediction * 3.7, gt)
    assert scaled[0].compute() == pytest.approx(scaled[1].compute())
    plain = DepthMetric(pooling="image", clamp=(1e-3, 80.0))
    plain.update(prediction * 3.7, gt)
    assert not math.isclose(plain.compute()["rmse"], scaled[1].compute()["rmse"])
