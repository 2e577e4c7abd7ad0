"""3×3 convolutions on a CPU, forward and backward: oneDNN's direct convolution against Winograd's F(2×2, 3×3) and F(4×4, 3×3).

    python benchmarks/winograd_speed.py [--threads 2] [--repeats 5] [--out benchmarks/results/winograd_speed_cpu.md]

The layers are MTAN-SegNet's 3×3 convolutions at NYUv2-13's 288×384, batch 2 (channels in → out at their
resolution), then smaller maps. Each row times one pass of ``F.conv2d`` and one of ``layers.winograd.winograd_conv3x3``
with each tile, each followed by the backward pass of all three gradients, alternated, median of ``--repeats``; under
the malloc settings the trainer uses (``scenemtl.malloc``). The largest difference from the exact (float64)
convolution's output and gradients, relative to each one's largest value, is printed for each. ``rule`` is what
``layers.Conv3x3`` runs (``tile_for``: ``MIN_CHANNEL_RATIO``, ``MIN_WORK``, ``MIN_PIXELS_TILE4``); this table is where
those come from.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: (in, out, height, width): every distinct 3×3 convolution of MTAN-SegNet at 288×384, then small maps
LAYERS = [
    (64, 64, 288, 384),
    (64, 128, 288, 384),
    (128, 64, 144, 192),
    (128, 128, 144, 192),
    (128, 256, 144, 192),
    (256, 128, 72, 96),
    (256, 256, 72, 96),
    (256, 512, 72, 96),
    (512, 256, 36, 48),
    (512, 512, 36, 48),
    (512, 512, 18, 24),
    # small maps: where the rule's MIN_WORK and MIN_PIXELS_TILE4 come from
    (128, 128, 32, 32),
    (256, 256, 32, 32),
    (512, 512, 32, 32),
    (128, 128, 16, 16),
    (256, 256, 16, 16),
    (512, 512, 16, 16),
    (512, 512, 8, 8),
]
SIDES = ("direct", "F(2×2)", "F(4×4)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import torch
    import torch.nn.functional as F

    from scenemtl.malloc import tune
    from scenemtl.models.layers.winograd import MIN_CHANNEL_RATIO, MIN_PIXELS_TILE4, MIN_WORK, tile_for, winograd_conv3x3

    tune()
    torch.set_num_threads(args.threads)
    convolutions = {
        "direct": lambda *a: F.conv2d(*a, padding=1),
        "F(2×2)": lambda *a: winograd_conv3x3(*a, tile=2),
        "F(4×4)": lambda *a: winograd_conv3x3(*a, tile=4),
    }
    rows = []
    for cin, cout, height, width in LAYERS:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2, cin, height, width, generator=generator, requires_grad=True)
        weight = (torch.randn(cout, cin, 3, 3, generator=generator) / (9 * cin) ** 0.5).requires_grad_()
        bias = torch.randn(cout, generator=generator, requires_grad=True)
        grad = torch.randn(2, cout, height, width, generator=generator)

        def step(convolve, x=x, weight=weight, bias=bias, grad=grad):
            out = convolve(x, weight, bias)
            return [out.detach(), *torch.autograd.grad(out, (x, weight, bias), grad)]

        exact = step(convolutions["direct"], *(t.detach().double().requires_grad_() for t in (x, weight, bias)), grad.double())
        errors = {
            name: max(((got - want).abs().max() / want.abs().max()).item() for want, got in zip(exact, step(convolve)))
            for name, convolve in convolutions.items()
        }
        del exact
        times: dict[str, list[float]] = {name: [] for name in SIDES}
        for _ in range(args.repeats):
            for name in SIDES:
                start = time.perf_counter()
                step(convolutions[name])
                times[name].append(time.perf_counter() - start)
        ms = {name: 1000 * statistics.median(times[name]) for name in SIDES}
        tile = tile_for(cin, cout, height * width)
        rows.append(
            f"| {cin} → {cout} | {height}×{width} | {cin * cout / (cin + cout):.0f} | {ms['direct']:.1f} | {ms['F(2×2)']:.1f} | "
            f"{ms['F(4×4)']:.1f} | {ms['direct'] / ms['F(2×2)']:.2f}× | {ms['direct'] / ms['F(4×4)']:.2f}× | "
            f"{errors['direct']:.0e} / {errors['F(2×2)']:.0e} / {errors['F(4×4)']:.0e} | {f'F({tile}×{tile})' if tile else 'direct'} |"
        )
        print(rows[-1], flush=True)
    header = (
        "| channels | map | in·out/(in+out) | direct ms | F(2×2) ms | F(4×4) ms | F(2×2) speed | F(4×4) speed | "
        "error direct / F(2×2) / F(4×4) | rule |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    text = header + "\n" + "\n".join(rows) + "\n"
    print(text)
    if args.out:
        import numpy

        command = "python benchmarks/winograd_speed.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(
            f"# 3×3 convolutions on a CPU: direct (oneDNN) and Winograd F(2×2, 3×3), F(4×4, 3×3), forward + backward\n\n"
            f"`{command}`; {os.cpu_count()} CPUs ({platform.machine()}), {args.threads} torch threads; Python "
            f"{platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}. Batch 2, median of {args.repeats} "
            f"passes (forward and the three gradients), the three alternated. Error: the largest difference from the exact "
            f"(float64) output and gradients, relative to each one's largest value. ``rule``: what ``layers.Conv3x3`` runs "
            f"(``tile_for``): Winograd where in·out/(in+out) ≥ {MIN_CHANNEL_RATIO} and in·out/(in+out) × pixels ≥ {MIN_WORK}, "
            f"F(4×4) on maps of at least {MIN_PIXELS_TILE4} pixels.\n\n" + text
        )


if __name__ == "__main__":
    main()
