"""3×3 convolutions on a CPU, forward and backward: oneDNN's direct convolution against Winograd's F(2×2, 3×3).

    python benchmarks/winograd_speed.py [--threads 2] [--repeats 5] [--out benchmarks/results/winograd_speed_cpu.md]

The layers are MTAN-SegNet's 3×3 convolutions at NYUv2-13's 288×384, batch 2 (channels in → out at their
resolution), and three on 32×32 maps. Each row times one pass of ``F.conv2d`` and one of ``layers.winograd.winograd_conv3x3``, each
followed by the backward pass of all three gradients, alternated, median of ``--repeats``; under the malloc
settings the trainer uses (``scenemtl.malloc``). The largest difference from the direct convolution's output and
gradients, relative to each one's largest value, is printed beside. ``pays`` is the rule
``layers.Conv3x3`` takes Winograd by (``MIN_CHANNEL_RATIO``, ``MIN_WORK``); this table is where those come from.
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
    # small maps: where the rule's MIN_WORK comes from
    (128, 128, 32, 32),
    (256, 256, 32, 32),
    (512, 512, 32, 32),
]


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
    from scenemtl.models.layers.winograd import MIN_CHANNEL_RATIO, MIN_WORK, pays, winograd_conv3x3

    tune()
    torch.set_num_threads(args.threads)
    rows = []
    for cin, cout, height, width in LAYERS:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2, cin, height, width, generator=generator, requires_grad=True)
        weight = (torch.randn(cout, cin, 3, 3, generator=generator) / (9 * cin) ** 0.5).requires_grad_()
        bias = torch.randn(cout, generator=generator, requires_grad=True)
        grad = torch.randn(2, cout, height, width, generator=generator)
        sides = {"direct": lambda *a: F.conv2d(*a, padding=1), "winograd": winograd_conv3x3}

        def step(convolve):
            out = convolve(x, weight, bias)
            return [out.detach(), *torch.autograd.grad(out, (x, weight, bias), grad)]

        results = {name: step(convolve) for name, convolve in sides.items()}
        error = max(((w - d).abs().max() / d.abs().max()).item() for d, w in zip(results["direct"], results["winograd"]))
        del results
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, convolve in sides.items():
                start = time.perf_counter()
                step(convolve)
                times[name].append(time.perf_counter() - start)
        direct, winograd = (statistics.median(times[n]) for n in sides)
        rows.append(
            f"| {cin} → {cout} | {height}×{width} | {cin * cout / (cin + cout):.0f} | {1000 * direct:.0f} | {1000 * winograd:.0f} | "
            f"{direct / winograd:.2f}× | {error:.0e} | {'yes' if pays(cin, cout, height * width) else 'no'} |"
        )
        print(rows[-1], flush=True)
    header = (
        "| channels | map | in·out/(in+out) | direct ms | Winograd ms | Winograd speed | largest difference | pays |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    text = header + "\n" + "\n".join(rows) + "\n"
    print(text)
    if args.out:
        import numpy

        command = "python benchmarks/winograd_speed.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(
            f"# 3×3 convolutions on a CPU: direct (oneDNN) and Winograd F(2×2, 3×3), forward + backward\n\n`{command}`; "
            f"{os.cpu_count()} CPUs ({platform.machine()}), {args.threads} torch threads; Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {numpy.__version__}. Batch 2, median of {args.repeats} passes (forward and the "
            f"three gradients), the two alternated. ``pays``: in·out/(in+out) ≥ {MIN_CHANNEL_RATIO} and a map of "
            f"in·out/(in+out) × pixels ≥ {MIN_WORK}, the rule of ``layers.Conv3x3``.\n\n" + text
        )


if __name__ == "__main__":
    main()
