"""Training speed and peak memory of the engine's precision and memory options, side by side.

    python benchmarks/engine_speed.py [--backbone resnet50] [--size 256] [--batch 4] [--steps 5] [--device cpu]

HPS with a timm backbone on synthetic scenes at size×size, five tasks. Each variant runs in a
fresh process (so the peak resident memory on a CPU is its own; on CUDA the peak allocated
memory is read) and times ``Trainer.train_step`` on batches loaded beforehand. Ratios are
against fp32 in the same run. Variants: fp32, bf16, fp16 (CUDA), channels-last, bf16 +
channels-last, accumulation (half the batch, two micro-batches: the same global batch),
activation checkpointing and, on CUDA, bf16 + channels-last + torch.compile.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "fp32": [],
    "bf16": ["train.precision=bf16"],
    "fp16": ["train.precision=fp16"],
    "channels_last": ["train.channels_last=true"],
    "bf16+channels_last": ["train.precision=bf16", "train.channels_last=true"],
    "accumulation 2 (half batch)": ["train.accumulation=2"],
    "activation checkpointing": ["train.activation_checkpointing=true"],
    "bf16+channels_last+compile": ["train.precision=bf16", "train.channels_last=true", "train.compile=true"],
}
CUDA_ONLY = ("fp16", "bf16+channels_last+compile")  # on a CPU: an emulation, and minutes of compilation


def measure(variant: str, args: argparse.Namespace) -> dict:
    """Time one variant in this process."""
    import torch

    from scenemtl.config import load_config
    from scenemtl.engine.trainer import Trainer

    accumulation = 2 if "accumulation" in variant else 1
    batch = args.batch // accumulation
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            None,
            [
                f"out_dir={tmp}/run",
                f"train.device={args.device}",
                f"model.backbone.name={args.backbone}",
                "model.options.decoder_stride=4",
                f"data.options.height={args.size}",
                f"data.options.width={args.size}",
                f"data.options.num_train={batch * accumulation * 2}",
                "data.options.num_val=2",
                f"data.batch_size={batch}",
                "train.init_output_bias=false",
                *VARIANTS[variant],
            ],
        )
        trainer = Trainer(config, progress=False, log=False)
        iterator = iter(trainer.loader)
        batches = [next(iterator) for _ in range(accumulation)]
        trainer.train_step(batches)  # warm-up
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(batches)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
            memory = torch.cuda.max_memory_allocated() / 2**20
        else:
            memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        seconds = (time.perf_counter() - start) / args.steps
        return {
            "variant": variant,
            "device": str(trainer.device),
            "steps_per_s": 1 / seconds,
            "samples_per_s": args.batch / seconds,
            "peak_memory_mib": memory,
        }


def main() -> None:
    """Run every variant in its own process and print a table of rates, memory and ratios to fp32."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4, help="global batch per step")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        metavar="NAME",
        help="a subset to run (fp32 always runs first, as the reference)",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    rows = []
    for variant in ["fp32"] + [v for v in args.variants if v != "fp32"]:
        if variant in CUDA_ONLY and args.device == "cpu":
            continue
        command = [
            sys.executable,
            __file__,
            "--one",
            variant,
            "--backbone",
            args.backbone,
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--device",
            args.device,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{variant}: failed: {result.stderr.strip().splitlines()[-1] if result.stderr else '?'}")
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"HPS {args.backbone} at {args.size}×{args.size}, global batch {args.batch}, five tasks, device {base['device']}")
    print(f"{'variant':<30}{'steps/s':>9}{'× fp32':>8}{'peak MiB':>10}{'× fp32':>8}")
    for row in rows:
        print(
            f"{row['variant']:<30}{row['steps_per_s']:>9.3f}{row['steps_per_s'] / base['steps_per_s']:>8.2f}"
            f"{row['peak_memory_mib']:>10.0f}{row['peak_memory_mib'] / base['peak_memory_mib']:>8.2f}"
        )


if __name__ == "__main__":
    main()
