"""Each task checks its own target values (the trainer's first batch, ``scenemtl data check``)."""

import re

import pytest
import torch

from scenemtl.engine.trainer import Trainer
from scenemtl.errors import DataError
from scenemtl.tasks import build_task

CLASSES = {"semseg": ["a", "b", "c"]}


@pytest.mark.parametrize(
    "name, good, bad, message",
    [
        ("semseg", torch.tensor([[0, 2], [255, 1]]), torch.tensor([[0, 3], [255, -1]]), r"ids \[-1, 3\] outside 0..2"),
        ("edge", torch.tensor([[[0.0, 1.0], [255.0, 1.0]]]), torch.tensor([[[0.0, 0.5], [1.0, 1.0]]]), "other than 0, 1"),
        ("depth", torch.tensor([[[0.0, 2.5], [float("nan"), 1.0]]]), torch.tensor([[[-1.0, 2.5], [0.0, 1.0]]]), "negative values"),
        (
            "normals",
            torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]]]),
            torch.tensor([[[0.5, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]]]),
            "not unit vectors",
        ),
    ],
)
def test_each_task_names_what_is_wrong_with_its_target(name, good, bad, message):
    task = build_task(name, {}, CLASSES)
    assert task.check_target(good) is None and task.check_target(good[None]) is None  # one sample or a batch
    assert task.check_target(bad) is not None
    assert re.search(message, task.check_target(bad))


def test_a_depth_map_without_a_valid_pixel_is_suspicious_in_a_sample_only():
    depth = build_task("depth", {})
    empty = torch.zeros(1, 2, 2)
    assert depth.check_target(empty) is None and "no valid" in depth.check_target(empty, sample=True)


def test_the_trainer_checks_the_first_batch_through_the_tasks(tiny_config):
    trainer = Trainer(tiny_config(), progress=False, log=False)
    trainer.close()
    batch = next(iter(trainer.loader))
    batch["semseg"][0, 0, 0] = 99
    with pytest.raises(DataError, match=r"semseg has ids \[99\] outside .* in samples"):
        trainer.train_step([batch])
