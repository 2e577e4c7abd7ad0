"""Forward and forward+backward time and peak memory of InvPT and TaskPrompter, side by side.

    python benchmarks/transformer_speed.py [--backbone vit_small_patch16_384] [--size 256] [--batch 2]
                                           [--repeats 3] [--device cpu] [--out FILE.md]

Both architectures on one ViT (default ViT-S/16: 384 wide, 12 blocks, 6 heads), with the decoder
widths of their released PASCAL configurations (InvPT: embed_dim 512 + 64, 2 heads per stage;
TaskPrompter: embed_dim 300, final_embed_dim 350, chan_nheads 1, cross-task reweighting), five
tasks of the synthetic scenes (semseg 6 classes, depth, normals, edge, saliency), random weights,
``batch`` images of size×size. Each row runs in a fresh process: the model is built, one pass
warms up, then ``repeats`` passes are timed (median). Memory: on a CPU the process's peak
resident set (``ru_maxrss``) and its growth over the resident set before the first pass (the
activations, gradients and workspace of a pass); on CUDA the peak allocated memory and its growth
over the allocation before the first pass. Forward is evaluation mode without gradients;
forward+backward is training mode with a loss on every output, and ``checkpointing`` recomputes
each ViT block's activations in the backward pass (``train.activation_checkpointing``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

ARCHS = {
    "invpt": {"embed_dim": 512, "pred_channels": 64, "num_heads": [2, 2, 2]},
    "taskprompter": {"embed_dim": 300, "final_embed_dim": 350, "chan_nheads": 1, "use_ctr": True},
}
MODES = ("forward", "forward+backward", "forward+backward, checkpointing", "forward+backward, bf16")


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(arch: str, mode: str, args: argparse.Namespace) -> dict:
    """Time one architecture in one mode in this process."""
    import torch

    from scenemtl.config import ModelConfig, load_config
    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.models import build_model

    torch.manual_seed(0)
    config = load_config(None, [])
    tasks = build_tasks(config, dataset_info(config))
    options = {**ARCHS[arch], "img_size": [args.size, args.size]}
    model = build_model(ModelConfig(arch=arch, backbone={"name": args.backbone}, options=options), tasks)
    device = torch.device(args.device)
    model.to(device)
    image = torch.randn(args.batch, 3, args.size, args.size, device=device)
    backward = mode != "forward"
    model.train(backward)
    if "checkpointing" in mode:
        model.set_activation_checkpointing(True)
    dtype = torch.bfloat16 if "bf16" in mode else None

    def step() -> None:
        with torch.set_grad_enabled(backward), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            output = model(image)
            loss = sum(v.float().square().mean() for stage in [output.final, *output.aux.values()] for v in stage.values())
        if backward:
            loss.backward()
            model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _rss_mib()
    step()  # warm-up (and the allocation high-water mark)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "arch": arch,
        "mode": mode,
        "seconds": statistics.median(times),
        "peak_mib": peak,
        "growth_mib": peak - before,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
    }


def main() -> None:
    """Every architecture × mode in its own process; a table with ratios to each model's plain forward+backward."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_small_patch16_384")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the table (Markdown) here")
    parser.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args)))
        return
    rows = []
    for arch in ARCHS:
        for mode in MODES:
            command = [
                sys.executable,
                __file__,
                "--one",
                arch,
                mode,
                "--backbone",
                args.backbone,
                "--size",
                str(args.size),
                "--batch",
                str(args.batch),
                "--repeats",
                str(args.repeats),
                "--device",
                args.device,
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"{arch} {mode}: failed: {result.stderr.strip().splitlines()[-1] if result.stderr else '?'}")
                continue
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    if not rows:
        sys.exit("every run failed (see the lines above)")
    memory = "peak allocated" if args.device.startswith("cuda") else "peak RSS"
    lines = [
        f"{args.backbone}, {args.batch} × {args.size}×{args.size}, five tasks, device {rows[0]['device']}, median of {args.repeats}",
        "",
        f"| model | parameters | pass | seconds | × fwd+bwd | {memory} MiB | growth MiB | × fwd+bwd growth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(r for r in rows if r["arch"] == row["arch"] and r["mode"] == "forward+backward")
        lines.append(
            f"| {row['arch']} | {row['parameters'] / 1e6:.1f} M | {row['mode']} | {row['seconds']:.3f} | "
            f"{row['seconds'] / base['seconds']:.2f} | {row['peak_mib']:.0f} | {row['growth_mib']:.0f} | "
            f"{row['growth_mib'] / base['growth_mib']:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(f"`python benchmarks/transformer_speed.py {' '.join(sys.argv[1:])}`\n\n{text}\n")


if __name__ == "__main__":
    main()
