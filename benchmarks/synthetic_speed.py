"""Synthetic-scene throughput and training speed of STL vs HPS, measured side by side in one run.

    python benchmarks/synthetic_speed.py [--steps 20] [--batch 16] [--height 48 --width 64] [--device cpu]

Prints rendering samples/s (cold, no cache), loader samples/s (augmented batches from cached
scenes), and optimiser steps/s of the single-task bundle (one network per task, i.e. the sum of
the single-task models) and of hard parameter sharing, with their ratio. HPS must cost less
than the sum of the single-task models.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from scenemtl.config import load_config
from scenemtl.data.synthetic import SyntheticScenes
from scenemtl.engine.trainer import Trainer


def timed_steps(trainer: Trainer, batches: list[dict], steps: int) -> float:
    """Optimiser steps per second over ``steps`` steps (after one warm-up step)."""
    trainer.train_step([batches[0]])
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        trainer.train_step([batches[i % len(batches)]])
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    """Run the measurements and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="default: the embedded experiment's")
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:

        def config(arch: str):
            return load_config(
                None,
                [
                    f"model.arch={arch}",
                    f"name={arch}",
                    f"out_dir={tmp}/{arch}",
                    f"train.device={args.device}",
                    f"data.batch_size={args.batch}",
                    f"data.options.height={args.height}",
                    f"data.options.width={args.width}",
                    f"data.options.num_train={max(64, 4 * args.batch)}",
                ],
            )

        stl = Trainer(config("stl"), progress=False, log=False)
        cold = SyntheticScenes(split="train", height=args.height, width=args.width, seed=1, cache=False)
        start = time.perf_counter()
        count = 64
        for i in range(count):
            cold.render(i)
        render_rate = count / (time.perf_counter() - start)

        iterator = iter(stl.loader)
        start = time.perf_counter()
        batches = [next(iterator) for _ in range(4)]
        loader_rate = 4 * args.batch / (time.perf_counter() - start)

        hps = Trainer(config("hps"), progress=False, log=False, datasets=(stl.train_set, stl.val_set))
        stl_rate = timed_steps(stl, batches, args.steps)
        hps_rate = timed_steps(hps, batches, args.steps)
        params = {name: sum(p.numel() for p in t.model.parameters()) for name, t in (("stl", stl), ("hps", hps))}

    tasks = list(stl.tasks)
    print(
        f"device: {stl.device}, threads: {torch.get_num_threads()}, image {args.height}×{args.width}, "
        f"batch {args.batch}, tasks: {', '.join(tasks)}"
    )
    print(f"{'what':<38}{'rate':>14}")
    print(f"{'render (cold), samples/s':<38}{render_rate:>14.1f}")
    print(f"{'loader (augmented), samples/s':<38}{loader_rate:>14.1f}")
    print(f"{'STL bundle train, steps/s':<38}{stl_rate:>14.2f}   ({params['stl'] / 1e6:.2f} M parameters)")
    print(f"{'HPS train, steps/s':<38}{hps_rate:>14.2f}   ({params['hps'] / 1e6:.2f} M parameters)")
    print(f"HPS step time / STL step time: {stl_rate / hps_rate:.2f}  (< 1: HPS costs less than the single-task models)")


if __name__ == "__main__":
    main()
