"""NYUD training loader, scenemtl against the official InvPT/ATRC code, side by side in one run.

    python benchmarks/loader_vs_official.py [--official DIR] [--root NYUD] [--samples 64]
           [--getitem 40] [--repeats 3] [--window 5] [--workers 0,1,2] [--out benchmarks/results/loader_vs_official.md]

``DIR`` is the ``InvPT/`` folder of an exported prismformore/Multi-Task-Transformer tree (not part
of this project; its modules are imported at run time, nothing of it is copied). Without
``--official`` only scenemtl is timed. ``--root`` is a NYUD folder in the ATRC/InvPT PNG layout;
without it a photo-like one is generated in a temporary folder (``--samples`` ids at 480×640:
smooth images with sensor noise, region labels, smooth depth, normals from its gradient, 1-pixel
edges, so that files and decoding cost what real ones do).

Both sides read the same files with the same augmentation (scale 0.5–2, 448×576 crop with the
class ratio rule, flip, photometric distortion, normalisation, padding; scenemtl's is checked pixel
for pixel against a transcription of the official one in ``tests/data/test_seed_pipeline.py``).
Each side runs in a process of its own, set up as its training loader sets up the processes that
load (scenemtl: ``train.allocator``; official: OpenCV single-threaded, as its ``main.py``), and
the parent alternates between them:

* ``__getitem__`` on one core (both processes pinned to the same CPU, one torch/OpenCV thread):
  ``--getitem`` samples with their seeds, in windows of ``--window`` samples, A then B, the whole
  list ``--repeats`` times; the median per sample. Also the decoding alone, and scenemtl's steps;
* DataLoader samples/s at each ``--workers`` count, batch 2 (the official ``trBatch``), each
  side's own loader settings (scenemtl: ``engine.builder.loader_options``; its batches travel as
  8-bit values through the workers' pipes, ``data.worker_transfer: auto`` on a CPU, and are decoded
  in the main process as the trainer does on a CPU, ``data.decode_on_device``), the best of
  ``--repeats`` windows of 20 batches after 5 warm-up batches, the sides alternated. Further rows
  time scenemtl's batches through shared memory instead (``data.worker_transfer: shared``, torch's
  way) and as a GPU trainer receives them (8-bit, decoded by the GPU after the copy) against the
  same official numbers.

The official code needs ``easydict`` and ``six``; its 2021-era imports are shimmed at run time
(``collections.Mapping``, numpy 2's ``copy=False``).
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _smooth(rng: np.random.Generator, height: int, width: int, cells: tuple[int, ...] = (6, 24, 96)) -> np.ndarray:
    """Sum of bicubically enlarged random grids, scaled to [0, 1]."""
    import cv2

    out = np.zeros((height, width), np.float32)
    for n, count in enumerate(cells):
        grid = rng.random((max(2, count * height // width), count), dtype=np.float32)
        out += 0.5**n * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


def write_photo_nyud(root: Path, count: int, size: tuple[int, int] = (480, 640), seed: int = 0) -> Path:
    """A NYUD folder in the ATRC/InvPT PNG layout whose files compress and decode like real ones."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = size
    for folder in ("gt_sets", "images", "segmentation", "depth", "normals", "edge"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:04d}" for i in range(count)]
    (root / "gt_sets" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "gt_sets" / "val.txt").write_text("".join(f"{i}\n" for i in ids[:2]))
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in ids:
        base = _smooth(rng, height, width)
        image = np.stack([0.6 * base + 0.4 * _smooth(rng, height, width) for _ in range(3)], -1) * 255
        image += rng.normal(0, 4, image.shape)
        cv2.imwrite(str(root / "images" / f"{i}.png"), np.clip(image, 0, 255).astype(np.uint8)[..., ::-1])
        coarse = rng.integers(0, 41, (6, 8)).astype(np.uint8)
        warp_r = (_smooth(rng, height, width) - 0.5) * height / 6 * 0.8
        warp_c = (_smooth(rng, height, width) - 0.5) * width / 8 * 0.8
        labels = coarse[np.clip(((rows + warp_r) * 6 / height).astype(int), 0, 5), np.clip(((cols + warp_c) * 8 / width).astype(int), 0, 7)]
        cv2.imwrite(str(root / "segmentation" / f"{i}.png"), labels)
        edge = np.zeros((height, width), np.uint8)
        edge[:, 1:][labels[:, 1:] != labels[:, :-1]] = 255
        edge[1:][labels[1:] != labels[:-1]] = 255
        cv2.imwrite(str(root / "edge" / f"{i}.png"), edge)
        depth = (0.5 + 9.5 * _smooth(rng, height, width, (3, 12))).astype(np.float32)
        np.save(root / "depth" / f"{i}.npy", depth)
        grad_r, grad_c = np.gradient(depth * 50)
        normals = np.stack([-grad_c, -grad_r, np.ones_like(depth)], -1)
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        cv2.imwrite(str(root / "normals" / f"{i}.png"), np.rint((normals + 1) * 127.5).astype(np.uint8)[..., ::-1])
    return root


class Ours:
    """scenemtl's NYUD training dataset (the hps recipe's transform) and its training loader settings."""

    def __init__(self, root: Path) -> None:
        from scenemtl.config import load_config
        from scenemtl.data.loader import AugmentedDataset
        from scenemtl.engine.builder import build_dataset, build_tasks, build_transform, dataset_info

        os.environ["SCENEMTL_NYUD"] = str(root)
        self.config = load_config(REPO / "configs/nyud/hps.yaml", ["data.batch_size=2", "data.eval_pad=null"])
        info = dataset_info(self.config)
        self.dataset = build_dataset(self.config, "train")
        self.transform = build_transform(self.config, build_tasks(self.config, info), info, train=True)
        self.augmented = AugmentedDataset(self.dataset, self.transform)
        if self.config.train.allocator == "tuned":
            from scenemtl import malloc

            malloc.tune()  # as in each loader worker and the trainer

    def item(self, index: int, seed: int) -> dict:
        return self.augmented[(index, seed)]

    def decode(self, index: int) -> dict:
        return self.dataset[index]

    def loader(self, workers: int, transfer: str = "auto"):
        from torch.utils.data import DataLoader, RandomSampler

        from scenemtl.data.loader import AugmentedDataset
        from scenemtl.engine.builder import loader_options

        augmented = AugmentedDataset(self.dataset, self.transform, keep_stored=self.config.data.decode_on_device)
        keys = [(i, i) for i in range(len(self.dataset))]

        class Keys:
            def __len__(self):
                return len(keys)

            def __getitem__(self, i):
                return augmented[keys[i]]

        self.config.data.num_workers = workers
        self.config.data.worker_transfer = transfer
        options = loader_options(self.config, persistent=True)
        return DataLoader(Keys(), batch_size=2, sampler=RandomSampler(range(len(keys))), drop_last=True, **options)

    @staticmethod
    def finish(batch: dict) -> dict:
        """What the trainer does to a batch before the forward pass: onto the device (here the CPU),
        where stored bytes are decoded (``data.decode_on_device``)."""
        import torch

        from scenemtl.engine.evaluate import move

        return move(batch, torch.device("cpu"))

    def steps(self, indices: list[int]) -> dict[str, list[float]]:
        per_step: dict[str, list[float]] = collections.defaultdict(list)
        for n, index in enumerate(indices):
            sample, rng = self.dataset[index], np.random.default_rng(n)
            for step in self.transform.transforms:
                start = time.perf_counter()
                sample = step(sample, rng)
                per_step[type(step).__name__].append(time.perf_counter() - start)
        return per_step


class Official:
    """The official NYUD training dataset (InvPT's get_transformations + NYUD_MT) and its loader."""

    def __init__(self, invpt: Path, root: Path) -> None:
        import warnings

        import cv2

        warnings.filterwarnings("ignore", message=".*pin_memory.*")  # its loader pins; no GPU here
        cv2.setNumThreads(0)  # as the official main.py
        for name in ("Mapping", "Sequence"):
            if not hasattr(collections, name):
                setattr(collections, name, getattr(collections.abc, name))
        sys.path.insert(0, str(invpt))
        import configs.mypath as mypath  # official

        mypath.db_paths["NYUD_MT"] = str(root)
        import data.nyud as nyud  # official
        from utils.common_config import get_train_dataloader, get_train_dataset, get_transformations  # official
        from utils.config import create_config  # official

        class NumpyOne(types.ModuleType):  # numpy 2: array(copy=False) means "never copy"; 1.x: "if needed"
            def __getattr__(self, name):
                return getattr(np, name)

            @staticmethod
            def array(obj, *args, copy=True, **kwargs):
                return np.array(obj, *args, copy=None if copy is False else copy, **kwargs)

        nyud.np = NumpyOne("numpy")
        self.p = create_config(str(invpt / "configs/nyud/nyud_vitLp16.yml"), {"run_mode": "infer"})
        train_transforms, _ = get_transformations(self.p)
        self.dataset = get_train_dataset(self.p, transforms=train_transforms)
        self._loader = get_train_dataloader

    def item(self, index: int, seed: int) -> dict:
        import random

        random.seed(seed)
        return self.dataset[index]

    def decode(self, index: int) -> dict:
        saved, self.dataset.transform = self.dataset.transform, None
        try:
            return self.dataset[index]
        finally:
            self.dataset.transform = saved

    @staticmethod
    def finish(batch: dict) -> dict:
        return batch  # the official training loop reads the batch as the loader gives it

    def loader(self, workers: int, transfer: str = "auto"):
        from torch.utils.data import RandomSampler

        self.p["nworkers"] = workers
        return self._loader(self.p, self.dataset, RandomSampler(self.dataset))


def _pinned(function):
    """Run ``function`` on the first CPU with one torch and OpenCV thread."""
    import cv2
    import torch

    cpus, threads, cv_threads = os.sched_getaffinity(0), torch.get_num_threads(), cv2.getNumThreads()
    os.sched_setaffinity(0, {min(cpus)})
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    try:
        return function()
    finally:
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def _throughput(side, workers: int, finish: bool = True, transfer: str = "auto", warmup: int = 5, timed: int = 20) -> float:
    loader = side.loader(workers, transfer)
    done = side.finish if finish else (lambda batch: batch)

    def batches():  # epoch after epoch (persistent workers stay up)
        while True:
            yield from loader

    iterator, seen = batches(), 0
    for _ in range(warmup):
        done(next(iterator))
    start = time.perf_counter()
    for _ in range(timed):
        seen += done(next(iterator))["image"].shape[0]
    elapsed = time.perf_counter() - start
    del iterator
    return seen / elapsed


def _timed(function, indices, seeds=None) -> list[float]:
    times = []
    for n, index in enumerate(indices):
        start = time.perf_counter()
        function(index) if seeds is None else function(index, seeds[n])
        times.append(time.perf_counter() - start)
    return times


def serve(name: str, root: str, official: str | None, connection) -> None:
    """A side's process: builds it, then answers the parent's requests until told to stop."""
    multiprocessing.set_start_method("fork", force=True)  # loader workers start as in a training run on Linux
    side = Ours(Path(root)) if name == "scenemtl" else Official(Path(official), Path(root))
    _pinned(lambda: (side.item(0, 0), side.decode(0)))  # warm-up
    connection.send(len(side.dataset))
    while True:
        request, arguments = connection.recv()
        if request == "stop":
            return
        if request == "getitem":
            result = _pinned(lambda: _timed(side.item, *arguments))
        elif request == "decode":
            result = _pinned(lambda: _timed(side.decode, *arguments))
        elif request == "steps":
            result = _pinned(lambda: dict(side.steps(*arguments)))
        else:
            result = _throughput(side, *arguments)
        connection.send(result)


class Remote:
    """The parent's handle on a side's process."""

    def __init__(self, name: str, root: Path, official: Path | None) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve, args=(name, str(root), official and str(official), child), daemon=False)
        self.process.start()
        child.close()  # a side that dies ends the parent's wait with an EOFError
        self.size = self.connection.recv()

    def __call__(self, request: str, *arguments):
        self.connection.send((request, arguments))
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send(("stop", ()))
        self.process.join()


def versions() -> str:
    import cv2
    import PIL
    import torch

    return (
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"OpenCV {cv2.__version__}, Pillow {PIL.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, default=None, help="the InvPT/ folder of Multi-Task-Transformer")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--getitem", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=5, help="samples per side before the other side's turn")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = args.root or write_photo_nyud(Path(folder) / "NYUDv2", args.samples)
        sides = {"scenemtl": Remote("scenemtl", root, None)}
        if args.official is not None:
            sides["official"] = Remote("official", root, args.official.resolve())
        count = sides["scenemtl"].size
        indices = [(7 * i) % count for i in range(args.getitem)]
        times: dict[str, list[float]] = {name: [] for name in sides}
        decode: dict[str, list[float]] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            seeds = [1000 * repeat + n for n in range(len(indices))]
            for start in range(0, len(indices), args.window):  # short windows: both sides see the same machine
                window = slice(start, start + args.window)
                for name, side in sides.items():
                    times[name] += side("getitem", indices[window], seeds[window])
                    decode[name] += side("decode", indices[window])
        per_step = sides["scenemtl"]("steps", indices)
        workers = [int(w) for w in args.workers.split(",")]
        speeds = {name: {w: 0.0 for w in workers} for name in sides}
        shipped = {w: 0.0 for w in workers}  # scenemtl's batches as a GPU trainer receives them (bytes, decoded there)
        shared = {w: 0.0 for w in workers if w > 0}  # scenemtl's batches through shared memory (data.worker_transfer)
        for _ in range(args.repeats):
            for w in workers:
                for name, side in sides.items():
                    speeds[name][w] = max(speeds[name][w], side("throughput", w))
                shipped[w] = max(shipped[w], sides["scenemtl"]("throughput", w, False))
                if w in shared:
                    shared[w] = max(shared[w], sides["scenemtl"]("throughput", w, True, "shared"))
        for side in sides.values():
            side.close()
    ms = lambda values: 1000 * statistics.median(values)  # noqa: E731
    lines = [
        "| | " + " | ".join(sides) + (" | scenemtl speed |" if len(sides) > 1 else " |"),
        "|---|" + "---|" * (len(sides) + (len(sides) > 1)),
    ]

    def row(label: str, values: dict[str, float], higher_is_better: bool, unit: str) -> None:
        cells = " | ".join(f"{values[name]:.1f} {unit}" for name in sides)
        ratio = ""
        if len(sides) > 1:
            r = values["scenemtl"] / values["official"] if higher_is_better else values["official"] / values["scenemtl"]
            ratio = f" | {r:.2f}×"
        lines.append(f"| {label} | {cells}{ratio} |")

    row("`__getitem__`, one core (median)", {n: ms(t) for n, t in times.items()}, False, "ms")
    row("decoding only, one core (median)", {n: ms(t) for n, t in decode.items()}, False, "ms")
    for w in workers:
        row(f"DataLoader, {w} workers, batch 2", {n: speeds[n][w] for n in sides}, True, "samples/s")
    variants = [
        ("scenemtl's batches through shared memory (`data.worker_transfer: shared`)", shared),
        ("scenemtl's batches undecoded (a GPU decodes them)", shipped),
    ]
    for label, ours in variants:  # scenemtl's other ways against the same official numbers
        for w, speed in ours.items():
            official_speed = {"official": speeds["official"][w]} if "official" in sides else {}
            row(f"DataLoader, {w} workers, {label}", {"scenemtl": speed, **official_speed}, True, "samples/s")
    steps_line = ", ".join(f"{name} {ms(values):.2f} ms" for name, values in per_step.items())
    text = "\n".join(lines) + f"\n\nscenemtl's steps (median, one core): {steps_line}.\n"
    print(f"\n{os.cpu_count()} CPUs; {versions()}\n{text}")
    if args.out:
        command = "python benchmarks/loader_vs_official.py " + " ".join(a if not a.startswith("/") else "…" for a in sys.argv[1:])
        Path(args.out).write_text(
            f"# NYUD training loader: scenemtl and the official code\n\n`{command}` on {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}; {versions()}); both sides in one run, alternated.\n\n{text}"
        )


if __name__ == "__main__":
    main()
