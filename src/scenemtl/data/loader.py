"""From datasets to batches: seeded per-sample augmentation, a resumable sampler, collation."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from scenemtl.data.base import DenseDataset
from scenemtl.errors import DataError


class AugmentedDataset(Dataset):
    """Applies a transform to a dataset's samples; a key ``(index, seed)`` seeds the augmentation.

    Integer keys use seed ``index`` (evaluation transforms draw no random numbers anyway). The
    augmentation of a sample is therefore a pure function of the sampler's output, which is
    what makes resumed runs identical to uninterrupted ones, with any number of workers.
    """

    def __init__(self, dataset: DenseDataset, transform: Callable[[dict, np.random.Generator], dict]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, key)
        return self.transform(self.dataset[index], np.random.default_rng(seed))


class EpochSampler(Sampler):
    """Shuffles every epoch from ``(seed, epoch)``; yields ``(index, augmentation seed)``.

    ``start(epoch, skip)`` positions it ``skip`` samples into an epoch (for exact resume). With
    ``num_replicas > 1`` the permutation is cut into blocks of ``block`` samples (the per-process
    batch) dealt to the ranks in turn, padded by repetition so that every rank sees as many
    samples. Block ``b`` of the permutation is therefore the same micro-batch whether it goes to
    rank ``b mod W`` of W processes or is the ``b``-th accumulation step of one process, which is
    what makes W processes equal one process with W-fold gradient accumulation.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, num_replicas: int = 1, block: int = 1) -> None:
        if size == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.num_replicas, self.block = rank, num_replicas, max(1, block)
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch ``epoch`` from its ``skip``-th sample (of this rank) on."""
        self.epoch, self.skip = epoch, skip

    def per_replica(self) -> int:
        """Samples each rank sees per epoch."""
        chunk = self.block * self.num_replicas
        return -(-self.size // chunk) * self.block

    def __len__(self) -> int:
        return self.per_replica() - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        total = self.per_replica() * self.num_replicas
        order = np.resize(order, total)  # pads by repeating the permutation from its start
        seeds = rng.integers(0, 2**63 - 1, size=total)
        positions = [p for p in range(total) if (p // self.block) % self.num_replicas == self.rank]
        for position in positions[self.skip :]:
            yield int(order[position]), int(seeds[position])


class ShardSampler(Sampler):
    """Evaluation: rank ``r`` of ``W`` takes indices r, r+W, …, without padding (no sample counts twice)."""

    def __init__(self, size: int, rank: int = 0, num_replicas: int = 1) -> None:
        self.indices = list(range(rank, size, num_replicas))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def collate(samples: Sequence[dict]) -> dict:
    """Stack tensors along a new batch dimension; ``meta`` becomes a list of per-sample dicts."""
    batch: dict = {}
    for key in samples[0]:
        if key == "meta":
            batch["meta"] = [s.get("meta", {}) for s in samples]
            continue
        shapes = {tuple(s[key].shape) for s in samples}
        if len(shapes) > 1:
            ids = [s.get("meta", {}).get("id") for s in samples]
            raise DataError(
                f"cannot batch '{key}' of different sizes {sorted(shapes)} (samples {ids}): set data.eval_pad to a "
                "size at least as large as the largest image, or data.eval_batch_size=1 / a training crop"
            )
        batch[key] = torch.stack([s[key] for s in samples])
    return batch
