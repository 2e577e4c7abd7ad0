"""Seconds per image of the SEISM boundary metric (NMS, 101 thresholds, thinning, exact matching), one core.

    taskset -c 0 python benchmarks/boundary_speed.py [--images 5] [--size 448 576] [--max-dist 0.011]
                                                     [--out benchmarks/results/boundary_speed.md]

Generated scenes: a blocky label image (its ``seg2bmap`` is the ground truth, as SEISM draws it)
and a shifted, blurred, noisy prediction of its boundary, truncated to 8 bits as the seeds save
it. One warm-up image compiles the kernels (not timed); then each image is scored twice, and the
two count tables must be identical (the metric is deterministic). Run it under ``taskset -c 0``
for the one-core figure.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from scenemtl.metrics.boundary import boundary_counts, seg2bmap, to_levels


def scene(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Label image and an 8-bit boundary prediction of it."""
    rng = np.random.default_rng(seed)
    labels = ndimage.zoom(rng.integers(0, 8, (8, 10)), (height / 8, width / 10), order=0)[:height, :width]
    boundary = seg2bmap(labels).astype(float)
    shifted = ndimage.shift(boundary, (rng.integers(-3, 4), rng.integers(-3, 4)), order=0)
    probability = ndimage.gaussian_filter(shifted, 1.5)
    probability = np.clip(probability / probability.max() + 0.3 * rng.random(probability.shape) - 0.1, 0, 1)
    return labels, to_levels(probability)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(448, 576))
    parser.add_argument("--max-dist", type=float, default=0.011)
    parser.add_argument("--out", default="benchmarks/results/boundary_speed.md")
    args = parser.parse_args()
    height, width = args.size
    labels, levels = scene(0, 64, 64)
    boundary_counts(levels, seg2bmap(labels), args.max_dist)  # compile
    seconds = []
    for seed in range(1, args.images + 1):
        labels, levels = scene(seed, height, width)
        start = time.perf_counter()
        first = boundary_counts(levels, seg2bmap(labels), args.max_dist)
        seconds.append(time.perf_counter() - start)
        assert np.array_equal(first, boundary_counts(levels, seg2bmap(labels), args.max_dist)), "not deterministic"
    lines = [
        f"SEISM boundary metric, {height}×{width}, maxDist {args.max_dist}, 101 thresholds, NMS, "
        f"{args.images} generated images (`python benchmarks/boundary_speed.py`)",
        "",
        "| s per image (median) | min | max | deterministic |",
        "|---|---|---|---|",
        f"| {statistics.median(seconds):.3f} | {min(seconds):.3f} | {max(seconds):.3f} | yes |",
    ]
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
