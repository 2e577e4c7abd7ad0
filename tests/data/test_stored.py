"""8-bit stored values: picking, flipping, padding and decoding them, in a sample or a batch, gives
exactly the values of decoding first; the training loader's stored batches equal decoded ones."""

import numpy as np
import pytest
import torch

from scenemtl.config import load_config
from scenemtl.data.loader import AugmentedDataset, StoredBatch, collate
from scenemtl.engine import builder
from scenemtl.engine.evaluate import move
from scenemtl.fileio import Stored, lookup
from tests.data.test_nyud import write_nyud
from tests.data.test_pascal_context import write_pascal

NORMALS = 2 * np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(1)
LABELS = np.concatenate([[255], np.arange(255)]).astype(np.int64)


def test_lookup_equals_numpy_indexing_for_every_table_type():
    stored = np.random.default_rng(0).integers(0, 256, (7, 9), dtype=np.uint8)
    for table in (LABELS, NORMALS, NORMALS.astype(np.float64), (np.arange(256) % 7).astype(np.uint8), np.arange(256, dtype=np.int64) << 40):
        got = lookup(stored, table)
        assert got.dtype == table.dtype and np.array_equal(got, table[stored])


@pytest.mark.parametrize("channels, words", [(0, False), (3, False), (4, False), (3, True)])
def test_take_flip_pad_decode_equal_the_same_steps_on_decoded_values(channels, words):
    rng = np.random.default_rng(channels)
    shape = (13, 17) if channels == 0 else (13, 17, channels + words)  # words: a fourth byte without a table
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    tables = [LABELS] if channels == 0 else [NORMALS + c for c in range(channels)]
    stored = Stored(array, tables)
    decoded = stored.decode()
    want = (
        torch.from_numpy(LABELS[array])
        if channels == 0
        else torch.from_numpy(np.stack([tables[c][array[..., c]] for c in range(channels)]))
    )
    assert torch.equal(decoded, want) and tuple(decoded.shape) == stored.shape
    rows, cols = np.array([0, 0, 3, 12, 5]), np.array([16, 1, 1, 2, 9, 0])
    picked = stored.take(rows, cols)
    assert torch.equal(picked.decode(), want[..., rows[:, None], cols[None, :]])
    negate = (0,) if channels else ()
    flipped = picked.flip(negate=negate).decode()
    expected = want[..., rows[:, None], cols[None, :]].flip(-1)
    if channels:
        expected[0] *= -1
    assert torch.equal(flipped, expected)
    fill = 255 if channels == 0 else 0.0
    padded = picked.flip(negate=negate).pad((1, 2, 3, 0), fill).flip(negate=negate).decode()
    reference = torch.nn.functional.pad(expected.reshape(-1, 5, 6).double(), (1, 2, 3, 0), value=fill).reshape(*expected.shape[:-2], 8, 9)
    reference = reference.flip(-1)
    if channels:
        reference[0] *= -1
        reference[0][reference[0] == 0] = 0.0  # -0.0 and 0.0 compare equal either way
    assert torch.equal(padded.double(), reference) and padded.dtype == want.dtype


def _config(dataset, root, *overrides):
    return load_config(
        f"configs/{dataset}/hps.yaml",
        [f"data.root={root}", "data.batch_size=2", "data.augment.crop=[20,24]", "data.eval_pad=null", *overrides],
    )


def _nyud_config(root, *overrides):
    return _config("nyud", root, "data.augment.crop=[40,56]", *overrides)


def _fixture(dataset, root):
    if dataset == "nyud":
        ids = [f"{i:04d}" for i in range(6)]
        return write_nyud(root / "NYUDv2", ids=(ids, ids[:1]), size=(48, 64)), _nyud_config
    splits = {"train": [f"2008_{i:06d}" for i in range(1, 7)], "val": ["2008_000010"]}
    sizes = [(24, 32), (28, 30), (26, 32), (24, 28), (30, 34), (22, 26), (25, 31)]
    return write_pascal(root / "PASCAL_MT", splits=splits, sizes=sizes), lambda r, *o: _config("pascal_context", r, *o)


class Decoded(torch.utils.data.Dataset):
    """The dataset as the loader saw it before stored samples: decoded ones only."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset.sample(index)


@pytest.mark.parametrize("name", ["nyud", "pascal_context"])
def test_the_training_loader_ships_bytes_that_decode_to_the_decoded_pipeline(tmp_path, name):
    """The NYUD and PASCAL-Context recipes (zoom 0.5–2, crop with the class ratio rule, flip, colour
    jitter, padding): stored samples batched as bytes and decoded equal the decoded pipeline, on every seed."""
    root, make_config = _fixture(name, tmp_path)
    config = make_config(root)
    info = builder.dataset_info(config)
    tasks = builder.build_tasks(config, info)
    dataset = builder.build_dataset(config, "train")
    transform = builder.build_transform(config, tasks, info, train=True)
    shipped = AugmentedDataset(dataset, transform, keep_stored=True)
    plain = AugmentedDataset(Decoded(dataset), transform)
    count, crop = len(dataset), tuple(config.data.augment.crop)
    kinds, padded = set(), 0
    for seed in range(24):
        keys = [(seed % count, seed), ((seed + 1) % count, seed + 100)]
        stored_batch = collate([shipped[key] for key in keys])
        kinds |= {type(value).__name__ for value in stored_batch.values()}
        padded += sum(m["pad"][2:] != crop for m in stored_batch["meta"])
        got = move(stored_batch, torch.device("cpu"))
        want = collate([plain[key] for key in keys])
        for key in ("image", *tasks):
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), (key, seed)
        # the device's path (one gather) gives the same values as the CPU's table lookups
        for key, value in stored_batch.items():
            if isinstance(value, StoredBatch):
                assert torch.equal(value.decode(gather=True), got[key]), key
    # image and 8-bit maps travel stored; depth (NYUD) and distilled normals (PASCAL) as floats
    assert {"StoredBatch", "Tensor"} <= kinds and padded > 0


def test_the_option_off_ships_decoded_tensors(tmp_path):
    root = write_nyud(tmp_path / "NYUDv2", ids=(["0001", "0002"], ["0001"]), size=(48, 64))
    config = _nyud_config(root, "data.decode_on_device=false")
    info = builder.dataset_info(config)
    transform = builder.build_transform(config, builder.build_tasks(config, info), info, train=True)
    loader, _ = builder.train_loader(config, builder.build_dataset(config, "train"), transform)
    batch = next(iter(loader))
    assert all(isinstance(value, torch.Tensor) for key, value in batch.items() if key != "meta")
    assert batch["image"].dtype == torch.float32 and batch["semseg"].dtype == torch.int64


def test_partial_labels_hide_stored_targets_as_decoded_ones(tmp_path):
    """A one-label split over stored samples: hidden tasks hold their ignore value, the rest stay stored."""
    from scenemtl.data.partial import PartialLabels

    root, make_config = _fixture("nyud", tmp_path)
    config = make_config(root)
    dataset = builder.build_dataset(config, "train")
    tasks = builder.build_tasks(config, builder.dataset_info(config))
    labels = {dataset.sample_id(i): [list(tasks)[i % len(tasks)]] for i in range(len(dataset))}
    partial = PartialLabels(dataset, labels, {name: task.unlabelled for name, task in tasks.items()})
    for index in range(len(dataset)):
        stored, plain = partial.stored_sample(index), partial.sample(index)
        kept = labels[dataset.sample_id(index)][0]
        assert all(isinstance(stored[name], torch.Tensor) for name in tasks if name != kept)  # hidden: filled tensors
        for name in tasks:
            value = stored[name].decode() if isinstance(stored[name], Stored) else stored[name]
            assert torch.equal(value, plain[name]), (index, name)
            if name != kept:
                assert bool((plain[name] == tasks[name].pad_value).all()), (index, name)


@pytest.mark.parametrize("transfer", ["pipe", "shared"])
def test_batches_from_workers_decode_to_the_decoded_pipeline(tmp_path, transfer):
    """Two workers, four epochs, every batch held until the end: the stored batches the workers hand
    over (through their pipes, or in shared memory) decode to the batches of the decoded pipeline,
    batch for batch."""
    root, make_config = _fixture("nyud", tmp_path)
    config = make_config(root, "data.num_workers=2", f"data.worker_transfer={transfer}")
    info = builder.dataset_info(config)
    tasks = builder.build_tasks(config, info)
    dataset = builder.build_dataset(config, "train")
    transform = builder.build_transform(config, tasks, info, train=True)
    loader, sampler = builder.train_loader(config, dataset, transform)
    plain = AugmentedDataset(Decoded(dataset), transform)
    held = []
    for epoch in range(4):
        sampler.start(epoch)
        keys = list(sampler)
        for n, batch in enumerate(loader):
            held.append((batch, keys[2 * n : 2 * n + 2]))
    assert len(held) == 12
    arrays = [value.arrays for batch, _ in held for value in batch.values() if isinstance(value, StoredBatch)]
    tensors = [value for batch, _ in held for value in batch.values() if isinstance(value, torch.Tensor)]
    assert arrays and tensors and all(isinstance(batch, dict) for batch, _ in held)
    assert all(t.is_shared() == (transfer == "shared") for t in arrays + tensors)
    for batch, keys in held:  # read only now: a buffer reused under a held batch would show here
        got = move(batch, torch.device("cpu"))
        want = collate([plain[key] for key in keys])
        for key in ("image", *tasks):
            assert torch.equal(got[key], want[key]), key


def test_the_loader_pins_stored_batches_through_their_own_method(monkeypatch):
    """torch's pinning thread calls ``pin_memory()`` on objects that have it: a stored batch pins its
    arrays and tables (faked here: pinning needs CUDA) and keeps its boxes and fills."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: pinned.append(self.shape) or self.clone())
    value = Stored(np.zeros((4, 5), dtype=np.uint8), [LABELS]).pad((1, 0, 0, 2), 255)
    batch = {"semseg": StoredBatch.of([value, value])}
    out = pin_memory(batch)["semseg"]
    assert isinstance(out, StoredBatch) and pinned == [torch.Size([2, 6, 6]), torch.Size([2, 1, 256])]
    assert out.boxes == [(0, 1, 4, 5)] * 2 and torch.equal(out.decode(), batch["semseg"].decode())
