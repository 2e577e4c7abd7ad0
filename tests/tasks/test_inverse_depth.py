"""The inverse-depth task: masked L1, values multiplied under a zoom, registered beside depth."""

import numpy as np
import pytest
import torch

from scenemtl.data import transforms as T
from scenemtl.metrics import DepthMetric
from scenemtl.tasks import TASKS, DepthTask, InverseDepthTask, build_task


def test_it_is_registered_and_built_by_name():
    assert "inverse_depth" in TASKS.names() and TASKS.get("inverse_depth") is InverseDepthTask
    task = build_task("inverse_depth", {"pooling": "image"})
    assert isinstance(task, InverseDepthTask) and isinstance(task, DepthTask)
    assert task.name == "inverse_depth" and task.out_channels == 1 and task.pad_value == 0.0
    metric = task.metric()
    assert isinstance(metric, DepthMetric) and metric.per_image and metric.max_depth is None


def test_loss_is_l1_over_valid_pixels_only():
    task = build_task("inverse_depth", {})
    logits = torch.tensor([[[[0.3, 0.1], [5.0, -1.0]], [[0.2, 7.0], [0.0, 3.0]]]]).reshape(2, 1, 2, 2)
    target = torch.tensor([[[[0.1, 0.1], [0.0, float("nan")]], [[0.4, float("inf")], [0.0, -0.0]]]]).reshape(2, 1, 2, 2)
    # valid: 0.1 (|0.3-0.1| = 0.2), 0.1 (0), 0.4 (|0.2-0.4| = 0.2); 0, nan, inf and -0 are invalid
    assert task.loss(logits, target).item() == pytest.approx(0.4 / 3)
    logits.requires_grad_(True)
    empty = task.loss(logits, torch.zeros_like(target))
    empty.backward()
    assert empty.item() == 0.0 and torch.all(logits.grad == 0)


def test_zoom_multiplies_inverse_depth_where_depth_divides():
    inverse, depth = build_task("inverse_depth", {}), build_task("depth", {})
    target = torch.tensor([[[0.2, 0.0], [0.4, 0.1]]])
    rows = cols = torch.tensor([0, 0, 1, 1])  # nearest indices of a 2× zoom
    zoomed = inverse.resample(target, rows, cols, 2.0, adjust_values=True)
    assert zoomed.shape == (1, 4, 4)
    assert torch.allclose(zoomed[0, ::2, ::2], target[0] * 2.0)  # nearest: every source pixel, × zoom
    assert bool((zoomed[0, :2, 2:] == 0).all())  # invalid stays invalid
    assert torch.equal(inverse.resample(target, rows, cols, 2.0, adjust_values=False)[0, ::2, ::2], target[0])
    assert torch.allclose(depth.resample(target, rows, cols, 2.0, adjust_values=True)[0, ::2, ::2], target[0] / 2.0)


def test_random_scale_transform_multiplies_it():
    tasks = {"inverse_depth": build_task("inverse_depth", {})}
    sample = {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "inverse_depth": torch.full((1, 8, 8), 0.25), "meta": {"size": (8, 8)}}
    out = T.RandomScale(tasks, 1.5, 1.5, adjust_depth=True)(sample, np.random.default_rng(0))
    assert out["inverse_depth"].shape == (1, 12, 12)
    assert torch.allclose(out["inverse_depth"], torch.full((1, 12, 12), 0.375))


def test_prediction_is_clamped_and_coloured():
    task = build_task("inverse_depth", {})
    prediction = task.predict(torch.tensor([[[[-0.2, 0.1], [0.3, 0.5]]]]))
    assert prediction.min().item() == 0.0 and prediction.max().item() == pytest.approx(0.5)
    picture = task.colorize(prediction[0])
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    assert not np.array_equal(picture[1, 0], picture[1, 1])  # different values, different colours
