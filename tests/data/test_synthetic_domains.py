"""synthetic_domains: ten drawn classification domains in the decathlon's sample contract, deterministic per
(seed, split, index), balanced, visibly different from one another, checked by ``data check`` and trainable."""

from __future__ import annotations

import json
import time
from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from scenemtl.data import DATASETS
from scenemtl.data.check import check_dataset
from scenemtl.data.synthetic_domains import DOMAIN_NAMES, DOMAINS, SIZE, SyntheticDomains
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError

CLASSES = {domain.name: len(domain.classes) for domain in DOMAINS}


def test_the_domains_differ_in_class_count_and_the_dataset_is_registered():
    assert len(DOMAIN_NAMES) == 10 and len(set(DOMAIN_NAMES)) == 10
    assert min(CLASSES.values()) == 2 and max(CLASSES.values()) == 20 and len(set(CLASSES.values())) >= 5
    info = DATASETS.get("synthetic_domains").info
    assert info.name == "synthetic_domains" and info.tasks == DOMAIN_NAMES
    assert info.task_types == {name: "classification" for name in DOMAIN_NAMES}
    assert all(len(info.class_names[name]) == count for name, count in CLASSES.items())


def test_samples_follow_the_decathlon_contract():
    dataset = SyntheticDomains(split="train", num_train=5)
    assert len(dataset) == 50 and dataset.domains == list(DOMAIN_NAMES)
    for index in range(len(dataset)):
        sample = dataset[index]
        meta = sample["meta"]
        domain = meta["domain"]
        assert sample["image"].dtype == torch.uint8 and tuple(sample["image"].shape) == (3, SIZE, SIZE)
        assert meta["labelled"] == [domain] and meta["size"] == (SIZE, SIZE) and meta["id"].startswith(f"{domain}/train_")
        assert set(sample) == {"image", "meta", *DOMAIN_NAMES}
        for name in DOMAIN_NAMES:
            target = sample[name]
            assert target.dtype == torch.int64 and target.shape == ()
            if name == domain:
                assert 0 <= int(target) < CLASSES[name]
            else:
                assert int(target) == -1
        # the domains whose answer a mirror changes are never flipped
        assert meta.get("flip", True) == (domain in ("shapes", "presence", "counting", "colours", "outlines"))


def test_deterministic_per_seed_split_and_index():
    a = SyntheticDomains(split="train", num_train=6, cache=False)
    b = SyntheticDomains(split="train", num_train=6)
    for index in (0, 7, 20, 33, 59):
        assert a.draw(index).tobytes() == b.draw(index).tobytes() == b.draw(index).tobytes()  # cached: the same
    assert not np.array_equal(a.draw(0), a.draw(1))
    assert not np.array_equal(a.draw(0), SyntheticDomains(split="val", num_val=6).draw(0))
    other = SyntheticDomains(split="train", num_train=6, seed=1)
    assert not np.array_equal(a.draw(0), other.draw(0))
    # the glyph alphabet is the seed's
    glyphs = DOMAIN_NAMES.index("glyphs") * 6
    assert not np.array_equal(a.glyphs[0][0], other.glyphs[0][0]) and not np.array_equal(a.draw(glyphs), other.draw(glyphs))
    # an index's image does not depend on how many images the split has, nor on the other domains asked for
    assert np.array_equal(a.draw(7), SyntheticDomains(split="train", num_train=9).draw(10))
    texture = SyntheticDomains(split="train", tasks=["texture"], num_train=6)
    assert np.array_equal(texture.draw(2), a.draw(6 + 2))


def test_groups_are_the_domains_and_classes_are_balanced():
    dataset = SyntheticDomains(split="val", num_val=45)
    groups = dataset.groups()
    assert len(groups) == 10 and sorted(i for g in groups for i in g) == list(range(len(dataset)))
    for name, group in zip(DOMAIN_NAMES, groups):
        assert {dataset.locate(i)[0] for i in group} == {name}
        counts = Counter(int(dataset[i][name]) for i in group)
        assert set(counts) == set(range(CLASSES[name]))  # every class present
        assert max(counts.values()) - min(counts.values()) <= 1


def test_a_task_list_and_the_domains_option_choose_the_domains():
    dataset = SyntheticDomains(split="train", tasks=["glyphs", "shapes"], num_train=4)
    assert dataset.domains == ["shapes", "glyphs"] and len(dataset) == 8  # in the table's order
    assert {dataset.locate(i)[0] for i in dataset.groups()[1]} == {"glyphs"}
    assert set(dataset[0]) == {"image", "meta", "shapes", "glyphs"}
    three = SyntheticDomains(split="train", domains=3, num_train=2)
    assert three.domains == list(DOMAIN_NAMES[:3]) and len(three) == 6


@pytest.mark.parametrize(
    "options, match",
    [
        ({"domains": 1}, "2 to 10 domains"),
        ({"domains": 11}, "2 to 10 domains"),
        ({"domains": "3"}, "2 to 10 domains"),
        ({"num_train": 0}, "num_train"),
        ({"num_val": 2.5}, "num_val"),
        ({"seed": -1}, "seed"),
        ({"domains": 3, "tasks": ["glyphs"]}, "not among the first 3 domains"),
        ({"tasks": ["semseg"]}, "no labels for task"),
        ({"split": "test"}, "no split 'test'"),
    ],
)
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticDomains(**{"split": "train", **options})


def test_drawing_is_fast():
    dataset = SyntheticDomains(split="train", num_train=30, cache=False)
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset.draw(index)
    per_image = (time.perf_counter() - start) / len(dataset)
    assert per_image < 3e-3  # about 0.3 ms on one core; loose for a loaded machine


def _nearest_mean_accuracy(train: SyntheticDomains, val: SyntheticDomains, k: int) -> float:
    """Top-1 of the nearest class mean of 18×18 thumbnails in domain ``k``, as a multiple of chance."""

    def features(dataset: SyntheticDomains, group: list[int]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([cv2.resize(dataset.draw(i), (18, 18), interpolation=cv2.INTER_AREA).ravel() for i in group]).astype(np.float32)
        return x / 255, np.array([dataset.locate(i)[2] for i in group])

    x, y = features(train, train.groups()[k])
    xv, yv = features(val, val.groups()[k])
    classes = int(y.max()) + 1
    means = np.stack([x[y == c].mean(axis=0) for c in range(classes)])
    predicted = ((xv[:, None] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    return float((predicted == yv).mean()) * classes


def test_the_domains_differ_in_statistics_and_difficulty():
    train = SyntheticDomains(split="train", num_train=200, num_val=60)
    val = SyntheticDomains(split="val", num_train=200, num_val=60)
    brightness = {name: float(np.mean([train.draw(i).mean() for i in group[:40]])) for name, group in zip(DOMAIN_NAMES, train.groups())}
    assert brightness["outlines"] < 60 and brightness["glyphs"] > 190 and 100 < brightness["texture"] < 160
    grey = {
        name: float(np.mean([np.ptp(train.draw(i).astype(int), axis=2).mean() for i in group[:20]]))
        for name, group in zip(DOMAIN_NAMES, train.groups())
    }
    assert grey["presence"] == grey["glyphs"] == 0 and min(grey[n] for n in ("shapes", "texture", "colours")) > 10
    # a nearest-class-mean on thumbnails: near chance on the shape and texture questions, far above it on glyphs
    ratio = {name: _nearest_mean_accuracy(train, val, k) for k, name in enumerate(DOMAIN_NAMES)}
    assert ratio["glyphs"] > 5 and ratio["shapes"] < 1.5 and ratio["texture"] < 1.5 and max(ratio.values()) / min(ratio.values()) > 4


def test_data_check_reports_ok():
    report = check_dataset("synthetic_domains", None, options={"num_train": 12, "num_val": 4})
    assert report.ok, report.format()
    assert report.samples == {"train": 120, "val": 40} and set(report.sizes) == {(SIZE, SIZE)}


def test_mtan_wrn_trains_on_grouped_batches_and_scores_every_domain(tiny_config, tmp_path):
    tasks = ", ".join(f"'{name}': {{}}" for name in DOMAIN_NAMES)
    config = tiny_config(
        f"tasks={{{tasks}}}",
        "data.name=synthetic_domains",
        "data.options={num_train: 4, num_val: 2}",
        "data.batching=grouped",
        "data.batch_size=2",
        "data.eval_batch_size=8",
        "data.augment={scale: null, flip: true, photometric: false}",
        "model={arch: mtan_wrn, options: {filters: [4, 8, 8, 16], blocks: 1}}",
        "train.optimizer=sgd",
        "train.steps=3",
        "train.lr=0.05",
    )
    trainer = Trainer(config, progress=False)
    batch = next(iter(trainer.loader))
    assert len({tuple(meta["labelled"]) for meta in batch["meta"]}) == 1  # one domain per batch
    trainer.fit()
    report = json.loads((trainer.run_dir / "results.json").read_text())
    assert set(report["metrics"]) == set(DOMAIN_NAMES)
    for name in DOMAIN_NAMES:
        assert 0 <= report["metrics"][name]["top1"] <= 100 and report["metrics"][name]["images"] == 2.0
    assert "decathlon" not in report  # the score applies to the real domains only
