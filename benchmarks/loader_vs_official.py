"""NYUD training loader, scenemtl against the official InvPT/ATRC code, side by side in one run.

    python benchmarks/loader_vs_official.py --official DIR [--root NYUD] [--samples 64]
           [--getitem 40] [--repeats 3] [--workers 0,1,2] [--out benchmarks/results/loader_vs_official.md]

``DIR`` is the ``InvPT/`` folder of a checkout of prismformore/Multi-Task-Transformer (not part of
this project; its modules are imported at run time, nothing of it is copied). Without
``--official`` only scenemtl is timed. ``--root`` is a NYUD folder in the ATRC/InvPT PNG layout;
without it one is generated in a temporary folder (``--samples`` ids at 480×640).

Both sides read the same files with the same augmentation (scale 0.5–2, 448×576 crop with the class
ratio rule, flip, photometric distortion, normalisation, padding; scenemtl's is checked pixel for
pixel against a transcription of the official one in ``tests/data/test_seed_pipeline.py``):

* ``__getitem__`` on one core (process pinned to one CPU, one torch/OpenCV thread): the median
  over ``--getitem`` samples, the two sides interleaved sample by sample, ``--repeats`` times;
  also the decoding alone and each step;
* DataLoader samples/s at each ``--workers`` count, batch 2 (the official ``trBatch``), the two
  sides alternated, the best of ``--repeats`` windows of 20 batches after 5 warm-up batches.

The official code needs ``easydict`` and ``six``; its 2021-era imports are shimmed at run time
(``collections.Mapping``, numpy 2's ``copy=False``).
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the fixture writer lives in tests/


def ours(root: Path, workers: int = 0):
    """scenemtl's NYUD training dataset (transform applied) and its loader factory."""
    os.environ["SCENEMTL_NYUD"] = str(root)
    from scenemtl.config import load_config
    from scenemtl.data.loader import AugmentedDataset, collate
    from scenemtl.engine.builder import build_dataset, build_tasks, build_transform, dataset_info

    config = load_config(REPO / "configs/nyud/hps.yaml", ["data.batch_size=2", "data.eval_pad=null"])
    info = dataset_info(config)
    dataset = build_dataset(config, "train")
    transform = build_transform(config, build_tasks(config, info), info, train=True)
    augmented = AugmentedDataset(dataset, transform)

    def item(index: int, seed: int):
        return augmented[(index, seed)]

    def loader(workers: int):
        import torch
        from torch.utils.data import DataLoader, RandomSampler

        keys = [(i, i) for i in range(len(dataset))]

        class Keys(torch.utils.data.Dataset):
            def __len__(self):
                return len(keys)

            def __getitem__(self, i):
                return augmented[keys[i]]

        source = Keys()
        return DataLoader(
            source,
            batch_size=2,
            sampler=RandomSampler(source),
            num_workers=workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=False,
            persistent_workers=workers > 0,
        )

    steps = {"decode": lambda i: dataset[i]}
    return item, loader, steps, (dataset, transform)


def official(invpt: Path, root: Path):
    """The official NYUD training dataset (InvPT's get_transformations + NYUD_MT) and its loader factory."""
    for name in ("Mapping", "Sequence"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    sys.path.insert(0, str(invpt))
    import configs.mypath as mypath  # official

    mypath.db_paths["NYUD_MT"] = str(root)
    from utils.config import create_config  # official
    from utils.common_config import get_train_dataloader, get_train_dataset, get_transformations  # official
    import data.nyud as nyud  # official

    class NumpyOne(types.ModuleType):  # numpy 2: array(copy=False) means "never copy"; 1.x: "if needed"
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def array(obj, *args, copy=True, **kwargs):
            return np.array(obj, *args, copy=None if copy is False else copy, **kwargs)

    nyud.np = NumpyOne("numpy")
    p = create_config(str(invpt / "configs/nyud/nyud_vitLp16.yml"), {"run_mode": "infer"})
    train_transforms, _ = get_transformations(p)
    dataset = get_train_dataset(p, transforms=train_transforms)

    def item(index: int, seed: int):
        import random

        random.seed(seed)
        return dataset[index]

    def loader(workers: int):
        from torch.utils.data import RandomSampler

        p["nworkers"] = workers
        return get_train_dataloader(p, dataset, RandomSampler(dataset))

    def decode(index: int):
        saved, dataset.transform = dataset.transform, None
        try:
            return dataset[index]
        finally:
            dataset.transform = saved

    return item, loader, {"decode": decode}, None


def pinned(function):
    """Run ``function`` on one CPU with one torch and OpenCV thread."""
    import cv2
    import torch

    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cpus)})
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    try:
        return function()
    finally:
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)


def throughput(make_loader, workers: int, warmup: int = 5, timed: int = 20) -> float:
    loader = make_loader(workers)
    iterator, seen = iter(loader), 0
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(timed):
        batch = next(iterator)
        seen += batch["image"].shape[0]
    elapsed = time.perf_counter() - start
    del iterator
    return seen / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, default=None, help="the InvPT/ folder of Multi-Task-Transformer")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--getitem", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = args.root
        if root is None:
            from tests.data.test_nyud import write_nyud

            ids = [f"{i:04d}" for i in range(args.samples)]
            root = write_nyud(Path(folder) / "NYUDv2", ids=(ids, ids[:2]), size=(480, 640))
        sides = {"scenemtl": ours(root)}
        if args.official is not None:
            sides["official"] = official(args.official.resolve(), root)
        count = len(sides["scenemtl"][3][0])
        indices = [(7 * i) % count for i in range(args.getitem)]
        # one core: interleaved sample by sample
        times = {name: [] for name in sides}
        decode = {name: [] for name in sides}

        def one_core():
            for side in sides.values():  # warm-up
                side[0](0, 0)
            for repeat in range(args.repeats):
                for n, index in enumerate(indices):
                    seed = 1000 * repeat + n
                    for name, (item, _, steps, _) in sides.items():
                        start = time.perf_counter()
                        item(index, seed)
                        times[name].append(time.perf_counter() - start)
                        start = time.perf_counter()
                        steps["decode"](index)
                        decode[name].append(time.perf_counter() - start)

        pinned(one_core)
        dataset, transform = sides["scenemtl"][3]
        per_step: dict[str, list[float]] = collections.defaultdict(list)

        def steps_of_ours():
            for n, index in enumerate(indices):
                sample, rng = dataset[index], np.random.default_rng(n)
                for step in transform.transforms:
                    start = time.perf_counter()
                    sample = step(sample, rng)
                    per_step[type(step).__name__].append(time.perf_counter() - start)

        pinned(steps_of_ours)
        workers = [int(w) for w in args.workers.split(",")]
        speeds = {name: {w: 0.0 for w in workers} for name in sides}
        for _ in range(args.repeats):
            for w in workers:
                for name, side in sides.items():
                    speeds[name][w] = max(speeds[name][w], throughput(side[1], w))
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
    steps_line = ", ".join(f"{name} {ms(values):.2f} ms" for name, values in per_step.items())
    text = "\n".join(lines) + f"\n\nscenemtl's steps (median, one core): {steps_line}.\n"
    print(f"\n{os.cpu_count()} CPUs\n{text}")
    if args.out:
        command = "python benchmarks/loader_vs_official.py " + " ".join(a if not a.startswith("/") else "…" for a in sys.argv[1:])
        Path(args.out).write_text(
            f"# NYUD training loader: scenemtl and the official code\n\n`{command}` on "
            f"{os.cpu_count()} CPUs (both sides in one run, interleaved).\n\n{text}"
        )


if __name__ == "__main__":
    main()
