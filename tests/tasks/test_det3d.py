"""The det3d task: registration, valid_mask, check_target, loss (incl. an overfit check), prediction, pictures."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from scipy.spatial.transform import Rotation

from scenemtl.detection.boxes import Boxes3D
from scenemtl.detection.head import Det3DOutput
from scenemtl.detection.targets import C2S, assign, encode, level_points
from scenemtl.errors import ConfigError
from scenemtl.tasks import TASKS, build_task
from scenemtl.tasks.det3d import Det3DTask

SIZE = (64, 128)
STRIDES = (8.0, 16.0, 32.0, 32.0, 64.0)
MAP_SIZES = [(8, 16), (4, 8), (2, 4), (2, 4), (1, 2)]
CAMERA = torch.tensor([[100.0, 0.0, 63.5], [0.0, 100.0, 31.5], [0.0, 0.0, 1.0]])


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny head's ops are faster on one thread, and unaffected by a busy machine (after conftest's fixture)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def car(center=(0.4, 0.4, 10.0), box2d=(40.0, 20.0, 100.0, 52.0), label=0, yaw=0.3) -> Boxes3D:
    rotation = torch.tensor(Rotation.from_euler("y", yaw).as_matrix() @ C2S, dtype=torch.float32)
    return Boxes3D(
        labels=torch.tensor([label]),
        centers=torch.tensor([center]),
        sizes=torch.tensor([[4.0, 1.8, 1.5]]),
        rotations=rotation[None],
        boxes2d=torch.tensor([box2d]),
        camera=CAMERA,
    )


def tiny_head(task: Det3DTask) -> torch.nn.Module:
    torch.manual_seed(0)
    return task.build_head([8, 8, 8, 8], [8, 16, 32, 32])


def features(batch: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 8, h, w, generator=generator) for h, w in MAP_SIZES[:4]]


def test_registered_as_an_instance_task():
    assert TASKS.get("det3d") is Det3DTask
    task = build_task("det3d", {"legacy_quaternion_order": True, "dcn": False, "width": 64})
    assert isinstance(task, Det3DTask) and task.legacy_quaternion_order and not task.dcn
    assert task.is_map is False and task.out_channels == 0 and task.output_kind == "boxes3d"
    with pytest.raises(ConfigError, match="width"):
        build_task("det3d", {"width": 100})
    with pytest.raises(ConfigError, match="matching"):
        build_task("det3d", {"matching": "both"})
    with pytest.raises(ConfigError, match="code_weight"):
        build_task("det3d", {"code_weight": [1.0, 2.0]})


def test_valid_mask_marks_images_with_boxes():
    task = Det3DTask()
    assert task.valid_mask([car(), Boxes3D.empty(CAMERA), car()]).tolist() == [True, False, True]


def test_check_target_reports_bad_values():
    task = Det3DTask()
    assert task.check_target([car(), Boxes3D.empty(CAMERA)]) is None
    assert task.check_target(car(), sample=True) is None
    assert "no box" in task.check_target(Boxes3D.empty(CAMERA), sample=True)
    assert "labels" in task.check_target([car(label=6)])
    bad = car()
    bad.sizes[0, 1] = -1.0
    assert "sizes" in task.check_target([bad])
    bad = car()
    bad.centers[0, 0] = float("nan")
    assert "non-finite" in task.check_target([bad])
    assert "behind the camera" in task.check_target([car(center=(0.0, 0.0, -3.0))])
    bad = car()
    bad.rotations[0] *= 2
    assert "rotation" in task.check_target([bad])
    assert "x2 ≥ x1" in task.check_target([car(box2d=(50.0, 20.0, 40.0, 52.0))])
    assert "Boxes3D" in task.check_target(torch.zeros(1, 3))


def test_loss_is_finite_positive_and_drops_images_without_boxes():
    task = Det3DTask(width=64)
    head = tiny_head(task)
    output = head(features(2), SIZE)
    loss = task.loss(output, [car(), Boxes3D.empty(CAMERA)])
    assert torch.isfinite(loss) and loss.item() > 0
    alone = task.loss(output.image(0), [car()])
    assert loss.item() == pytest.approx(alone.item(), rel=1e-5)  # the empty image adds nothing
    parts = task.losses(output, [car(), Boxes3D.empty(CAMERA)])
    assert set(parts) == {"cls", "offset", "depth", "size", "rotation", "direction", "centerness", "box2d"}
    assert sum(parts.values()).item() == pytest.approx(loss.item(), rel=1e-6)
    # no box at all: zero, with a gradient path into every head parameter
    empty = task.loss(output, [Boxes3D.empty(CAMERA)] * 2)
    assert empty.item() == 0.0
    empty.backward()
    assert all(p.grad is not None and bool((p.grad == 0).all()) for p in head.parameters() if p.requires_grad)


def test_loss_decreases_when_the_head_overfits_a_fixed_target():
    task = Det3DTask(width=64)
    head = tiny_head(task)
    inputs, target = features(), [car(label=2, yaw=2.0)]
    optimiser = torch.optim.Adam(head.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        loss = task.loss(head(inputs, SIZE), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < 0.5 * history[0], history


def perfect_output(boxes: Boxes3D, legacy: bool = False) -> Det3DOutput:
    """Maps that predict the assignment's targets exactly."""
    targets = assign(encode(boxes, legacy), level_points(MAP_SIZES, STRIDES), STRIDES, 6)
    count, positive = len(targets.labels), targets.labels < 6
    cls = torch.full((count, 6), -8.0)
    cls[positive, targets.labels[positive]] = 8.0
    direction = torch.full((count, 3, 2), -4.0).scatter_(2, targets.direction[..., None], 4.0)
    centerness = torch.logit(targets.centerness.clamp(1e-4, 1 - 1e-4))
    sizes = [h * w for h, w in MAP_SIZES]

    def maps(values: torch.Tensor) -> list[torch.Tensor]:
        return [v.T.reshape(1, -1, h, w) for v, (h, w) in zip(values.reshape(count, -1).split(sizes), MAP_SIZES)]

    return Det3DOutput(maps(cls), maps(targets.boxes), maps(direction), maps(centerness), STRIDES, SIZE)


def test_predict_needs_the_cameras():
    task = Det3DTask()
    with pytest.raises(ValueError, match="camera"):
        task.predict(perfect_output(car()))


@pytest.mark.skipif(importlib.util.find_spec("scenemtl.detection.nms") is None, reason="detection.nms not there yet")
@pytest.mark.parametrize("legacy", [False, True])
def test_predict_keeps_one_box_per_object_after_rotated_nms(legacy):
    task = Det3DTask(legacy_quaternion_order=legacy)
    gt = car(label=4, yaw=2.5)
    [prediction] = task.predict(perfect_output(gt, legacy), cameras=[gt])
    assert len(prediction) == 1 and prediction.labels.tolist() == [4]
    assert torch.allclose(prediction.centers, gt.centers, atol=1e-4)
    assert torch.allclose(prediction.sizes, gt.sizes) and torch.allclose(prediction.rotations, gt.rotations, atol=1e-5)
    assert getattr(prediction, "image_size") == SIZE
    with_camera = perfect_output(gt, legacy)
    with_camera.cameras = CAMERA[None]
    assert len(task.predict(with_camera)[0]) == 1


def test_colorize_draws_the_projected_edges():
    task = Det3DTask()
    picture = task.colorize(car(label=1))
    assert picture.shape == (64, 128, 3) and picture.dtype.name == "uint8"  # size from the principal point
    drawn = picture.any(axis=-1)
    assert drawn.sum() > 50 and (picture[drawn] == task.palette[1]).all()
    assert not task.colorize(Boxes3D.empty(CAMERA), size=(5, 7)).any()
    assert task.colorize(car(center=(0.0, 0.0, 1.0)), size=(30, 40)).shape == (30, 40, 3)  # a box through the camera plane
    assert [name for name, _ in task.key(car(label=1)).swatches] == ["truck"]
