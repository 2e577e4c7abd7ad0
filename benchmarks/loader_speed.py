"""Loader throughput of each real dataset with its recipe's training augmentation, by number of workers.

    python benchmarks/loader_speed.py [--datasets nyud,pascal_context] [--samples 48] [--batches 8]
                                      [--workers 0,1,2] [--out benchmarks/results/loader_speed.md]

For each dataset a full-resolution copy in the release's on-disk format is generated in a
temporary folder by the test suite's fixture writer (not timed), then the training loader of the
dataset's recipe (``configs/<dataset>/hps.yaml``: decoding, random scale, crop with the class
ratio rule, flip, photometric distortion, normalisation, collation) is iterated. One batch per
setting warms up (worker start-up); the next ``--batches`` batches are timed. Printed in one table:
samples/s per worker count, and the ratio to the single-process loader.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the fixture writers live in tests/

# dataset → (config, environment variable, fixture writer "module:function", writer keyword arguments)
DATASETS = {
    "nyud": (
        "configs/nyud/hps.yaml",
        "SCENEMTL_NYUD",
        "tests.data.test_nyud:write_nyud",
        lambda n: {"ids": ([f"{i:04d}" for i in range(n)], ["val"]), "size": (425, 560)},
    ),
    "pascal_context": (
        "configs/pascal_context/hps.yaml",
        "SCENEMTL_PASCAL_CONTEXT",
        "tests.data.test_pascal_context:write_pascal",
        lambda n: {
            "splits": {"train": [f"2008_{i:06d}" for i in range(n)], "val": ["2009_000001"]},
            "sizes": [(375, 500), (500, 375), (333, 500)],
        },
    ),
    "cityscapes": (
        "configs/cityscapes/hps.yaml",
        "SCENEMTL_CITYSCAPES",
        "tests.data.test_cityscapes:write_cityscapes",
        lambda n: {"size": (1024, 2048), "cities": {"train": {"aachen": n}, "val": {"frankfurt": 1}}},
    ),
    "cityscapes_npy": (
        "configs/cityscapes_npy/hps.yaml",
        "SCENEMTL_CITYSCAPES_NPY",
        "tests.data.test_cityscapes:write_cityscapes_npy",
        lambda n: {"counts": (n, 1), "size": (128, 256)},
    ),
    # 80/20 random splits: generate n / 0.8 frames so that the training split holds about n
    "synthia": (
        "configs/synthia/hps.yaml",
        "SCENEMTL_SYNTHIA",
        "tests.data.test_synthia:write_synthia",
        lambda n: {"count": round(n / 0.8) + 2, "size": (760, 1280)},
    ),
    "vkitti2": (
        "configs/vkitti2/hps.yaml",
        "SCENEMTL_VKITTI2",
        "tests.data.test_vkitti2:write_vkitti2",
        lambda n: {"frames": (("Scene01", round(n / 0.8) + 2),), "size": (375, 1242)},
    ),
}


def throughput(config_path: Path, workers: int, batches: int) -> float:
    """Samples per second of the recipe's training loader."""
    from scenemtl.config import load_config
    from scenemtl.engine.builder import build_dataset, build_tasks, build_transform, dataset_info, train_loader

    config = load_config(config_path, [f"data.num_workers={workers}"])
    info = dataset_info(config)
    tasks = build_tasks(config, info)
    dataset = build_dataset(config, config.data.train_split)
    loader, sampler = train_loader(config, dataset, build_transform(config, tasks, info, train=True))
    if len(loader) <= batches:
        raise SystemExit(
            f"{config_path}: {len(dataset)} samples give {len(loader)} batches per epoch; generate at "
            f"least {(batches + 1) * config.data.batch_size} (--samples) for {batches} timed batches"
        )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    del iterator
    return batches * config.data.batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--samples", type=int, default=48, help="training samples generated per dataset")
    parser.add_argument("--batches", type=int, default=5, help="timed batches per setting")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    for name in args.datasets.split(","):
        config, variable, writer, kwargs = DATASETS[name]
        module, function = writer.split(":")
        write = getattr(importlib.import_module(module), function)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            root = write(Path(folder) / name, **kwargs(args.samples))
            print(f"{name}: generated {args.samples} samples in {time.perf_counter() - start:.0f} s", flush=True)
            os.environ[variable] = str(root)
            speeds = [throughput(REPO / config, w, args.batches) for w in workers]
        rows.append((name, speeds))
        print(name, " ".join(f"{s:.1f}" for s in speeds), flush=True)
    header = "| dataset | " + " | ".join(f"{w} workers (samples/s)" for w in workers) + " | speed-up at most workers |"
    lines = [header, "|" + "---|" * (len(workers) + 2)]
    for name, speeds in rows:
        cells = " | ".join(f"{s:.1f}" for s in speeds)
        lines.append(f"| {name} | {cells} | {speeds[-1] / speeds[0]:.2f}× |")
    table = "\n".join(lines)
    print(f"\n{os.cpu_count()} CPUs, {args.batches} timed batches per setting\n{table}")
    if args.out:
        Path(args.out).write_text(
            f"# Loader throughput\n\n`python benchmarks/loader_speed.py {' '.join(sys.argv[1:])}` on {os.cpu_count()} CPUs.\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
