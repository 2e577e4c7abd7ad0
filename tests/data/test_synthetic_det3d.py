"""3D boxes of the synthetic scenes' objects (task det3d) and their path through the transforms and the loader."""

from __future__ import annotations

import numpy as np
import torch

from scenemtl.data import transforms as T
from scenemtl.data.loader import collate
from scenemtl.data.synthetic import SyntheticScenes
from scenemtl.detection import Boxes3D
from scenemtl.engine.evaluate import move
from scenemtl.tasks import build_task


def test_object_boxes_contain_what_the_camera_sees_of_them():
    dataset = SyntheticScenes(split="train", height=48, width=64, num_train=6, tasks=["semseg", "det3d"])
    seen = 0
    for index in range(len(dataset)):
        sample = dataset.sample(index)
        boxes = sample["det3d"]
        assert isinstance(boxes, Boxes3D) and boxes.labels.dtype == torch.int64
        assert set(boxes.labels.tolist()) <= {0, 1, 2} and (boxes.sizes > 0).all()
        rotations = boxes.rotations.double()
        assert torch.allclose(rotations @ rotations.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(rotations), atol=1e-5)
        corners = boxes.corners().double() @ boxes.camera.double().T  # [N,8,3]
        assert (corners[..., 2] > 0).all()  # in front of the camera
        uv = corners[..., :2] / corners[..., 2:]
        low, high = uv.min(1).values + 0.5, uv.max(1).values + 0.5  # pixel centres → edge coordinates
        # the visible part of an object lies inside the projection of its box
        assert (boxes.boxes2d[:, :2] >= low - 1).all() and (boxes.boxes2d[:, 2:] <= high + 1).all()
        # and the semseg labels of the modal box hold the object's class
        for label, (x1, y1, x2, y2) in zip(boxes.labels.tolist(), boxes.boxes2d.int().tolist()):
            assert (sample["semseg"][y1:y2, x1:x2] == label + 3).any()
        seen += len(boxes)
        assert set(sample["meta"]["sensor"]) >= {"sensor_T_ISO_8855", "fx", "fy", "u0", "v0"}
    assert seen > 10


def test_boxes_follow_the_flip_and_batch_as_lists():
    tasks = {
        "det3d": build_task("det3d", {}, {"det3d": ["sphere", "box", "cylinder"]}),
        "semseg": build_task("semseg", {}, {"semseg": ["a", "b", "c", "d", "e", "f"]}),
    }
    dataset = SyntheticScenes(split="train", height=48, width=64, num_train=2, tasks=["semseg", "det3d"])
    sample = dataset.sample(0)
    before = sample["det3d"]
    centres = before.projected_centers()
    flipped = T.RandomHorizontalFlip(tasks, p=1.0)(sample, np.random.default_rng(0))["det3d"]
    assert torch.allclose(flipped.projected_centers()[:, 0], 63 - centres[:, 0], atol=1e-3)
    assert torch.allclose(flipped.boxes2d[:, 0], 64 - before.boxes2d[:, 2])
    batch = collate([dataset.sample(0), dataset.sample(1)])
    assert isinstance(batch["det3d"], list) and len(batch["det3d"]) == 2 and batch["semseg"].shape == (2, 48, 64)
    moved = move(batch, torch.device("cpu"))
    assert all(isinstance(b, Boxes3D) for b in moved["det3d"])


def test_yaw_labels_are_what_the_image_shows_and_survive_the_flip():
    """Round shapes take the camera's yaw (angle 0), boxes the one of their two equal yaws in [−90°, 90°);
    the flip negates the angle, which keeps both rules, and a dir_offset of π/2 puts every yaw in one bin."""
    import math

    from scenemtl.detection.targets import direction_bins, rotation_to_angles

    tasks = {"det3d": build_task("det3d", {}, {"det3d": ["sphere", "box", "cylinder"]})}
    dataset = SyntheticScenes(split="train", height=48, width=64, num_train=12, tasks=["det3d"])
    counts = {0: 0, 1: 0, 2: 0}
    for index in range(len(dataset)):
        boxes = dataset.sample(index)["det3d"]
        flipped = T.RandomHorizontalFlip(tasks, p=1.0)(dataset.sample(index), np.random.default_rng(0))["det3d"]
        for labels in (boxes, flipped):
            yaw = rotation_to_angles(labels.rotations)[:, 2]
            round_shapes = labels.labels != 1
            assert torch.allclose(yaw[round_shapes], torch.zeros_like(yaw[round_shapes]), atol=1e-5)
            assert bool(((yaw >= -math.pi / 2 - 1e-6) & (yaw < math.pi / 2 + 1e-6)).all())
            assert bool((direction_bins(yaw[~round_shapes], math.pi / 2) == 1).all())
        for label in boxes.labels.tolist():
            counts[label] += 1
        # the scene's own yaw draw does not reach the round shapes' labels: same scene, any object angle
    assert min(counts.values()) > 3
