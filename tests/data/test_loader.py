"""The resumable sampler, seeded augmentation and collation."""

import torch

from scenemtl.data.loader import EpochSampler, collate


def test_sampler_is_a_permutation_per_epoch_and_reproducible():
    sampler = EpochSampler(10, seed=3)
    sampler.start(0)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(10))
    assert list(sampler) == first
    sampler.start(1)
    second = list(sampler)
    assert [i for i, _ in second] != [i for i, _ in first]
    assert {s for _, s in first}.isdisjoint({s for _, s in second})


def test_sampler_skips_into_an_epoch_for_resume():
    sampler = EpochSampler(10, seed=0)
    sampler.start(2)
    whole = list(sampler)
    sampler.start(2, skip=4)
    assert list(sampler) == whole[4:] and len(sampler) == 6


def test_sampler_shards_across_ranks_without_overlap():
    shards = []
    for rank in range(3):
        sampler = EpochSampler(10, seed=0, rank=rank, num_replicas=3)
        sampler.start(0)
        shards.append([i for i, _ in sampler])
    assert all(len(s) == 4 for s in shards)  # 10 samples padded to 12 so every rank takes 4 steps
    everything = sum(shards, [])
    assert set(everything) == set(range(10)) and len(everything) == 12


def test_collate_stacks_tensors_and_keeps_meta_per_sample():
    samples = [{"image": torch.zeros(3, 2, 2), "depth": torch.ones(1, 2, 2), "meta": {"id": str(i)}} for i in range(3)]
    batch = collate(samples)
    assert batch["image"].shape == (3, 3, 2, 2) and batch["depth"].shape == (3, 1, 2, 2)
    assert [m["id"] for m in batch["meta"]] == ["0", "1", "2"]


def test_a_shipment_unpickles_to_the_batch_it_carries():
    """A worker's batch through the pipe: tensors and stored batches arrive as equal tensors in ordinary memory,
    values numpy cannot hold (bfloat16, lists of objects) as torch pickles them."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import numpy as np

    from scenemtl.data.loader import Shipment, StoredBatch
    from scenemtl.fileio import Stored

    labels = np.concatenate([[255], np.arange(255)]).astype(np.int64)
    value = Stored(np.arange(20, dtype=np.uint8).reshape(4, 5), [labels]).pad((1, 0, 0, 2), 255)
    batch = {
        "image": torch.rand(2, 3, 4, 5),
        "semseg": StoredBatch.of([value, value]),
        "half": torch.rand(2, 3).to(torch.bfloat16),
        "boxes": [{"n": 1}, {"n": 2}],
        "meta": [{"id": "a"}, {"id": "b"}],
    }
    got = pickle.loads(ForkingPickler.dumps(Shipment(batch)))
    assert type(got) is dict and list(got) == list(batch)
    assert torch.equal(got["image"], batch["image"]) and not got["image"].is_shared()
    assert isinstance(got["semseg"], StoredBatch) and got["semseg"].boxes == batch["semseg"].boxes
    assert torch.equal(got["semseg"].decode(), batch["semseg"].decode())
    assert got["half"].dtype == torch.bfloat16 and torch.equal(got["half"], batch["half"])
    assert got["boxes"] == batch["boxes"] and got["meta"] == batch["meta"]


def test_loader_options_pick_the_pipe_on_a_cpu_with_workers():
    from scenemtl.config import load_config
    from scenemtl.engine.builder import loader_options

    def pipe(*overrides):
        function = loader_options(load_config(None, list(overrides)), persistent=True)["collate_fn"]
        return getattr(function, "keywords", {}).get("pipe", False)

    assert pipe("data.num_workers=2") and pipe("data.num_workers=2", "data.worker_transfer=pipe")
    assert not pipe("data.num_workers=2", "data.worker_transfer=shared")
    assert not pipe("data.num_workers=0")  # the main process collates: nothing travels
