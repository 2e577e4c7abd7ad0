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
    ``num_replicas > 1`` each rank takes an interleaved share of the permutation, padded by
    repetition so that all ranks see the same number of samples.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, num_replicas: int = 1) -> None:
        if size == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch ``epoch`` from its ``skip``-th sample (of this rank) on."""
        self.epoch, self.skip = epoch, skip

    def per_replica(self) -> int:
        """Samples each rank sees per epoch."""
        return -(-self.size // self.num_replicas)

    def __len__(self) -> int:
        return self.per_replica() - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        total = self.per_replica() * self.num_replicas
        order = np.concatenate([order, order[: total - self.size]])
        seeds = rng.integers(0, 2**63 - 1, size=total)
        positions = range(self.rank, total, self.num_replicas)
        for position in list(positions)[self.skip :]:
            yield int(order[position]), int(seeds[position])


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
