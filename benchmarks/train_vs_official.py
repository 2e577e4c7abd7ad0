"""Training-step speed and memory on a CPU, scenemtl against the official code, side by side in one run.

    python benchmarks/train_vs_official.py [--official-mtan DIR] [--official-mtt DIR] [--models mtan,invpt]
           [--variants fp32,fp32-system-malloc,bf16] [--rounds 2] [--warmup 3] [--iters 3] [--threads 2]
           [--out benchmarks/results/train_vs_official_cpu.md]

Two workloads, each the anchor of ``../shared/bench`` (the official side built the same way):

* **MTAN-SegNet, NYUv2-13 at 288×384, batch 2, fp32**: one training step. Official (``--official-mtan``:
  an exported lorenmt/mtan tree): the ``SegNet`` class of ``im2im_pred/model_segnet_mtan.py`` (the
  file's imports and class definitions are executed, not its training script), the losses of
  ``im2im_pred/utils.py: model_fit`` summed with equal weights, Adam 1e-4: zero_grad, forward, losses,
  backward, step. scenemtl: ``Trainer.train_step`` of ``configs/nyuv2_13/mtan.yaml`` on a batch of a
  generated NYUv2-13 copy (equal weights, Adam 1e-4, the recipe's losses), which also moves the
  batch, checks it and steps the schedule.
* **InvPT with ViT-S/16, 2 × 256×256, five PASCAL tasks, fp32**: forward + backward of the loss
  ``Σ mean(output)`` over every output, no optimiser, as the anchor. Official (``--official-mtt``: an
  exported prismformore/Multi-Task-Transformer tree): ``InvPT/`` built through its own
  ``create_config`` and ``get_model`` with the ViT-S/16 backbone made by its private factory
  ``_create_vision_transformer`` (timm 1.0's ``build_model_with_cfg`` shimmed; random weights).
  scenemtl: ``invpt`` with the released PASCAL decoder widths on the same ViT. Peak memory: the
  growth of the process's peak resident set over the resident set before the first pass (the
  activations, gradients and workspace of a pass, and what the allocator and the libraries' first calls
  keep); ``--live-memory`` adds the peak of live tensor memory during one more step over its lowest
  point (PyTorch's memory profiler: activations, gradients and temporaries alone, the same on any
  allocator), for both sides.

Every measurement runs in a fresh process with ``--threads`` torch threads, and the processes
alternate official, scenemtl, official, … for ``--rounds`` rounds; each reports the median of
``--iters`` steps after ``--warmup``. The table gives the best round of each (the machines are
noisy; best-of is the usual estimate of a step's cost) and scenemtl's speed as a multiple of the
official's. scenemtl's variants: ``fp32`` (the default settings, ``train.allocator: tuned``),
``fp32-system-malloc`` (glibc's defaults: what the allocator setting is worth), ``bf16``
(``train.precision: bf16``), ``channels-last``, ``checkpointing``
(``train.activation_checkpointing``: less memory for more time), ``checkpointing-lean`` (with
``train.allocator: lean``: freed blocks go back to the system) and ``compile``
(``train.compile``; minutes of compilation on a CPU).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "fp32": [],
    "fp32-system-malloc": ["train.allocator=system"],
    "bf16": ["train.precision=bf16"],
    "channels-last": ["train.channels_last=true"],
    "compile": ["train.compile=true"],
    "checkpointing": ["train.activation_checkpointing=true"],
    "checkpointing-system-malloc": ["train.activation_checkpointing=true", "train.allocator=system"],
    "checkpointing-lean": ["train.activation_checkpointing=true", "train.allocator=lean"],
}
# variants an architecture does not have (MTAN-SegNet has no activation checkpointing)
NOT_APPLICABLE = {("mtan", "checkpointing"), ("mtan", "checkpointing-system-malloc"), ("mtan", "checkpointing-lean")}
INVPT_OPTIONS = {"embed_dim": 512, "pred_channels": 64, "num_heads": [2, 2, 2]}  # the released PASCAL decoder


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(step, warmup: int, iters: int) -> tuple[float, float]:
    """Median seconds of ``iters`` calls after ``warmup``, and the resident set before the first."""
    before = _rss_mib()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), before


def _sum_of_means(values) -> "torch.Tensor":  # noqa: F821
    import torch

    if torch.is_tensor(values):
        return values.float().mean()
    items = values.values() if isinstance(values, dict) else values
    return sum(_sum_of_means(v) for v in items if torch.is_tensor(v) or isinstance(v, dict | list | tuple))


# --- the official code ------------------------------------------------------------------------
def official_mtan(tree: Path, args: argparse.Namespace) -> dict:
    import torch

    folder = tree / "im2im_pred"
    sys.path.insert(0, str(folder))
    import utils as mtan_utils  # official: functions only

    source = (folder / "model_segnet_mtan.py").read_text()
    module = ast.parse(source)
    kept = [
        node
        for node in module.body
        if isinstance(node, ast.ClassDef)
        or (isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "module", None) != "create_dataset")
    ]
    namespace: dict = {"__name__": "official_mtan"}
    exec(compile(ast.Module(body=kept, type_ignores=[]), str(folder / "model_segnet_mtan.py"), "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["SegNet"]()
    generator = torch.Generator().manual_seed(0)
    height, width = 288, 384
    image = torch.randn(2, 3, height, width, generator=generator)
    label = torch.randint(0, 13, (2, height, width), generator=generator)
    label[:, : height // 10] = -1  # MTAN's ignore index
    depth = torch.rand(2, 1, height, width, generator=generator) * 9.5 + 0.5
    depth[..., : height // 10, :] = 0
    normal = torch.nn.functional.normalize(torch.randn(2, 3, height, width, generator=generator), dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        predictions, _ = model(image)
        optimizer.zero_grad()
        loss = sum(mtan_utils.model_fit(p, t, n) for p, t, n in zip(predictions, (label, depth, normal), ("semantic", "depth", "normal")))
        loss.backward()
        optimizer.step()

    seconds, before = _timed(step, args.warmup, args.iters)
    return _result(seconds, before, model, step, args)


def official_invpt(tree: Path, args: argparse.Namespace) -> dict:
    import collections
    import collections.abc

    import torch

    for name in ("Mapping", "Sequence"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    root = tree / "InvPT"
    sys.path.insert(0, str(root))
    import models.transformers.vit as vit  # official
    from utils import common_config  # official
    from utils.config import create_config  # official

    def build_model_with_cfg(model_cls, variant, pretrained, **kwargs):  # timm 1.0 moved these arguments
        for key in ("default_cfg", "pretrained_filter_fn", "pretrained_custom_load", "pretrained_cfg", "feature_cfg"):
            kwargs.pop(key, None)
        return model_cls(**kwargs)

    vit.build_model_with_cfg = build_model_with_cfg
    p = create_config(str(root / "configs/pascal/pascal_vitLp16.yml"), {"run_mode": "infer"})
    p.TRAIN.SCALE = p.TEST.SCALE = (args.size, args.size)

    def get_backbone(p):  # ViT-S/16 through the official private factory, as get_backbone does for ViT-L
        net = vit._create_vision_transformer(
            "vit_small_patch16_384",
            pretrained=False,
            select_list=[3, 6, 9],
            patch_size=16,
            embed_dim=384,
            depth=12,
            num_heads=6,
            drop_path_rate=0.15,
            img_size=p.TRAIN.SCALE,
        )
        p.backbone_channels = [384] * 4
        p.spatial_dim = [[args.size // 16, args.size // 16] for _ in range(4)]
        p.final_embed_dim = p.embed_dim + p.PRED_OUT_NUM_CONSTANT
        return net, p.backbone_channels

    common_config.get_backbone = get_backbone
    torch.manual_seed(0)
    model = common_config.get_model(p)
    return _fwd_bwd(model, lambda output: _sum_of_means(output), args)


def _fwd_bwd(model, loss_of, args: argparse.Namespace) -> dict:
    import torch

    image = torch.randn(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss_of(model(image)).backward()

    seconds, before = _timed(step, args.warmup, args.iters)
    return _result(seconds, before, model, step, args)


def _result(seconds: float, before: float, model, step, args: argparse.Namespace) -> dict:
    """One measurement: the step's time, the resident-set growth since ``before``, the parameters, and with
    ``--live-memory`` / ``--profile`` one more step's live-tensor peak / costliest operators."""
    result = {"seconds": seconds, "growth_mib": _peak_mib() - before, "parameters": sum(p.numel() for p in model.parameters())}
    if args.live_memory:
        result["live_mib"] = _live_growth_mib(step)
    if args.profile:
        result["profile"] = _profile(step)
    return result


def _live_growth_mib(step) -> float | None:
    """The peak of live tensor memory during one ``step`` over its lowest point (the parameters and what persists
    between steps), in MiB, by PyTorch's memory profiler (``export_memory_timeline``: every tensor, those made before
    it started included): activations, gradients and temporaries, whatever the allocator keeps or returns; None where
    this PyTorch lacks it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    if not hasattr(prof, "export_memory_timeline"):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "timeline.json"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # (deprecated for CUDA snapshots; CPUs have no other)
            prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    totals = [sum(size) for size in sizes]
    return (max(totals) - min(totals)) / 2**20 if totals else None


def _profile(step) -> list[list]:
    """The operators of one step that take the most time: name, input shapes, share of the step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
    return [[e.key, str(e.input_shapes)[:80], round(e.self_cpu_time_total / total, 3)] for e in top]


# --- scenemtl ----------------------------------------------------------------------------------
def ours_mtan(variant: str, args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO))  # the fixture writer lives in tests/
    from scenemtl.config import load_config
    from scenemtl.engine.trainer import Trainer
    from tests.data.test_nyuv2_13 import write_nyuv2_13

    with tempfile.TemporaryDirectory() as folder:
        root = write_nyuv2_13(Path(folder) / "nyuv2", counts=(2, 1), size=(288, 384))
        config = load_config(
            REPO / "configs/nyuv2_13/mtan.yaml",
            [f"data.root={root}", f"out_dir={folder}/run", "data.num_workers=0", "train.device=cpu", *VARIANTS[variant]],
        )
        trainer = Trainer(config, progress=False, log=False)
        batch = next(iter(trainer.loader))
        seconds, before = _timed(lambda: trainer.train_step([batch]), args.warmup, args.iters)
        result = _result(seconds, before, trainer.model, lambda: trainer.train_step([batch]), args)
        trainer.close()
    return result


def ours_invpt(variant: str, args: argparse.Namespace) -> dict:
    import torch

    from scenemtl import malloc
    from scenemtl.config import ModelConfig, load_config
    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.engine.evaluate import autocast
    from scenemtl.models import build_model

    overrides = VARIANTS[variant]
    config = load_config(
        None, ["tasks={semseg: {}, human_parts: {}, saliency: {}, normals: {}, edge: {}}", "data.name=pascal_context", *overrides]
    )
    if config.train.allocator != "system":
        malloc.tune(config.train.allocator)  # as the trainer does
    torch.manual_seed(0)
    tasks = build_tasks(config, dataset_info(config))
    options = {**INVPT_OPTIONS, "img_size": [args.size, args.size]}
    model = build_model(ModelConfig(arch="invpt", backbone={"name": "vit_small_patch16_384"}, options=options), tasks)
    if config.train.activation_checkpointing:
        model.set_activation_checkpointing(True)
    if config.train.compile:
        model = torch.compile(model)
    channels_last = config.train.channels_last

    def loss_of(output) -> torch.Tensor:
        return _sum_of_means([output.final, *output.aux.values()])

    image_format = torch.channels_last if channels_last else torch.contiguous_format

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image):
            with autocast(torch.device("cpu"), config.train.precision):
                return self.model(image.contiguous(memory_format=image_format))

    return _fwd_bwd(Wrapped(), loss_of, args)


def measure(spec: dict, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    if spec["side"] == "official":
        tree = Path(args.official_mtan if spec["model"] == "mtan" else args.official_mtt)
        result = (official_mtan if spec["model"] == "mtan" else official_invpt)(tree, args)
    else:
        result = (ours_mtan if spec["model"] == "mtan" else ours_invpt)(spec["variant"], args)
    return {**spec, **result}


def run(spec: dict, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--one", json.dumps(spec)]
    for name in ("official_mtan", "official_mtt", "warmup", "iters", "threads", "size"):
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    if args.profile:
        command.append("--profile")
    if args.live_memory:
        command.append("--live-memory")
    result = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["?"])[-1]
        print(f"{spec}: failed: {tail}", file=sys.stderr)
        return {**spec, "error": tail}
    return json.loads(lines[-1][7:])


def versions() -> str:
    import numpy
    import timm
    import torch

    return f"Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, numpy {numpy.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-mtan", default=None, help="an exported lorenmt/mtan tree")
    parser.add_argument("--official-mtt", default=None, help="an exported prismformore/Multi-Task-Transformer tree")
    parser.add_argument("--models", default="mtan,invpt")
    parser.add_argument("--variants", default="fp32,fp32-system-malloc,bf16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--warmup", type=int, default=3, help="steps before the timed ones (both codes still fault in fresh memory in their first steps)"
    )
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="InvPT's input side")
    parser.add_argument("--out", default=None)
    parser.add_argument("--profile", action="store_true", help="also print each measurement's costliest operators (torch.profiler)")
    parser.add_argument(
        "--live-memory",
        action="store_true",
        help="also measure the peak of live tensor memory of one more step (PyTorch's memory profiler)",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(json.loads(args.one), args)), flush=True)
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    models = [m for m in args.models.split(",") if m]
    results: dict[tuple, list[dict]] = {}
    for _ in range(args.rounds):
        for model in models:
            specs = [{"model": model, "side": "scenemtl", "variant": v} for v in variants if (model, v) not in NOT_APPLICABLE]
            if (args.official_mtan if model == "mtan" else args.official_mtt) is not None:
                specs.insert(0, {"model": model, "side": "official", "variant": "official"})
            for spec in specs:
                outcome = run(spec, args)
                print(json.dumps(outcome), flush=True)
                results.setdefault((model, spec["side"], spec["variant"]), []).append(outcome)
    titles = {
        "mtan": "MTAN-SegNet train step, NYUv2-13 288×384, batch 2",
        "invpt": f"InvPT ViT-S/16 forward+backward, 2 × {args.size}×{args.size}",
    }
    live_columns = " live tensors MiB | live ÷ official |" if args.live_memory else ""
    lines = [
        f"| workload | code | seconds (best round) | memory growth MiB | scenemtl speed | memory ÷ official |{live_columns}",
        "|---|---|---|---|---|---|" + ("---|---|" if args.live_memory else ""),
    ]
    for model in models:
        rows = {key: [r for r in runs if "error" not in r] for key, runs in results.items() if key[0] == model}
        official = rows.get((model, "official", "official"))
        reference = min(official, key=lambda r: r["seconds"]) if official else None
        for (_, side, variant), runs in rows.items():
            if not runs:
                lines.append(f"| {titles[model]} | {side} {variant} | failed | | | |" + (" | |" if args.live_memory else ""))
                continue
            best = min(runs, key=lambda r: r["seconds"])
            memory = min(r["growth_mib"] for r in runs)
            speed = f"{reference['seconds'] / best['seconds']:.2f}×" if reference and side == "scenemtl" else ""
            ratio = f"{memory / min(r['growth_mib'] for r in official):.2f}" if official and side == "scenemtl" else ""
            name = "official" if side == "official" else f"scenemtl {variant}"
            row = f"| {titles[model]} | {name} | {best['seconds']:.2f} | {memory:.0f} | {speed} | {ratio} |"
            if args.live_memory:
                live = [r["live_mib"] for r in runs if r.get("live_mib") is not None]
                reference_live = [r["live_mib"] for r in official or [] if r.get("live_mib") is not None]
                live_ratio = f"{min(live) / min(reference_live):.2f}" if live and reference_live and side == "scenemtl" else ""
                row += f" {min(live):.0f} | {live_ratio} |" if live else " | |"
            lines.append(row)
    if args.profile:
        lines.append("")
        lines.append("Costliest operators of one step (self CPU time, share of the step; input shapes):")
        for (model, side, variant), runs in results.items():
            for run_ in runs[:1]:
                for name, shapes, share in run_.get("profile", []):
                    lines.append(f"- {model} {side} {variant}: {name} {shapes} {share:.0%}")
    text = "\n".join(lines)
    header = f"{os.cpu_count()} CPUs ({platform.machine()}), {args.threads} torch threads; {versions()}"
    print(f"\n{header}\n\n{text}")
    if args.out:
        command = "python benchmarks/train_vs_official.py " + " ".join(a if not a.startswith("/") else "…" for a in sys.argv[1:])
        Path(args.out).write_text(
            f"# Training steps on a CPU: scenemtl and the official code\n\n`{command}`; {header}. Each measurement in a "
            f"fresh process, the sides alternated for {args.rounds} rounds; median of {args.iters} steps after "
            f"{args.warmup} warm-up.\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
