"""From datasets to batches: seeded per-sample augmentation, a resumable sampler, collation, and the
memory settings of the processes that load."""

from __future__ import annotations


from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from scenemtl import malloc
from scenemtl.data.base import DenseDataset
from scenemtl.fileio import Stored, fill_outside, lookup
from scenemtl.errors import DataError


class AugmentedDataset(Dataset):
    """Applies a transform to a dataset's samples; a key ``(index, seed)`` seeds the augmentation.

    Integer keys use seed ``index`` (evaluation transforms draw no random numbers anyway). A
    transform that ``reads_stored`` (``Compose``) gets ``dataset.stored_sample``; with
    ``keep_stored`` its ``Stored`` values stay 8-bit, for ``collate`` to batch as ``StoredBatch``. The
    augmentation of a sample is therefore a pure function of the sampler's output, which is
    what makes resumed runs identical to uninterrupted ones, with any number of workers.
    """

    def __init__(self, dataset: DenseDataset, transform: Callable[..., dict], keep_stored: bool = False) -> None:
        self.dataset = dataset
        self.transform = transform
        self.keep_stored = keep_stored and getattr(transform, "reads_stored", False)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng(seed)
        stored_sample = getattr(self.dataset, "stored_sample", None)  # datasets not derived from DenseDataset lack it
        if stored_sample is None or not getattr(self.transform, "reads_stored", False):
            return self.transform(self.dataset[index], rng)
        sample = stored_sample(index)  # the transform decodes what it keeps
        return self.transform(sample, rng, keep_stored=True) if self.keep_stored else self.transform(sample, rng)


class EpochSampler(Sampler):
    """Shuffles every epoch from ``(seed, epoch)``; yields ``(index, augmentation seed)``.

    ``start(epoch, skip)`` positions it ``skip`` samples into an epoch (for exact resume). With
    ``num_replicas > 1`` the permutation is cut into blocks of ``block`` samples (the per-process
    batch) dealt to the ranks in turn, padded by repetition so that every rank sees as many
    samples. Block ``b`` of the permutation is therefore the same micro-batch whether it goes to
    rank ``b mod W`` of W processes or is the ``b``-th accumulation step of one process, which is
    what makes W processes equal one process with W-fold gradient accumulation.

    ``groups`` (lists of indices, e.g. a multi-domain dataset's domains): each epoch visits the groups
    one after another in the given order, each shuffled and padded by repetition to whole blocks of
    every rank, so that no batch mixes two groups (MTAN's Visual Decathlon loop).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        num_replicas: int = 1,
        block: int = 1,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if size == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.num_replicas, self.block = rank, num_replicas, max(1, block)
        self.epoch, self.skip = 0, 0
        self.groups = None if groups is None else [np.asarray(list(g), dtype=np.int64) for g in groups if len(g)]
        if self.groups is not None and (not self.groups or any(((g < 0) | (g >= size)).any() for g in self.groups)):
            raise ValueError(f"groups must hold indices in 0..{size - 1}")

    def start(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch ``epoch`` from its ``skip``-th sample (of this rank) on."""
        self.epoch, self.skip = epoch, skip

    def per_replica(self) -> int:
        """Samples each rank sees per epoch."""
        chunk = self.block * self.num_replicas
        sizes = [len(g) for g in self.groups] if self.groups is not None else [self.size]
        return sum(-(-size // chunk) for size in sizes) * self.block

    def __len__(self) -> int:
        return self.per_replica() - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.per_replica() * self.num_replicas
        if self.groups is None:
            order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
            order = np.resize(order, total)  # pads by repeating the permutation from its start
        else:
            chunk = self.block * self.num_replicas
            parts = []
            for group in self.groups:
                part = group[rng.permutation(len(group))] if self.shuffle else group
                parts.append(np.resize(part, -(-len(group) // chunk) * chunk))
            order = np.concatenate(parts)
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


def worker_init(worker_id: int, tuned: bool = True) -> None:
    """``DataLoader(worker_init_fn=...)``: OpenCV single-threaded (the workers are the parallelism;
    OpenCV's own threads would compete with them for the cores), and with ``tuned``
    (``train.allocator``) the malloc settings of ``scenemtl.malloc``."""
    import cv2

    cv2.setNumThreads(0)
    if tuned:
        malloc.tune()


class StoredBatch:
    """A batch of ``Stored`` values: 8-bit arrays, each sample's tables and data box; ``decode()``
    (on whatever device the batch was moved to, ``to``) gives the batch's tensor in the contract.

    The training loader ships these instead of decoded tensors (``data.decode_on_device``): a
    NYUD batch travels from the workers to the device as about a third of the bytes (uint8 image,
    labels and normals instead of float32 and int64), and the lookups run where the batch lands,
    with exactly the values of decoding in the workers."""

    def __init__(self, arrays: torch.Tensor, tables: torch.Tensor, boxes: list, fills: list, channel_axis: bool) -> None:
        self.arrays, self.tables, self.boxes, self.fills, self.channel_axis = arrays, tables, boxes, fills, channel_axis

    @classmethod
    def of(cls, values: Sequence[Stored], shared: bool = True) -> StoredBatch:
        """The samples' values batched: arrays copied once into one buffer (in a worker with ``shared``: in
        shared memory, as ``default_collate`` does)."""
        first = values[0].array
        channels = len(values[0].tables)
        shape = (len(values), *first.shape[:2]) + ((channels,) if first.ndim == 3 else ())
        if shared and torch.utils.data.get_worker_info() is not None:
            arrays = torch.empty(0, dtype=torch.uint8).new(torch.UntypedStorage._new_shared(int(np.prod(shape)))).view(shape)
        else:
            arrays = torch.empty(shape, dtype=torch.uint8)
        out = arrays.numpy()
        for b, value in enumerate(values):
            array = value.array
            if array.ndim == 3 and (array.shape[2], channels) == (4, 3):  # RGBX words: the fourth byte stays behind
                import cv2

                cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGBA2RGB, dst=out[b])
            else:
                np.copyto(out[b], array[..., :channels] if array.ndim == 3 else array)
        tables = torch.from_numpy(np.stack([np.stack(v.tables) for v in values]))
        return cls(arrays, tables, [v.box for v in values], [v.fill for v in values], values[0].channel_axis)

    @property
    def shape(self) -> torch.Size:
        """The shape of the decoded batch."""
        batch, height, width = self.arrays.shape[:3]
        if self.arrays.ndim == 4:
            return torch.Size((batch, self.arrays.shape[3], height, width))
        return torch.Size((batch, 1, height, width) if self.channel_axis else (batch, height, width))

    def pin_memory(self) -> StoredBatch:
        """Page-locked (the DataLoader's pinning thread calls this with ``data.pin_memory`` on CUDA)."""
        return StoredBatch(self.arrays.pin_memory(), self.tables.pin_memory(), self.boxes, self.fills, self.channel_axis)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StoredBatch:
        return StoredBatch(
            self.arrays.to(device, non_blocking=non_blocking),
            self.tables.to(device, non_blocking=non_blocking),
            self.boxes,
            self.fills,
            self.channel_axis,
        )

    def decode(self, gather: bool | None = None) -> torch.Tensor:
        """The batch's values: ``tables[b, c][arrays[b, ..., c]]``, each sample's fill outside its box.

        ``gather``: one tensor gather (the default off the CPU) rather than OpenCV's table lookup
        plane by plane (the default on the CPU); the values are the same."""
        arrays = self.arrays if self.arrays.ndim == 4 else self.arrays[..., None]
        batch, height, width, channels = arrays.shape
        if not (arrays.device.type != "cpu" if gather is None else gather):
            import cv2

            tables = self.tables.numpy()
            out = np.empty((batch, channels, height, width), dtype=tables.dtype)
            for b in range(batch):
                sample = arrays[b].numpy()  # H×W×C, contiguous
                planes = cv2.split(sample) if channels > 1 else [sample[..., 0]]
                for c in range(channels):
                    lookup(planes[c], tables[b, c], out=out[b, c])
                if self.boxes[b] is not None:  # (in numpy: no torch thread pool woken beside the loader's workers)
                    fill_outside(out[b], self.boxes[b], self.fills[b])
            values = torch.from_numpy(out)
        else:  # one gather: (sample, channel) picks its table, the stored value its entry
            offsets = torch.arange(batch * channels, device=arrays.device).view(batch, channels, 1, 1) * self.tables.shape[-1]
            values = self.tables.reshape(-1)[arrays.permute(0, 3, 1, 2).long() + offsets]
            for b, (box, fill) in enumerate(zip(self.boxes, self.fills)):
                if box is not None:
                    fill_outside(values[b], box, fill)
        return values if self.arrays.ndim == 4 or self.channel_axis else values[:, 0]


class Shipment:
    """A batch collated in a DataLoader worker that travels to the main process as the bytes of its
    arrays (pickled through the worker's result pipe) instead of in shared memory; unpickled, it is the
    batch itself (a dict of tensors and ``StoredBatch`` values, as ``collate`` gives in the main process).

    Why (``data.worker_transfer``): each batch in shared memory is a fresh segment whose pages the
    worker faults in one by one as it writes them (a worker's ``collate`` of a 6 MB NYUD batch of 448×576
    crops took about 7 ms of CPU time on this project's CPUs), and the main process faults them in again
    when it reads them; through the pipe the batch is written to the worker's reused heap and copied
    twice (pickle, pipe): about 1 ms (2 workers: 2.16× → 2.49× the official loader's throughput,
    ``benchmarks/results/loader_vs_official.md``). Values other than CPU tensors of a numpy type
    (nested objects, instance targets) travel as torch pickles them."""

    def __init__(self, batch: dict) -> None:
        self.batch = batch

    def __reduce__(self) -> tuple:
        return (_unpack, ({key: _pack(value) for key, value in self.batch.items()},))


_NUMPY_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32, torch.float64, torch.bool}


def _numpy(tensor: object) -> np.ndarray | None:
    """A CPU tensor's array (shared, no copy), ``None`` for anything numpy cannot hold."""
    if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and not tensor.requires_grad and tensor.dtype in _NUMPY_DTYPES:
        return tensor.numpy()
    return None


def _pack(value: object) -> tuple:
    if isinstance(value, StoredBatch):
        arrays, tables = _numpy(value.arrays), _numpy(value.tables)
        if arrays is not None and tables is not None:
            return ("stored", arrays, tables, value.boxes, value.fills, value.channel_axis)
    array = _numpy(value)
    return ("object", value) if array is None else ("tensor", array)


def _unpack(items: dict) -> dict:
    out = {}
    for key, item in items.items():
        if item[0] == "tensor":
            out[key] = torch.from_numpy(item[1])
        elif item[0] == "stored":
            out[key] = StoredBatch(torch.from_numpy(item[1]), torch.from_numpy(item[2]), *item[3:])
        else:
            out[key] = item[1]
    return out


def _stack(values: list) -> torch.Tensor | None:
    """Tensors or arrays of one shape stacked in ordinary memory (None: something else, for ``default_collate``)."""
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(values)
    if all(isinstance(v, np.ndarray) and v.dtype != object for v in values):
        return torch.from_numpy(np.stack(values))
    return None


def collate(samples: Sequence[dict], pipe: bool = False) -> dict | Shipment:
    """Stack tensors along a new batch dimension; ``meta`` becomes a list of per-sample dicts;
    ``Stored`` values become a ``StoredBatch``; instance targets (objects that are not tensors, e.g.
    ``detection.Boxes3D``, one per image with any number of instances) become a list.

    In a DataLoader worker the batch is stacked straight into shared memory (``default_collate``'s
    rule), so handing it to the main process copies nothing; with ``pipe`` it is stacked in the
    worker's own memory and handed over as a ``Shipment`` (the main process receives the dict)."""
    pipe = pipe and torch.utils.data.get_worker_info() is not None  # (in the main process nothing travels)
    batch: dict = {}
    for key in samples[0]:
        if key == "meta":
            batch["meta"] = [s.get("meta", {}) for s in samples]
            continue
        values = [s[key] for s in samples]
        if not any(isinstance(v, (torch.Tensor, Stored, np.ndarray)) for v in values):
            batch[key] = values  # instance targets: one object per image
            continue
        if any(isinstance(v, Stored) for v in values):
            if all(
                isinstance(v, Stored) and v.array.shape == values[0].array.shape and len(v.tables) == len(values[0].tables) for v in values
            ):
                batch[key] = StoredBatch.of(values, shared=not pipe)
                continue
            for s in samples:
                s[key] = s[key].decode() if isinstance(s[key], Stored) else s[key]
        shapes = {tuple(s[key].shape) for s in samples}
        if len(shapes) > 1:
            ids = [s.get("meta", {}).get("id") for s in samples]
            raise DataError(
                f"cannot batch '{key}' of different sizes {sorted(shapes)} (samples {ids}): set data.eval_pad to a "
                "size at least as large as the largest image, or data.eval_batch_size=1 / a training crop"
            )
        stacked = _stack([s[key] for s in samples]) if pipe else None
        batch[key] = default_collate([s[key] for s in samples]) if stacked is None else stacked
    return Shipment(batch) if pipe else batch
