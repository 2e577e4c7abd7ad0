"""Evaluation speed of every metric on an NYUD-val-sized set, side by side.

    python benchmarks/eval_speed.py [--images 654] [--height 448 --width 576] [--batch 6]

Generates structured predictions and targets (piecewise-constant label maps, smooth depth,
unit normals, boundaries of the label map and noisy, shifted boundary probabilities) batch by
batch (not timed), times each task's metric ``update`` and ``compute`` over all images and
prints seconds per image. The boundary
metric (SEISM protocol: NMS, 101 thresholds, thinning, exact matching at 0.011 of the diagonal)
runs on one core; the target is under 1 s per image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from scenemtl.metrics import BoundaryMetric, ConfusionMatrixMetric, DepthMetric, NormalsMetric, SaliencyMetric
from scenemtl.metrics.boundary import seg2bmap


def sample(rng: np.random.Generator, height: int, width: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One image's (prediction, target) per task."""
    labels = ndimage.zoom(rng.integers(0, 40, (8, 10)), (height / 8, width / 10), order=0)[:height, :width]
    noisy = np.where(rng.random(labels.shape) < 0.2, rng.integers(0, 40, labels.shape), labels)
    depth = ndimage.gaussian_filter(rng.random((height, width)) * 8, 20) + 1
    normals = rng.normal(size=(3, height, width))
    normals /= np.linalg.norm(normals, axis=0, keepdims=True)
    boundary = seg2bmap(labels)
    shifted = ndimage.shift(boundary.astype(float), (rng.integers(-3, 4), rng.integers(-3, 4)), order=0)
    edge = np.clip(ndimage.gaussian_filter(shifted, 1.5) * 4 + 0.1 * rng.random(boundary.shape), 0, 1)
    salient = (labels % 3 == 0).astype(np.float32)
    t = lambda a, dtype=torch.float32: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
    return {
        "semseg": (t(noisy, torch.int64), t(labels, torch.int64)),
        "depth": (t(depth + rng.normal(0, 0.3, depth.shape))[None], t(depth)[None]),
        "normals": (t(normals + rng.normal(0, 0.2, normals.shape)), t(normals)),
        "edge": (t(edge)[None], t(boundary)[None]),
        "saliency": (t(np.clip(salient + rng.normal(0, 0.3, salient.shape), 0, 1))[None], t(salient)[None]),
    }


def main() -> None:
    """Time each metric and print seconds per image."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=654, help="NYUD-v2 val has 654")
    parser.add_argument("--height", type=int, default=448)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--batch", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    metrics = {
        "semseg": ConfusionMatrixMetric(40),
        "depth": DepthMetric(),
        "normals": NormalsMetric(),
        "saliency": SaliencyMetric(),
        "edge": BoundaryMetric(max_dist=0.011),
    }
    BoundaryMetric().update(torch.rand(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))  # compile the kernels first
    print(f"{args.images} images of {args.height}×{args.width}, batches of {args.batch}, one thread")
    print(f"{'metric':<10}{'s/image':>10}{'total s':>10}   result")
    seconds = dict.fromkeys(metrics, 0.0)
    for i in range(0, args.images, args.batch):
        chunk = [sample(rng, args.height, args.width) for _ in range(min(args.batch, args.images - i))]
        for name, metric in metrics.items():
            start = time.perf_counter()
            metric.update(torch.stack([s[name][0] for s in chunk]), torch.stack([s[name][1] for s in chunk]))
            seconds[name] += time.perf_counter() - start
    for name, metric in metrics.items():
        start = time.perf_counter()
        value = metric.compute()[metric.main]
        seconds[name] += time.perf_counter() - start
        print(f"{name:<10}{seconds[name] / args.images:>10.4f}{seconds[name]:>10.1f}   {metric.main} = {value:.2f}")
    total = sum(seconds.values())
    print(f"{'all':<10}{total / args.images:>10.4f}{total:>10.1f}")


if __name__ == "__main__":
    main()
