"""The Visual Decathlon in the release's layout: COCO-style annotations, per-domain folders, the mean/std
pickle; labels, the domains' geometry and normalisation, grouped batches, and the decathlon score."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenemtl.data import transforms as T
from scenemtl.data.decathlon import CATEGORY_BASE, DOMAINS, VisualDecathlon
from scenemtl.data.loader import EpochSampler
from scenemtl.errors import DataError
from scenemtl.metrics.decathlon import BASELINE_ACCURACY, decathlon_score, domain_score, max_error

#: three domains of the fixture: (image size H × W as released, images per split)
FIXTURE = {"daimlerpedcls": ((144, 72), 4), "dtd": ((72, 92), 3), "svhn": ((72, 72), 3)}
STATS = {
    "daimlerpedcls": ([0.48, 0.48, 0.48], [0.23, 0.23, 0.23]),
    "dtd": ([0.527, 0.470, 0.424], [0.252, 0.241, 0.250]),
    "svhn": ([0.44, 0.44, 0.47], [0.20, 0.20, 0.20]),
}


def write_decathlon(root: Path, domains: dict = FIXTURE, test_labels: bool = False) -> Path:
    """``decathlon-1.0`` as the release unpacks: annotations/<d>_<split>.json (COCO style, category ids
    domain·10⁷ + class, file names relative to the root), data/<d>/<split>/<class folder>/<n>.jpg, and the
    per-domain mean/std pickle (a dict of float64 arrays, as the published file)."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for domain, ((height, width), count) in domains.items():
        base = CATEGORY_BASE[domain]
        categories = [{"id": base + k + 1, "name": f"{domain}-class-{k}", "supercategory": domain} for k in range(DOMAINS[domain])]
        for split in ("train", "val", "test"):
            images, annotations = [], []
            for n in range(count):
                label = (n * 7 + (split == "val")) % DOMAINS[domain]
                image_id = base + 200000 * (("train", "val", "test").index(split) + 1) + n
                folder = f"data/{domain}/{split}" + ("" if split == "test" else f"/{label + 1:04d}")
                name = f"{folder}/{n:06d}.jpg"
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / name, quality=95)
                images.append({"id": image_id, "width": width, "height": height, "file_name": name})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": base + label + 1, "segmentation": [], "area": 0})
            data = {"info": {"description": "Decathlon"}, "images": images, "categories": categories, "licenses": []}
            if split == "test":
                (root / "annotations" / f"{domain}_test_stripped.json").write_text(json.dumps(data))
                if test_labels:
                    (root / "annotations" / f"{domain}_test.json").write_text(json.dumps({**data, "annotations": annotations}))
            else:
                (root / "annotations" / f"{domain}_{split}.json").write_text(json.dumps({**data, "annotations": annotations[::-1]}))
    stats = {f"{d}{kind}": np.array(STATS[d][k], dtype=np.float64) for d in domains for k, kind in enumerate(("mean", "std"))}
    (root / "decathlon_mean_std.pickle").write_bytes(pickle.dumps(stats, protocol=2))
    return root


def test_labels_are_the_ranks_of_the_category_ids_and_other_domains_are_unlabelled(tmp_path):
    root = write_decathlon(tmp_path / "decathlon-1.0")
    dataset = VisualDecathlon(str(root), "train", list(FIXTURE))
    assert len(dataset) == 10 and dataset.domains == ["daimlerpedcls", "dtd", "svhn"]  # MTAN's order
    seen = {}
    for index in range(len(dataset)):
        sample = dataset.sample(index)
        domain = sample["meta"]["domain"]
        n = int(sample["meta"]["id"].split("/")[1]) % 200000
        assert int(sample[domain]) == (n * 7) % DOMAINS[domain]  # annotations were written in reverse: paired by image id
        assert all(int(sample[d]) == -1 for d in FIXTURE if d != domain) and sample["meta"]["labelled"] == [domain]
        assert sample[domain].dtype == torch.int64 and sample[domain].shape == ()
        seen[domain] = sample
    assert dataset.class_names["dtd"][3] == "dtd-class-3" and dataset.category_id("dtd", 3) == CATEGORY_BASE["dtd"] + 4
    # training geometry: portrait daimler and wide dtd keep their size for the random crop; svhn is centre-cropped, never flipped
    assert tuple(seen["daimlerpedcls"]["image"].shape) == (3, 144, 72) and tuple(seen["dtd"]["image"].shape) == (3, 72, 92)
    assert seen["svhn"]["meta"]["flip"] is False and "flip" not in seen["dtd"]["meta"]
    # evaluation: every image centre-cropped to 72×72
    val = VisualDecathlon(str(root), "val", list(FIXTURE))
    assert all(tuple(val.sample(i)["image"].shape) == (3, 72, 72) for i in range(len(val)))
    assert [len(g) for g in dataset.groups()] == [4, 3, 3] and dataset.groups()[1] == [4, 5, 6]


def test_test_split_reads_the_released_labels_when_unzipped_else_scores_nothing(tmp_path):
    stripped = VisualDecathlon(str(write_decathlon(tmp_path / "a")), "test", ["dtd"])
    assert all(int(stripped.sample(i)["dtd"]) == -1 for i in range(len(stripped)))
    labelled = VisualDecathlon(str(write_decathlon(tmp_path / "b", test_labels=True)), "test", ["dtd"])
    assert [int(labelled.sample(i)["dtd"]) for i in range(len(labelled))] == [(n * 7) % 47 for n in range(3)]


def test_each_domain_is_normalised_with_its_own_statistics_and_svhn_never_flips(tmp_path):
    root = write_decathlon(tmp_path / "decathlon-1.0")
    dataset = VisualDecathlon(str(root), "val", list(FIXTURE))
    normalise = T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for index in (0, 4):
        sample = dataset.sample(index)
        mean, std = STATS[sample["meta"]["domain"]]
        expected = (sample["image"].float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        out = normalise(dataset.sample(index))
        assert torch.allclose(out["image"], expected, atol=1e-5) and "mean" not in out["meta"]
    imagenet = VisualDecathlon(str(root), "val", ["dtd"], normalisation="imagenet")
    assert "mean" not in imagenet.sample(0)["meta"]
    train = VisualDecathlon(str(root), "train", list(FIXTURE))
    flip = T.RandomHorizontalFlip({}, p=1.0)
    svhn = train.sample(7)
    assert svhn["meta"]["domain"] == "svhn" and torch.equal(flip(train.sample(7), np.random.default_rng(0))["image"], svhn["image"])
    dtd = train.sample(4)
    assert torch.equal(flip(train.sample(4), np.random.default_rng(0))["image"], dtd["image"].flip(-1))


def test_grouped_batches_never_mix_domains_and_resume_exactly(tmp_path):
    groups = [list(range(0, 5)), list(range(5, 8)), list(range(8, 14))]
    sampler = EpochSampler(14, seed=3, block=2, groups=groups)
    order = [index for index, _ in sampler]
    assert len(order) == sampler.per_replica() == 6 + 4 + 6  # each group padded to whole batches
    batches = [order[i : i + 2] for i in range(0, len(order), 2)]
    owner = [next(k for k, g in enumerate(groups) if i in g) for i in order]
    assert all(len({owner[2 * b], owner[2 * b + 1]}) == 1 for b in range(len(batches)))
    assert owner == sorted(owner)  # the groups one after another, in order
    assert set(order) == set(range(14))
    sampler.start(0, skip=5)
    assert [index for index, _ in sampler] == order[5:]
    # two ranks: each rank's batches stay within one group too, and together they cover every sample
    ranks = [EpochSampler(14, seed=3, block=2, rank=r, num_replicas=2, groups=groups) for r in (0, 1)]
    for rank in ranks:
        mine = [index for index, _ in rank]
        assert all(len({next(k for k, g in enumerate(groups) if i in g) for i in mine[j : j + 2]}) == 1 for j in range(0, len(mine), 2))
    assert set().union(*[{i for i, _ in r} for r in ranks]) == set(range(14))


def test_a_crafted_statistics_pickle_is_refused_without_running_code(tmp_path):
    root = write_decathlon(tmp_path / "decathlon-1.0")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (root / "decathlon_mean_std.pickle").write_bytes(pickle.dumps({"dtdmean": Payload()}))
    with pytest.raises(DataError, match="decathlon_mean_std.pickle.*pathlib"):
        VisualDecathlon(str(root), "train", ["dtd"])
    assert not marker.exists()


def test_missing_or_malformed_annotations_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="annotations.*decathlon-1.0-devkit"):
        VisualDecathlon(str(tmp_path), "train", ["dtd"])
    root = write_decathlon(tmp_path / "decathlon-1.0")
    (root / "annotations" / "dtd_train.json").write_text(json.dumps({"images": [{"id": 1}], "categories": []}))
    with pytest.raises(DataError, match="dtd_train.json.*'file_name'"):
        VisualDecathlon(str(root), "train", ["dtd"])


def test_data_check_reads_every_split_of_the_fixture(tmp_path):
    from scenemtl.data.check import check_dataset

    root = write_decathlon(tmp_path / "decathlon-1.0", test_labels=True)
    # the fixture has three of the ten domains: check the dataset class with those tasks
    report = check_dataset("decathlon", str(root), splits=["val"], options={}, tasks=list(FIXTURE))
    assert report.ok, report.problems
    assert report.samples["val"] == 10


def test_decathlon_score_on_hand_cases():
    # the baseline ("Finetune") scores 250 per domain, 2500 in all; no error scores 1000; E ≥ E_max scores 0
    errors = {domain: 100 - accuracy for domain, accuracy in BASELINE_ACCURACY.items()}
    total, parts = decathlon_score(errors)
    assert total == pytest.approx(2500) and all(v == pytest.approx(250) for v in parts.values())
    assert domain_score("svhn", 0.0) == 1000 and domain_score("svhn", max_error("svhn")) == 0 and domain_score("svhn", 50) == 0
    values = [domain_score("dtd", e) for e in np.linspace(0, 100, 41)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert max_error("dtd") == pytest.approx(2 * 44.47)
    # Rebuffi et al.'s "Res. adapt." accuracies (their table, two decimals) against its published score 2118
    adapters = [59.67, 56.68, 81.20, 93.88, 50.85, 97.05, 66.24, 89.62, 96.13, 47.45]
    columns = ["imagenet12", "aircraft", "cifar100", "daimlerpedcls", "dtd", "gtsrb", "vgg-flowers", "omniglot", "svhn", "ucf101"]
    total, _ = decathlon_score({d: 100 - a for d, a in zip(columns, adapters)})
    assert math.isclose(total, 2118, abs_tol=2.0)
    with pytest.raises(Exception, match="not a Visual Decathlon domain"):
        domain_score("mnist", 1.0)
