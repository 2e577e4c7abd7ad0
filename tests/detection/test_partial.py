"""Partial labels with an instance task: a withheld det3d label is a marker, never "no objects"."""

from __future__ import annotations

import math

import pytest
import torch

from scenemtl.detection.boxes import Boxes3D
from scenemtl.engine.evaluate import move
from scenemtl.engine.trainer import Trainer
from scenemtl.tasks import build_task
from tests.detection.test_targets import CAMERA, perfect_output, toy_boxes

DET3D = "tasks={semseg: {weight: 1.0}, det3d: {weight: 1.0, width: 64, dcn: false}}"


def partial_trainer(tiny_config, *overrides):
    config = tiny_config(
        DET3D,
        "data.labels.setting=one-label",
        "data.options={height: 64, width: 64, num_train: 8, num_val: 2}",
        "data.augment={scale: null, flip: true, photometric: false}",
        "data.batch_size=4",
        "train.init_output_bias=false",
        *overrides,
    )
    return Trainer(config, progress=False, log=False)


def test_withheld_boxes_are_a_marker_that_keeps_the_camera(tiny_config):
    trainer = partial_trainer(tiny_config)
    seen = set()
    for index in range(len(trainer.train_set)):
        sample = trainer.train_set.sample(index)
        (kept,) = sample["meta"]["labelled"]
        boxes = sample["det3d"]
        assert isinstance(boxes, Boxes3D) and boxes.labelled == (kept == "det3d")
        if kept != "det3d":
            assert len(boxes) == 0 and bool((sample["semseg"] != 255).any())
            assert torch.allclose(boxes.camera, trainer.train_set.dataset.sample(index)["det3d"].camera)
        seen.add(kept)
    assert seen == {"semseg", "det3d"}
    # the marker survives the transforms and the move to the device
    marker = Boxes3D.empty(CAMERA, labelled=False)
    assert not marker.flip(128).resize((64, 128), (32, 64)).shift(2.0, 3.0).to("cpu").labelled


def test_a_withheld_label_gives_no_loss_and_no_gradient_but_an_empty_annotated_image_can(tiny_config):
    trainer = partial_trainer(tiny_config)
    batch = move(next(iter(trainer.loader)), trainer.device)
    for meta, boxes in zip(batch["meta"], batch["det3d"]):
        assert ("det3d" in meta["labelled"]) == boxes.labelled
    assert {boxes.labelled for boxes in batch["det3d"]} == {True, False}  # the seeded first batch has both
    trainer.model.train()

    def losses_and_grads(batch):
        trainer.model.zero_grad()
        losses = trainer.task_losses(trainer.model(batch["image"]), batch)
        sum(losses.values()).backward()
        return losses, [None if p.grad is None else p.grad.clone() for p in trainer.model.parameters()]

    losses, grads = losses_and_grads(batch)
    # boxes put into the withheld targets change nothing: the loss reads meta['labelled'] and the marker
    changed = dict(batch)
    changed["det3d"] = [boxes if boxes.labelled else _one_box(boxes.camera) for boxes in batch["det3d"]]
    changed_losses, changed_grads = losses_and_grads(changed)
    assert all(torch.equal(a, b) for a, b in zip(grads, changed_grads) if a is not None)
    assert changed_losses["det3d"].item() == losses["det3d"].item()
    # nothing labelled: a zero with a gradient path (every head parameter in the graph)
    for meta in batch["meta"]:
        meta["labelled"] = ["semseg"]
    none, _ = losses_and_grads(batch)
    assert none["det3d"].item() == 0.0 and none["det3d"].requires_grad
    # training runs to the end with the one-label split
    report = trainer.fit()
    assert math.isfinite(report["metrics"]["semseg"]["miou"])


def _one_box(camera: torch.Tensor) -> Boxes3D:
    box = toy_boxes([[0.0, 0.2, 4.0]], [[20.0, 20.0, 44.0, 44.0]], [0])
    box.camera = camera.cpu()
    return box


def test_empty_images_background_is_the_only_reading_of_no_objects_that_has_a_loss():
    box = toy_boxes([[0.4, 0.4, 10.0]], [[40.0, 20.0, 100.0, 52.0]], [4])
    output = perfect_output(box)  # a batch of one whose maps predict that box
    annotated_empty, withheld = Boxes3D.empty(CAMERA), Boxes3D.empty(CAMERA, labelled=False)
    drop, background = build_task("det3d", {}), build_task("det3d", {"empty_images": "background"})
    # TaskPrompter drops images without boxes; a withheld label is never read either way
    assert drop.loss(output, [annotated_empty]).item() == 0.0 and drop.loss(output, [withheld]).item() == 0.0
    assert background.loss(output, [withheld]).item() == 0.0
    # as background, the confident box of the maps is a false positive: a classification loss, nothing else
    terms = background.losses(output, [annotated_empty])
    assert terms["cls"].item() > 1.0 and all(terms[k].item() == 0.0 for k in ("offset", "depth", "size", "rotation"))
    assert background.valid_mask([annotated_empty, withheld, box]).tolist() == [True, False, True]
    assert drop.valid_mask([annotated_empty, withheld, box]).tolist() == [False, False, True]
    with pytest.raises(Exception, match="empty_images must be one of"):
        build_task("det3d", {"empty_images": "keep"})
