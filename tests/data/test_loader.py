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
