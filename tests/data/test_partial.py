"""Partial labels: availability maps (one-label, random-labels), masking, DiffusionMTL's loss rescaling, balancers."""

import json
import os
import math
from collections import Counter

import numpy as np
import pytest
import torch

from scenemtl.balancing import BALANCERS
from scenemtl.data.partial import PASCAL_FLAG_ORDER, generate, import_flags, read_availability, write_availability
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError, DataError
from scenemtl.engine.evaluate import move

TASKS = ["semseg", "depth", "normals", "edge", "saliency"]
IDS = [f"img{i:04d}" for i in range(103)]


def test_one_label_gives_each_image_exactly_one_task_balanced_and_seeded():
    labels = generate(IDS, TASKS, "one-label", seed=3)
    assert list(labels) == IDS and all(len(v) == 1 for v in labels.values())
    counts = Counter(v[0] for v in labels.values())
    assert set(counts) == set(TASKS) and max(counts.values()) - min(counts.values()) <= 1
    assert generate(IDS, TASKS, "one-label", seed=3) == labels
    assert generate(IDS, TASKS, "one-label", seed=4) != labels


def test_random_labels_are_non_empty_proper_subsets_of_every_size():
    labels = generate(IDS, TASKS, "random-labels", seed=0)
    sizes = Counter(len(v) for v in labels.values())
    assert set(sizes) == {1, 2, 3, 4}  # 1..T−1, never all five
    assert all(len(set(v)) == len(v) and set(v) <= set(TASKS) for v in labels.values())
    assert generate(IDS, TASKS, "random-labels", seed=0) == labels
    with pytest.raises(ConfigError, match="unknown setting"):
        generate(IDS, TASKS, "half-labels", seed=0)


def test_maps_round_trip_as_json_and_published_flag_files_import(tmp_path):
    labels = generate(IDS, TASKS, "random-labels", seed=1)
    write_availability(tmp_path / "labels.json", labels, TASKS, "random-labels", 1)
    assert json.loads((tmp_path / "labels.json").read_text())["setting"] == "random-labels"
    assert read_availability(tmp_path / "labels.json", TASKS) == labels
    assert read_availability(tmp_path / "labels.json", ["semseg"]) == {k: [t for t in v if t == "semseg"] for k, v in labels.items()}
    flags = {"2008_000002": [1, 0, 0, 0, 0], "2008_000003": [0, 1, 1, 0, 1]}  # semseg, parts, sal, normals, edge
    np.save(tmp_path / "onelabel.npy", flags, allow_pickle=True)
    torch.save({k: torch.tensor(v) for k, v in flags.items()}, tmp_path / "onelabel.pth")
    expected = {"2008_000002": ["semseg"], "2008_000003": ["human_parts", "saliency", "edge"]}
    assert import_flags(tmp_path / "onelabel.npy") == expected == import_flags(tmp_path / "onelabel.pth")
    assert PASCAL_FLAG_ORDER[2] == "saliency"
    np.save(tmp_path / "short.npy", {"a": [1, 0]}, allow_pickle=True)
    with pytest.raises(DataError, match="image a has 2 flags, expected 5"):
        import_flags(tmp_path / "short.npy")
    # numpy-array flags (as published maps may hold) load too
    np.save(tmp_path / "arrays.npy", {k: np.array(v, dtype=np.int64) for k, v in flags.items()}, allow_pickle=True)
    assert import_flags(tmp_path / "arrays.npy") == expected


class _Payload:
    """A pickle that would run a command when loaded by np.load(allow_pickle=True)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_npy_flag_file_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "ran"
    np.save(tmp_path / "evil.npy", np.array({"2008_000002": _Payload(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"evil.npy.*posix.system|evil.npy.*os.system"):
        import_flags(tmp_path / "evil.npy")
    assert not marker.exists()


def partial_trainer(tiny_config, *overrides):
    config = tiny_config(
        "data.labels.setting=one-label",
        "data.augment.scale=null",
        "data.augment.flip=false",
        "data.augment.photometric=false",
        "train.init_output_bias=false",
        *overrides,
    )
    return Trainer(config, progress=False, log=False)


def test_unlabelled_targets_are_ignore_values_and_the_map_is_written(tiny_config):
    trainer = partial_trainer(tiny_config)
    written = json.loads((trainer.config.run_dir / "labels.json").read_text())
    assert written["setting"] == "one-label" and len(written["labels"]) == 16
    for index in range(4):
        sample = trainer.train_set.sample(index)
        (kept,) = sample["meta"]["labelled"]
        for name, task in trainer.tasks.items():
            hidden = bool((sample[name] == task.pad_value).all())
            assert hidden == (name != kept), (name, kept)  # only the labelled task keeps its target


def test_masked_targets_do_not_reach_the_gradients_and_the_rescaling_is_the_formula(tiny_config):
    trainer = partial_trainer(tiny_config)
    batch = move(next(iter(trainer.loader)), trainer.device)
    # give every sample two labelled tasks, so the rescaling factor is 5 / 2
    for meta in batch["meta"]:
        meta["labelled"] = ["semseg", "depth"]
    trainer.model.train()

    def gradients(batch):
        trainer.model.zero_grad()
        output = trainer.model(batch["image"])
        losses = trainer.task_losses(output, batch)
        sum(losses.values()).backward()
        return losses, [p.grad.clone() if p.grad is not None else None for p in trainer.model.parameters()]

    losses, grads = gradients(batch)
    changed = dict(batch)
    changed["normals"] = torch.nn.functional.normalize(torch.randn_like(batch["normals"]), dim=1)  # unlabelled
    changed["edge"] = (torch.rand_like(batch["edge"]) > 0.5).float()
    changed_losses, changed_grads = gradients(changed)
    assert all(torch.equal(a, b) for a, b in zip(grads, changed_grads) if a is not None)
    assert changed_losses["normals"].item() == 0.0 and changed_losses["edge"].item() == 0.0
    # the formula: Σ_b (T / |labelled_b|) · loss_t(sample b) / B
    output = trainer.model(batch["image"])
    task = trainer.tasks["semseg"]
    expected = sum(
        5 / 2 * task.loss(output.final["semseg"][b : b + 1], batch["semseg"][b : b + 1]) for b in range(len(batch["meta"]))
    ) / len(batch["meta"])
    assert trainer.task_losses(output, batch)["semseg"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["semseg"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(BALANCERS.names()))
def test_every_balancer_trains_on_one_label_batches(tiny_config, name):
    trainer = partial_trainer(tiny_config, f"balancer.name={name}", "train.steps=2", f"name=partial-{name}")
    report = trainer.fit()
    assert all(math.isfinite(v) for metrics in report["metrics"].values() for v in metrics.values() if isinstance(v, float))
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
