"""FCOS3D assignment on a toy map, the rotation conventions, and decode(encode(gt)) ≈ gt."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from scenemtl.detection.boxes import Boxes3D
from scenemtl.detection.head import Det3DOutput
from scenemtl.detection.targets import (
    C2S,
    REGRESS_RANGES,
    angles_to_rotation,
    apply_direction,
    assign,
    decode,
    decode_maps,
    direction_bins,
    encode,
    level_points,
    regress_ranges,
    rotation_to_angles,
)

STRIDES = (8.0, 16.0, 32.0, 32.0, 64.0)
SIZE = (64, 128)  # H, W of the toy image
#: the toy image's feature maps at STRIDES
MAP_SIZES = [(8, 16), (4, 8), (2, 4), (2, 4), (1, 2)]
#: a centred camera: principal point at the image centre (pixel centres at integers)
CAMERA = torch.tensor([[100.0, 0.0, 63.5], [0.0, 100.0, 31.5], [0.0, 0.0, 1.0]])


def yawed(yaw: float) -> torch.Tensor:
    """box→S of an upright box turned by ``yaw`` about S's y axis (0: driving straight ahead)."""
    return torch.tensor(Rotation.from_euler("y", yaw).as_matrix() @ C2S, dtype=torch.float32)


def toy_boxes(centers, boxes2d, labels, yaws=None, sizes=None) -> Boxes3D:
    n = len(labels)
    yaws = yaws or [0.3] * n
    return Boxes3D(
        labels=torch.tensor(labels),
        centers=torch.tensor(centers, dtype=torch.float32),
        sizes=torch.tensor(sizes or [[4.0, 1.8, 1.5]] * n),
        rotations=torch.stack([yawed(y) for y in yaws]),
        boxes2d=torch.tensor(boxes2d, dtype=torch.float32),
        camera=CAMERA,
    )


def points():
    return level_points(MAP_SIZES, STRIDES)


def split(values: torch.Tensor) -> list[torch.Tensor]:
    return list(values.split([h * w for h, w in MAP_SIZES]))


def test_points_sit_at_half_stride_offsets():
    first = points()[0]
    assert first.shape == (8 * 16, 2)
    assert first[0].tolist() == [4.0, 4.0] and first[17].tolist() == [12.0, 12.0]  # row 1, column 1
    assert level_points([(1, 1)], [32 / 3])[0].tolist() == [[5.0, 5.0]]  # stride // 2, as TaskPrompter
    assert regress_ranges(5) == REGRESS_RANGES


def test_assignment_on_a_toy_map():
    # projected centre (camera convention) (67.5, 35.5) → (68, 36) in 2D-box pixels = level 0, row 4, column 8
    boxes = toy_boxes([[0.4, 0.4, 10.0]], [[40.0, 20.0, 100.0, 52.0]], [3])
    codes = encode(boxes)
    assert torch.allclose(codes.centers2d, torch.tensor([[68.0, 36.0]]))
    targets = assign(codes, points(), STRIDES, num_classes=6)
    labels = split(targets.labels)
    centre = 4 * 16 + 8
    assert labels[0][centre] == 3
    assert targets.centerness[centre].item() == pytest.approx(1.0)
    assert torch.allclose(targets.boxes[centre, :2], torch.zeros(2))  # offset (point − centre) / stride
    assert targets.boxes[centre, 2].item() == pytest.approx(10.0)  # depth
    assert torch.allclose(targets.boxes[centre, 3:6], torch.tensor([4.0, 1.8, 1.5]))  # L, W, H as is
    assert torch.allclose(targets.boxes[centre, 9:13], torch.tensor([28.0, 16.0, 32.0, 16.0]) / 8)  # l, t, r, b / stride
    # level 0: the points within 1.5 strides (12 px) of the centre: columns 7–9, rows 3–5; the rest background
    xy = points()[0]
    near = ((xy - torch.tensor([68.0, 36.0])).abs() < 12).all(dim=1)
    assert near.sum() == 9
    assert bool((labels[0][near] == 3).all()) and bool((labels[0][~near] == 6).all())
    # the other levels: their points near the centre see a max side distance below their range
    assert all(bool((level == 6).all()) for level in labels[1:])
    # centerness falls off with the distance to the projected centre
    neighbour = 4 * 16 + 9  # 8 px to the right
    assert targets.centerness[neighbour].item() == pytest.approx(math.exp(-2.5 * 8 / (1.414 * 1.5 * 8)))
    assert targets.boxes[neighbour, 0].item() == pytest.approx(1.0)  # (76 − 68) / 8: point − centre


def test_regress_range_moves_a_large_box_up_a_level_and_ties_go_to_the_nearest_centre():
    # a 2D box whose sides are > 96 px from the centre points: level 0 rejects it, level 1 (96, 192] takes it
    big = toy_boxes([[0.4, 0.4, 10.0]], [[-40.0, -70.0, 120.0, 63.0]], [0])
    labels = split(assign(encode(big), points(), STRIDES, 6).labels)
    assert bool((labels[0] == 6).all()) and bool((labels[1] != 6).any())
    # two boxes with overlapping sampling squares: each point goes to the nearer projected centre
    two = toy_boxes([[0.4, 0.4, 10.0], [2.0, 0.4, 10.0]], [[40.0, 20.0, 100.0, 52.0], [50.0, 20.0, 110.0, 52.0]], [1, 2])
    codes = encode(two)  # centres at x = 68 and 84
    targets = assign(codes, points(), STRIDES, 6)
    level0 = split(targets.labels)[0].reshape(8, 16)
    assert level0[4, 8] == 1 and level0[4, 10] == 2  # x = 68 → box 0; x = 84 → box 1
    assert level0[4, 9] == 1  # x = 76: equidistant → the first box (argmin)


def test_direction_bins_and_limit_period():
    angles = torch.tensor([0.1, 3.0, -0.1, -3.0])
    assert direction_bins(angles).tolist() == [0, 0, 1, 1]
    whole = apply_direction(angles + math.pi, direction_bins(angles))  # known up to π, made whole by the bin
    assert torch.allclose(torch.cos(whole - angles), torch.ones(4)) and bool((whole >= 0).all() and (whole < 2 * math.pi).all())


def test_default_angles_are_scipys_euler_angles_of_the_s_style_rotation():
    rotations = torch.tensor(Rotation.random(16, random_state=0).as_matrix(), dtype=torch.float64)
    angles = rotation_to_angles(rotations)
    expected = Rotation.from_matrix(rotations.numpy() @ C2S.T).as_euler("ZXY")
    assert np.allclose(angles.numpy(), expected)
    # an upright car turned about S's y has only the third angle
    assert torch.allclose(rotation_to_angles(yawed(0.4)[None].double()), torch.tensor([[0.0, 0.0, 0.4]], dtype=torch.float64), atol=1e-7)
    for legacy in (False, True):
        back = angles_to_rotation(rotation_to_angles(rotations, legacy), legacy)
        assert torch.allclose(back, rotations, atol=1e-9), legacy


def test_legacy_angles_reproduce_taskprompters_quaternion_order():
    rotations = Rotation.random(16, random_state=1).as_matrix()
    css = Rotation.from_matrix(rotations @ C2S.T)
    w_first = np.roll(css.as_quat(), 1, axis=-1)  # pyquaternion's .q = (w, x, y, z) …
    tp_angles = Rotation.from_quat(w_first).as_euler("ZXY")  # … read by scipy as (x, y, z, w)
    ours = rotation_to_angles(torch.tensor(rotations), legacy_quaternion_order=True).numpy()
    assert np.allclose(ours, tp_angles)
    assert not np.allclose(ours, css.as_euler("ZXY"))
    # TaskPrompter's bbox2json: from_euler('ZXY').as_quat() handed to pyquaternion as (w, x, y, z)
    q = Rotation.from_euler("ZXY", tp_angles).as_quat()
    recovered = Rotation.from_quat(np.roll(q, -1, axis=-1)).as_matrix() @ C2S
    assert np.allclose(angles_to_rotation(torch.tensor(tp_angles), legacy_quaternion_order=True).numpy(), recovered)
    assert np.allclose(recovered, rotations)


def test_legacy_angles_match_cityscapesscripts_and_pyquaternion():
    pyquaternion = pytest.importorskip("pyquaternion")
    transform = pytest.importorskip("cityscapesscripts.helpers.box3dImageTransform")
    sensor = np.c_[Rotation.from_euler("y", 0.04).as_matrix(), [1.7, 0.1, 1.2]].tolist()  # V→C: slight pitch
    camera = transform.Camera(fx=2262.5, fy=2265.3, u0=1096.98, v0=513.137, sensor_T_ISO_8855=sensor)
    box = transform.Box3dImageTransform(camera=camera)
    rotation_v = pyquaternion.Quaternion(axis=[0.1, 0.2, 1.0], angle=0.6)
    box.initialize_box(size=[4.2, 1.8, 1.5], quaternion=rotation_v.q.tolist(), center=[20.0, 3.0, 0.8], coordinate_system=transform.CRS_V)
    _, _, rotation_s = box.get_parameters(coordinate_system=transform.CRS_S)
    tp_angles = Rotation.from_quat(rotation_s.q).as_euler("ZXY")  # TaskPrompter's data/cityscapes3d.py:load_det
    corners = box.get_vertices(coordinate_system=transform.CRS_S)

    def axis(first: str, second: str, position: int) -> np.ndarray:
        a = np.mean([v for k, v in corners.items() if k[position] == first], axis=0)
        b = np.mean([v for k, v in corners.items() if k[position] == second], axis=0)
        return (a - b) / np.linalg.norm(a - b)

    box_to_s = np.stack([axis("F", "B", 0), axis("L", "R", 1), axis("T", "B", 2)], axis=1)  # V-style box axes in S
    assert np.allclose(box_to_s @ C2S.T, rotation_s.rotation_matrix, atol=1e-6)
    assert np.allclose(rotation_to_angles(torch.tensor(box_to_s), legacy_quaternion_order=True).numpy(), tp_angles, atol=1e-6)
    assert np.allclose(rotation_to_angles(torch.tensor(box_to_s)).numpy(), Rotation.from_matrix(rotation_s.rotation_matrix).as_euler("ZXY"))


@pytest.mark.parametrize("legacy", [False, True])
def test_decode_of_encode_recovers_the_boxes(legacy):
    rng = np.random.default_rng(0)
    n = 6
    boxes = Boxes3D(
        labels=torch.arange(n) % 6,
        centers=torch.tensor(np.c_[rng.uniform(-5, 5, n), rng.uniform(-1, 2, n), rng.uniform(5, 60, n)], dtype=torch.float32),
        sizes=torch.tensor(rng.uniform(0.5, 10.0, (n, 3)), dtype=torch.float32),
        rotations=torch.tensor(Rotation.random(n, random_state=2).as_matrix(), dtype=torch.float32),
        boxes2d=torch.tensor([[10.0, 5.0, 50.0, 40.0]] * n),
        camera=CAMERA,
    )
    codes = encode(boxes, legacy)
    back = decode(codes, CAMERA, legacy)
    assert torch.allclose(back.centers, boxes.centers, atol=1e-4)
    assert torch.allclose(back.sizes, boxes.sizes) and torch.equal(back.labels, boxes.labels)
    assert torch.allclose(back.rotations, boxes.rotations, atol=1e-5)
    # as predictions are decoded: angles known up to π plus their direction bins
    codes.angles, bins = codes.angles - math.pi * direction_bins(codes.angles), direction_bins(codes.angles)
    assert torch.allclose(decode(codes, CAMERA, legacy, dir_bins=bins).rotations, boxes.rotations, atol=1e-5)


def perfect_output(boxes: Boxes3D, legacy: bool = False) -> Det3DOutput:
    """Maps that predict the assignment's targets exactly (class logit ±8, centerness logit of its target)."""
    targets = assign(encode(boxes, legacy), points(), STRIDES, 6)
    positive = targets.labels < 6
    cls = torch.full((len(targets.labels), 6), -8.0)
    cls[positive, targets.labels[positive]] = 8.0
    direction = torch.full((len(targets.labels), 3, 2), -4.0)
    direction.scatter_(2, targets.direction[..., None], 4.0)
    centerness = torch.logit(targets.centerness.clamp(1e-4, 1 - 1e-4))

    def maps(values: torch.Tensor) -> list[torch.Tensor]:
        values = values.reshape(len(targets.labels), -1)
        return [v.T.reshape(1, -1, h, w) for v, (h, w) in zip(split(values), MAP_SIZES)]

    return Det3DOutput(maps(cls), maps(targets.boxes), maps(direction), maps(centerness), STRIDES, SIZE)


@pytest.mark.parametrize("legacy", [False, True])
def test_decoding_perfect_maps_gives_back_the_box_at_every_positive_point(legacy):
    boxes = toy_boxes([[0.4, 0.4, 10.0]], [[40.0, 20.0, 100.0, 52.0]], [4], yaws=[2.5])
    candidates = decode_maps(perfect_output(boxes, legacy), 0, CAMERA, legacy)
    assert len(candidates) == 9 and bool((candidates.labels == 4).all())
    assert torch.allclose(candidates.centers, boxes.centers.expand(9, 3), atol=1e-4)
    assert torch.allclose(candidates.sizes, boxes.sizes.expand(9, 3))
    assert torch.allclose(candidates.rotations, boxes.rotations.expand(9, 3, 3), atol=1e-5)
    assert torch.allclose(candidates.boxes2d, boxes.boxes2d.expand(9, 4), atol=1e-4)
    assert candidates.scores is not None and candidates.scores.max().item() == pytest.approx(
        torch.sigmoid(torch.tensor(8.0)).item() * (1 - 1e-4)
    )
    assert len(decode_maps(perfect_output(boxes, legacy), 0, CAMERA, legacy, nms_pre=2)) <= 2 * 5


def test_dir_offset_moves_where_the_bins_meet_and_decoding_inverts_it():
    # TaskPrompter's 0: a roll of ±0.05 rad falls in opposite bins; an offset of π/2 puts both in one bin
    tilt = torch.tensor([[0.05, -0.05, 0.3], [-0.05, 0.05, 0.3]])
    assert direction_bins(tilt)[:, :2].tolist() == [[0, 1], [1, 0]]
    offset = (math.pi / 2, math.pi / 2, 0.0)
    bins = direction_bins(tilt, offset)
    assert bins[:, 0].tolist() == [1, 1] and bins[:, 1].tolist() == [1, 1]
    # an angle known up to π (as the regression gives it) is made whole again by its bin at the same offset
    for shift in (0.0, math.pi, -math.pi):
        whole = apply_direction(tilt + shift, bins, offset)
        assert torch.allclose(torch.sin(whole - tilt), torch.zeros_like(tilt), atol=1e-6)
        assert torch.allclose(torch.cos(whole - tilt), torch.ones_like(tilt), atol=1e-6)


def test_decoding_perfect_maps_with_a_dir_offset_gives_back_the_rotation():
    boxes = toy_boxes([[0.4, 0.4, 10.0]], [[40.0, 20.0, 100.0, 52.0]], [4], yaws=[-2.5])
    offset = (math.pi / 2, math.pi / 2, math.pi / 4)
    targets = assign(encode(boxes), points(), STRIDES, 6, dir_offset=offset)
    output = perfect_output(boxes)
    direction = torch.full((len(targets.labels), 3, 2), -4.0)
    direction.scatter_(2, targets.direction[..., None], 4.0)
    values = direction.reshape(len(targets.labels), -1)
    output.dir_cls_preds = [v.T.reshape(1, -1, h, w) for v, (h, w) in zip(split(values), MAP_SIZES)]
    candidates = decode_maps(output, 0, CAMERA, dir_offset=offset)
    assert len(candidates) == 9
    assert torch.allclose(candidates.rotations, boxes.rotations.expand(9, 3, 3), atol=1e-5)
    # the same maps decoded with another roll offset turn the roll by π
    wrong = decode_maps(output, 0, CAMERA, dir_offset=(0.0, math.pi / 2, math.pi / 4))
    assert not torch.allclose(wrong.rotations, boxes.rotations.expand(9, 3, 3), atol=1e-3)


def test_regress_ranges_of_the_task_send_a_box_to_the_level_they_name():
    from scenemtl.errors import ConfigError
    from scenemtl.tasks import build_task

    box = toy_boxes([[0.4, 0.4, 10.0]], [[40.0, 20.0, 100.0, 52.0]], [0])  # largest side distance < 96 px: level 0 by default
    maps = perfect_output(box)
    default = build_task("det3d", {})
    small = build_task("det3d", {"regress_ranges": [[-1, 8], [8, 16], [16, 24], [24, 48], [48, math.inf]]})
    assert small.regress_ranges is not None and math.isinf(small.regress_ranges[-1][1])
    for task, levels in ((default, [0]), (small, [3, 4])):
        targets = assign(encode(box), points(), STRIDES, 6, ranges=task.regress_ranges)
        per_level = [int((labels < 6).sum()) for labels in split(targets.labels)]
        assert sum(per_level) > 0 and sum(per_level[k] for k in levels) == sum(per_level), per_level
        assert task.loss(maps, [box]).item() > 0
    with pytest.raises(ConfigError, match="regress_ranges has 2 levels but the head has 5"):
        build_task("det3d", {"regress_ranges": [[-1, 96], [96, math.inf]]}).loss(maps, [box])
    with pytest.raises(ConfigError, match="regress_ranges must be one \\[low, high\\] per level"):
        build_task("det3d", {"regress_ranges": [[96, -1]]})
    with pytest.raises(ConfigError, match="dir_offset must be one angle"):
        build_task("det3d", {"dir_offset": [0.0, 1.0]})


def test_the_flip_mirrors_the_heading_and_the_box():
    car = toy_boxes([[2.0, 0.5, 20.0], [-3.0, 0.5, 12.0]], [[70.0, 20.0, 90.0, 40.0], [10.0, 20.0, 40.0, 44.0]], [0, 1], yaws=[0.3, -2.0])
    flipped = car.flip(128)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    # the length axis (the heading) is mirrored, not turned round: a car driving away still drives away
    assert torch.allclose(flipped.rotations[:, :, 0], car.rotations[:, :, 0] @ mirror, atol=1e-6)
    assert torch.allclose(torch.det(flipped.rotations), torch.ones(2), atol=1e-5)
    assert torch.allclose(rotation_to_angles(flipped.rotations)[:, 2], -rotation_to_angles(car.rotations)[:, 2], atol=1e-5)
    # the same solid: every corner of the flipped box is a mirrored corner of the original
    corners, mirrored = flipped.corners(), car.corners() @ mirror
    assert torch.cdist(corners, mirrored).min(dim=2).values.max() < 1e-4
    assert torch.allclose(flipped.flip(128).rotations, car.rotations, atol=1e-6)
