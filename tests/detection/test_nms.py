"""Rotated BEV IoU against hand formulas and a Monte-Carlo area estimate; class-wise greedy NMS."""

from __future__ import annotations

import math

import pytest
import torch

from scenemtl.detection.boxes import Boxes3D
from scenemtl.detection.nms import bev_rectangles, rotated_bev_iou, rotated_nms


def box(x: float, z: float, length: float, width: float, yaw: float = 0.0) -> torch.Tensor:
    return torch.tensor([[x, z, length, width, yaw]], dtype=torch.float64)


def test_identical_boxes_have_iou_one_and_one_is_kept():
    a = torch.tensor([[3.0, 20.0, 4.2, 1.8, 0.7]] * 2)
    assert rotated_bev_iou(a, a).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert rotated_nms(a, torch.tensor([0.5, 0.9]), torch.zeros(2, dtype=torch.int64), 0.3).tolist() == [1]


def test_disjoint_boxes_have_iou_zero_and_both_are_kept():
    a = torch.cat([box(0, 10, 4, 2, 0.3), box(10, 10, 4, 2, -1.0)])
    iou = rotated_bev_iou(a, a)
    assert iou[0, 1] == 0 and iou[1, 0] == 0
    assert rotated_nms(a, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.int64), 0.0).tolist() == [0, 1]


@pytest.mark.parametrize("yaw", [0.0, 0.4, -2.0])
def test_a_square_turned_by_a_quarter_turn_covers_itself(yaw):
    square = box(5, 30, 3, 3, yaw)
    turned = box(5, 30, 3, 3, yaw + math.pi / 2)
    assert rotated_bev_iou(square, turned).item() == pytest.approx(1.0, abs=1e-12)
    # a rectangle turned by π is the same rectangle, by π/2 it is a cross
    rectangle, half = box(0, 0, 4, 2, yaw), box(0, 0, 4, 2, yaw + math.pi)
    assert rotated_bev_iou(rectangle, half).item() == pytest.approx(1.0, abs=1e-12)
    cross = box(0, 0, 4, 2, yaw + math.pi / 2)
    assert rotated_bev_iou(rectangle, cross).item() == pytest.approx(4 / (8 + 8 - 4), abs=1e-12)


def test_axis_aligned_boxes_match_the_interval_formula():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(20, 5, generator=g, dtype=torch.float64) * torch.tensor([6, 6, 4, 3, 0], dtype=torch.float64)
    a[:, 2:4] += 0.5
    a[:, 4] = torch.randint(0, 4, (20,), generator=g).double() * math.pi / 2  # a multiple of 90°: still axis-aligned
    swap = (a[:, 4] / (math.pi / 2)).round().remainder(2) == 1
    extent_x = torch.where(swap, a[:, 3], a[:, 2])  # a quarter turn puts the width along x
    extent_z = torch.where(swap, a[:, 2], a[:, 3])
    lo_x, hi_x = a[:, 0] - extent_x / 2, a[:, 0] + extent_x / 2
    lo_z, hi_z = a[:, 1] - extent_z / 2, a[:, 1] + extent_z / 2
    overlap_x = (torch.minimum(hi_x[:, None], hi_x[None]) - torch.maximum(lo_x[:, None], lo_x[None])).clamp_min(0)
    overlap_z = (torch.minimum(hi_z[:, None], hi_z[None]) - torch.maximum(lo_z[:, None], lo_z[None])).clamp_min(0)
    inter = overlap_x * overlap_z
    area = a[:, 2] * a[:, 3]
    expected = inter / (area[:, None] + area[None] - inter)
    assert torch.allclose(rotated_bev_iou(a, a), expected, atol=1e-12)


def monte_carlo_iou(a: torch.Tensor, b: torch.Tensor, samples: int, generator: torch.Generator) -> float:
    """IoU of two rectangles from the share of uniform points in a's bounding square that fall in both."""

    def inside(rect: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        x, z, length, width, yaw = rect.tolist()
        offset = points - torch.tensor([x, z], dtype=points.dtype)
        along = offset[:, 0] * math.cos(yaw) + offset[:, 1] * math.sin(yaw)
        across = -offset[:, 0] * math.sin(yaw) + offset[:, 1] * math.cos(yaw)
        return (along.abs() <= length / 2) & (across.abs() <= width / 2)

    radius = math.hypot(a[2].item(), a[3].item()) / 2
    points = (torch.rand(samples, 2, generator=generator, dtype=torch.float64) * 2 - 1) * radius + a[:2]
    both = (inside(a, points) & inside(b, points)).double().mean().item() * (2 * radius) ** 2
    union = (a[2] * a[3] + b[2] * b[3]).item() - both
    return both / union


def test_random_rectangles_match_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(12, 5, generator=g, dtype=torch.float64) * torch.tensor([3, 3, 4, 2, 2 * math.pi], dtype=torch.float64)
    b = torch.rand(12, 5, generator=g, dtype=torch.float64) * torch.tensor([3, 3, 4, 2, 2 * math.pi], dtype=torch.float64)
    a[:, 2:4] += 1
    b[:, 2:4] += 1
    iou = rotated_bev_iou(a, b)
    assert (iou.diagonal() > 0).sum() >= 8  # most pairs overlap: the estimate is tested where it matters
    for i in range(12):
        estimate = monte_carlo_iou(a[i], b[i], 200_000, g)
        assert iou[i, i].item() == pytest.approx(estimate, abs=0.01)
    # float32 input: float32 output, the same values
    assert rotated_bev_iou(a.float(), b.float()).dtype == torch.float32
    assert torch.allclose(rotated_bev_iou(a.float(), b.float()).double(), iou, atol=1e-5)


def test_iou_is_symmetric_and_invariant_to_a_common_rigid_motion():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(30, 5, generator=g, dtype=torch.float64) * torch.tensor([5, 5, 4, 2, 6.3], dtype=torch.float64)
    a[:, 2:4] += 0.5
    iou = rotated_bev_iou(a, a)
    assert torch.allclose(iou, iou.T, atol=1e-12)
    angle = 0.9
    moved = a.clone()
    moved[:, 0] = a[:, 0] * math.cos(angle) - a[:, 1] * math.sin(angle) + 7
    moved[:, 1] = a[:, 0] * math.sin(angle) + a[:, 1] * math.cos(angle) - 2
    moved[:, 4] = a[:, 4] + angle
    assert torch.allclose(rotated_bev_iou(moved, moved), iou, atol=1e-10)
    # mirroring both boxes (x → −x, yaw → π − yaw) keeps the IoU: only the relative sign of yaw matters
    mirrored = a.clone()
    mirrored[:, 0] = -a[:, 0]
    mirrored[:, 4] = math.pi - a[:, 4]
    assert torch.allclose(rotated_bev_iou(mirrored, mirrored), iou, atol=1e-10)


def test_empty_inputs_and_bad_shapes():
    assert rotated_bev_iou(torch.zeros(0, 5), torch.zeros(3, 5)).shape == (0, 3)
    assert rotated_nms(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.3).tolist() == []
    with pytest.raises(ValueError, match=r"\[N,5\]"):
        rotated_bev_iou(torch.zeros(2, 4), torch.zeros(2, 5))


def test_boxes_of_different_classes_do_not_suppress_each_other():
    bev = torch.cat([box(0, 10, 4, 2), box(0.1, 10, 4, 2), box(0.2, 10, 4, 2)]).float()
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert rotated_nms(bev, scores, torch.tensor([0, 1, 0]), 0.3).tolist() == [0, 1]
    assert rotated_nms(bev, scores, torch.tensor([0, 1, 2]), 0.3).tolist() == [0, 1, 2]


def test_greedy_order_threshold_and_max_keep():
    # A overlaps B (IoU 2/3), B overlaps C (2/3), A and C only 3/7: greedy keeps A and C (B is suppressed
    # by A before it can suppress C), in score order
    bev = torch.cat([box(0, 0, 5, 2), box(1, 0, 5, 2), box(2, 0, 5, 2)])
    iou = rotated_bev_iou(bev, bev)
    assert iou[0, 1].item() == pytest.approx(4 / 6) and iou[0, 2].item() == pytest.approx(3 / 7)
    labels = torch.zeros(3, dtype=torch.int64)
    assert rotated_nms(bev, torch.tensor([0.5, 0.4, 0.9]), labels, 0.5).tolist() == [2, 0]
    assert rotated_nms(bev, torch.tensor([0.9, 0.8, 0.7]), labels, 0.5).tolist() == [0, 2]
    # IoU equal to the threshold is not suppressed (mmdet3d: iou > thresh)
    assert rotated_nms(bev[:2], torch.tensor([0.9, 0.8]), labels[:2], iou[0, 1].item()).tolist() == [0, 1]
    assert rotated_nms(bev, torch.tensor([0.9, 0.8, 0.7]), labels, 0.99).tolist() == [0, 1, 2]
    assert rotated_nms(bev, torch.tensor([0.9, 0.8, 0.7]), labels, 0.99, max_keep=2).tolist() == [0, 1]
    # equal scores keep their input order
    assert rotated_nms(bev, torch.tensor([0.5, 0.5, 0.5]), labels, 0.99).tolist() == [0, 1, 2]


def test_bev_rectangles_read_yaw_from_the_length_axis():
    theta = 0.3  # a rotation about S's y axis (down) turns +x toward −z: yaw = −θ
    c, s = math.cos(theta), math.sin(theta)
    rotation = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    boxes = Boxes3D(
        labels=torch.tensor([0]),
        centers=torch.tensor([[1.0, 1.5, 20.0]]),
        sizes=torch.tensor([[4.0, 1.8, 1.5]]),
        rotations=rotation[None],
        boxes2d=torch.zeros(1, 4),
        camera=torch.eye(3),
    )
    assert torch.allclose(bev_rectangles(boxes), torch.tensor([[1.0, 20.0, 4.0, 1.8, -theta]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(5)
    a = torch.rand(200, 5, generator=g) * torch.tensor([10, 10, 4, 2, 6.3])
    a[:, 2:4] += 0.5
    scores, labels = torch.rand(200, generator=g), torch.randint(0, 3, (200,), generator=g)
    assert torch.allclose(rotated_bev_iou(a.cuda(), a.cuda()).cpu(), rotated_bev_iou(a, a), atol=1e-6)
    assert rotated_nms(a.cuda(), scores.cuda(), labels.cuda(), 0.3).cpu().tolist() == rotated_nms(a, scores, labels, 0.3).tolist()
