"""The two DenseMTL training settings on synthetic scenes, on a CPU: self-supervised depth (SDE) and domain adaptation (DA).

    python benchmarks/settings_cpu.py [--steps 500] [--seeds 0,1] [--height 48 --width 64] [--batch 16]
                                      [--num-train 512] [--num-val 160] [--only sde,da]
                                      [--runs runs/settings_cpu] [--out benchmarks/results/settings_cpu.md]

Every arm of a comparison trains the same model (hard parameter sharing on the tiny timm
``test_resnet`` backbone, tasks semseg + depth) on the same data with the same optimiser, steps,
batch and seeds; only what the comparison is about differs.

SDE (synthetic scenes rendered as three-frame clips of a moving camera, ``data.options.frames: true``;
the depth head is a sigmoid disparity, ``output: disparity``, in every arm):

- ``self-supervised``: the ``self_supervised_depth`` objective replaces the depth loss (photometric
  reprojection through a pose network trained from scratch at the run's learning rate); no depth
  label is read in training (``train.init_output_bias`` is off in every SDE arm, because the
  depth head's starting bias is otherwise set from the mean training depth);
- ``supervised``: the depth task's own L1 in metres on the decoded disparity, against the labels;
- ``no depth training``: depth weight 0 (the fixed balancer back-propagates 0 × the depth loss, so
  every depth gradient is exactly zero and the depth head keeps its initial weights, up to AdamW's
  decoupled weight decay; the script checks that the head's output layer got no gradient).

All three are scored the same way, as self-supervised depth is (monocular video gives depth only up
to scale): per-image median scaling, clamp to [0.001, 80] m, image-pooled errors (abs_rel, rmse,
δ1), plus semseg mIoU; and, for reference, the same errors without median scaling.

DA (source: synthetic ``domain: source`` with labels; target: ``domain: target``, another appearance):

- ``source only``: trained on the labelled source;
- ``adversarial``: plus ADVENT-style output-space adversarial adaptation on unlabelled target train
  images (the objective's defaults: λ_adv 0.005, discriminator width 64, output ``final``);
- ``min_entropy``: plus ADVENT's entropy minimisation on them (weight 0.001, the default);
- ``oracle``: trained on the labelled target train split (the upper bound);
- a control, ``min_entropy`` at weight 0: the target images go through the network in training mode
  as in both objectives, with a zero loss. Batch norm's running statistics then see target images
  (the statistics evaluation uses), which alone adapts a network to a change of appearance; the
  control measures that part of the objectives' gain.

All five are scored on the target domain's val split (``data.eval_dataset``): semseg mIoU and metric
depth RMSE. Each (arm, seed) is trained in this process, one after another; a finished run (its
``bench.json``) is reused, so the command continues after an interruption. The markdown report goes
to ``--out``; the discussion under its "What this shows and does not show" heading is written by hand
and kept when the report is written again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEPTH_RANGE = [0.1, 20.0]  # metres: the rooms are a few metres deep
SELF_SUPERVISED_EVAL = {"median_scaling": True, "pooling": "image", "clamp": [0.001, 80.0]}


def base_config(args: argparse.Namespace, seed: int, run_dir: Path) -> dict:
    """What every arm of both comparisons shares."""
    return {
        "name": run_dir.name,
        "seed": seed,
        "out_dir": str(run_dir),
        "data": {
            "name": "synthetic",
            "options": {"height": args.height, "width": args.width, "num_train": args.num_train, "num_val": args.num_val},
            "batch_size": args.batch,
            "eval_batch_size": 32,
            "augment": {"scale": None, "flip": True, "photometric": False},
        },
        "model": {"arch": "hps", "backbone": {"name": "test_resnet"}},
        "train": {
            "steps": args.steps,
            "optimizer": "adamw",
            "lr": args.lr,
            "weight_decay": 1e-4,
            "warmup_steps": 20,
            "grad_clip": 10.0,  # DenseMTL's, in every arm
            "log_every": 50,
            "eval_every": 0,
            "checkpoint_every": 0,
            "keep_checkpoints": 1,
            "log_images": False,
            "device": "cpu",
        },
    }


def sde_arms(args: argparse.Namespace) -> dict[str, tuple[str, list[str]]]:
    """Each SDE arm's run folder and overrides."""
    depth = {"output": "disparity", "depth_range": DEPTH_RANGE, **SELF_SUPERVISED_EVAL}
    common = [
        "tasks=" + json.dumps({"semseg": {"weight": 1.0}, "depth": {"weight": 1.0, **depth}}),
        "data.options.frames=true",
        "train.init_output_bias=false",
    ]
    # the pose network trains from scratch (no ImageNet weights offline) at the run's rate, as monodepth2 trains
    # depth and pose at one rate; DenseMTL's 1e-6 is for a pretrained pose network
    objective = "objectives=" + json.dumps([{"name": "self_supervised_depth", "options": {"pose_lr": args.lr}}])
    return {
        "self-supervised (photometric)": ("self_supervised", [*common, objective]),
        "supervised (depth labels)": ("supervised", list(common)),
        "no depth training (weight 0)": ("no_depth", [*common, "tasks.depth.weight=0.0"]),
    }


def da_arms(args: argparse.Namespace) -> dict[str, tuple[str, list[str]]]:
    """Each DA arm's run folder and overrides (source only first, the oracle last)."""
    size = {"height": args.height, "width": args.width}
    target_train = {"name": "synthetic", "options": {**size, "num_train": args.num_train, "domain": "target"}, "split": "train"}
    target_val = {"name": "synthetic", "options": {**size, "num_val": args.num_val, "domain": "target"}}
    common = [
        "tasks=" + json.dumps({"semseg": {"weight": 1.0}, "depth": {"weight": 1.0}}),
        "data.eval_dataset=" + json.dumps(target_val),
    ]
    objective = lambda name, **options: "objectives=" + json.dumps([{"name": name, "options": {"target": target_train, **options}}])  # noqa: E731
    return {
        "source only": ("source_only", list(common)),
        # a control, not a method: the target images go through the network in training mode as in the two
        # objectives (so batch norm's running statistics see them), with a zero loss
        "control: target images seen, no loss (min_entropy weight 0)": ("target_bn_only", [*common, objective("min_entropy", weight=0.0)]),
        "adversarial (ADVENT, λ 0.005)": ("adversarial", [*common, objective("adversarial")]),
        "min_entropy (weight 0.001)": ("min_entropy", [*common, objective("min_entropy")]),
        "oracle (target labels)": ("oracle", [*common, "data.options.domain=target"]),
    }


def depth_reeval(trainer, **options) -> dict[str, float]:
    """The depth errors of the trained model on its val split under other evaluation options."""
    from scenemtl.engine.evaluate import evaluate
    from scenemtl.tasks.depth import DepthTask

    depth = trainer.tasks["depth"]
    task = DepthTask("depth", output=depth.output, depth_range=list(depth.depth_range), **options)
    metrics = evaluate(trainer.model, {"depth": task}, trainer.val_loader, trainer.device, progress=False)
    return metrics["depth"].compute()


def run_arm(args: argparse.Namespace, comparison: str, folder: str, label: str, overrides: list[str], seed: int) -> dict:
    """Train and score one (arm, seed), or reuse its earlier result."""
    from scenemtl.config import apply_overrides, validate
    from scenemtl.engine.trainer import Trainer

    run_dir = REPO / args.runs / comparison / folder / f"seed{seed}"
    saved = run_dir / "bench.json"
    if saved.exists():
        record = json.loads(saved.read_text())
        if record["label"] == label and record["overrides"] == overrides and record["steps"] == args.steps:
            print(f"[{comparison} | {label} | seed {seed}] reused {saved.relative_to(REPO)}", flush=True)
            record.setdefault("steps_per_s", steps_per_s(run_dir, args.batch))
            return {**record, "reused": True}
    if run_dir.exists():  # an interrupted or outdated run of this script: start it again
        print(f"[{comparison} | {label} | seed {seed}] starting over in {run_dir.relative_to(REPO)}", flush=True)
        shutil.rmtree(run_dir)
    config = validate(apply_overrides(base_config(args, seed, run_dir), overrides), "(settings_cpu)")
    start = time.perf_counter()
    trainer = Trainer(config, progress=False)
    built = time.perf_counter()
    report = trainer.fit()
    wall = time.perf_counter() - start
    check = check_zero_depth_gradient(trainer) if comparison == "sde" and config.tasks["depth"].weight == 0 else None
    record = {
        "label": label,
        "overrides": overrides,
        "steps": args.steps,
        "seed": seed,
        "metrics": report["metrics"],
        "wall_s": wall,
        "setup_s": built - start,
        "check": check,
        "steps_per_s": steps_per_s(run_dir, args.batch),
        # other processes on the machine slow a run down: the 1-minute load average as it ends
        "load_average": os.getloadavg()[0],
    }
    if comparison == "sde":
        record["unscaled"] = depth_reeval(trainer, pooling="image", clamp=[0.001, 80.0])
        if trainer.objectives:
            record["diagnostics"] = sde_diagnostics(trainer)
    saved.write_text(json.dumps(record, indent=1))
    print(f"[{comparison} | {label} | seed {seed}] {wall:.0f} s: {summary(comparison, record)}", flush=True)
    return record


@torch.no_grad()
def sde_diagnostics(trainer) -> dict[str, float]:
    """On the val clips: the photometric term (scale 0, auto-masked, as in training) of the trained depth and
    pose and of the true depth and pose, and how the pose network's translations compare with the true ones."""
    from scenemtl.engine.evaluate import move
    from scenemtl.settings.photometric import depth_to_disp

    objective = trainer.objectives[0]
    loss, pose = objective.loss, objective.pose
    low, high = objective.depth_task.depth_range
    model_was, pose_was = trainer.model.training, pose.training
    trainer.model.eval()
    pose.eval()
    loss.scales = (0,)
    sums = {"photometric_trained": 0.0, "photometric_true": 0.0, "automask_trained": 0.0, "automask_true": 0.0}
    cosines, ratios, count = [], [], 0
    generator = torch.Generator().manual_seed(0)
    for batch in trainer.val_loader:
        batch = move(batch, trainer.device)
        frames = batch["frames"].float() / 255.0
        clip = {-1: frames[:, 0], 0: frames[:, 1], 1: frames[:, 2]}
        camera = batch["camera"].float()
        disparity = objective.depth_task.disparity(trainer.model(batch["image"]).final["depth"])
        predicted = {k: pose(clip[k], clip[0], k) for k in (-1, 1)}
        truth = torch.tensor([m["poses"] for m in batch["meta"]], dtype=torch.float32, device=frames.device)
        true = {-1: truth[:, 0], 1: truth[:, 1]}
        true_disp = depth_to_disp(batch["depth"].clamp(low, high), low, high)
        n = frames.shape[0]
        for name, disp, poses in (("trained", disparity, predicted), ("true", true_disp, true)):
            _, parts = loss([disp], clip, camera, poses, generator)
            sums[f"photometric_{name}"] += float(parts["photometric/0"]) * n
            sums[f"automask_{name}"] += float(parts["automask/0"]) * n
        for k in (-1, 1):
            a, b = predicted[k][:, :3, 3], true[k][:, :3, 3]
            cosines += torch.nn.functional.cosine_similarity(a, b, dim=1).tolist()
            ratios += (a.norm(dim=1) / b.norm(dim=1).clamp_min(1e-9)).tolist()
        count += n
    trainer.model.train(model_was)
    pose.train(pose_was)
    values = {key: value / count for key, value in sums.items()}
    values["translation_cosine"] = statistics.mean(cosines)
    values["translation_norm_ratio"] = statistics.median(ratios)
    return values


def constant_depth_baseline(args: argparse.Namespace) -> dict[str, float]:
    """The SDE val split scored for a constant depth map: after per-image median scaling, every pixel at the
    image's median true depth (what a network that learned no depth structure at all reaches)."""
    from scenemtl.data.synthetic import SyntheticScenes
    from scenemtl.tasks.depth import DepthTask

    scenes = SyntheticScenes(split="val", tasks=["depth"], height=args.height, width=args.width, num_val=args.num_val, cache=False)
    metric = DepthTask("depth", **SELF_SUPERVISED_EVAL).metric()
    for i in range(len(scenes)):
        depth = scenes.sample(i)["depth"][None]
        metric.update(torch.ones_like(depth), depth)
    return metric.compute()


def check_zero_depth_gradient(trainer) -> str:
    """After training: one backward of a training batch through the engine's balancer (a copy of the model), and
    the largest gradient that reaches the depth head's parameters (it must be exactly 0 at depth weight 0)."""
    import copy

    from scenemtl.balancing.base import StepContext
    from scenemtl.engine.evaluate import move

    model = copy.deepcopy(trainer.model)
    batch = move(next(iter(trainer.loader)), trainer.device)
    output = model(batch["image"])
    losses = {name: trainer.tasks[name].loss(output.final[name], batch[name]) for name in trainer.tasks}
    params = [p for p in model.parameters() if p.requires_grad]
    trainer.balancer.backward(losses, StepContext(shared=list(model.shared_parameters()), parameters=params))
    depth_head = [p for name, p in model.named_parameters() if name.startswith("heads.depth.")]
    largest = max(float(p.grad.abs().max()) if p.grad is not None else 0.0 for p in depth_head)
    semseg = max(float(p.grad.abs().max()) for p in model.heads["semseg"].parameters() if p.grad is not None)
    if largest != 0.0 or not depth_head:
        raise SystemExit(f"depth weight 0 still sends gradient to the depth head (max |grad| {largest})")
    return (
        f"after training, one backward of a training batch through the run's balancer: largest |gradient| on the depth "
        f"head's {len(depth_head)} parameter tensors = {largest:g} (semseg head: {semseg:.3g})"
    )


def summary(comparison: str, record: dict) -> str:
    """One line of the main numbers."""
    m = record["metrics"]
    if comparison == "sde":
        return (
            f"abs_rel {m['depth']['abs_rel']:.4f} rmse {m['depth']['rmse']:.4f} δ1 {m['depth']['delta1']:.4f} "
            f"mIoU {m['semseg']['miou']:.2f}"
        )
    return f"target mIoU {m['semseg']['miou']:.2f} depth rmse {m['depth']['rmse']:.4f}"


def steps_per_s(run_dir: Path, batch: int) -> float:
    """The median training speed over the run's logged windows (the first, which includes rendering, left out)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    windows = [r["samples_per_s"] for r in records if r["kind"] == "train" and r.get("samples_per_s")]
    return statistics.median(windows[1:] or windows) / batch


def busy(record: dict) -> bool:
    """Whether other processes loaded the CPUs as the run ended (load average above this process's threads + 1)."""
    return record.get("load_average", 0.0) > torch.get_num_threads() + 1


def wall_cell(runs: list[dict]) -> str:
    """Mean training steps/s and wall time of the runs, marked † when one ran on a busy machine."""
    mark = " †" if any(busy(r) for r in runs) else ""
    return f"{statistics.mean(r['steps_per_s'] for r in runs):.1f}{mark} | {statistics.mean(r['wall_s'] for r in runs):.0f}{mark}"


def mean_half_range(values: list[float], digits: int) -> str:
    """``mean ± half-range`` (just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def sde_table(records: dict[str, list[dict]], constant: dict[str, float]) -> list[str]:
    """The SDE table, and the constant-depth reference row."""
    lines = [
        "| arm | abs_rel ↓ | rmse m ↓ | δ1 % ↑ | semseg mIoU ↑ | abs_rel, no scaling ↓ | rmse m, no scaling ↓ | steps/s | wall s / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, runs in records.items():
        depth = [r["metrics"]["depth"] for r in runs]
        raw = [r["unscaled"] for r in runs]
        cells = [
            mean_half_range([d["abs_rel"] for d in depth], 4),
            mean_half_range([d["rmse"] for d in depth], 3),
            mean_half_range([d["delta1"] for d in depth], 2),
            mean_half_range([r["metrics"]["semseg"]["miou"] for r in runs], 2),
            mean_half_range([d["abs_rel"] for d in raw], 4),
            mean_half_range([d["rmse"] for d in raw], 3),
            wall_cell(runs),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        f"| *reference: constant depth map (no model)* | {constant['abs_rel']:.4f} | {constant['rmse']:.3f} | "
        f"{constant['delta1']:.2f} |  |  |  |  |  |"
    )
    return lines


def da_table(records: dict[str, list[dict]]) -> list[str]:
    """The DA table, with the share of the source-only → oracle mIoU gap each arm closes."""
    lines = [
        "| arm | target semseg mIoU ↑ | target depth rmse m ↓ | gap closed (mIoU) | steps/s | wall s / run |",
        "|---|---|---|---|---|---|",
    ]
    labels = list(records)
    source = statistics.mean(r["metrics"]["semseg"]["miou"] for r in records[labels[0]])
    oracle = statistics.mean(r["metrics"]["semseg"]["miou"] for r in records[labels[-1]])
    for label, runs in records.items():
        miou = [r["metrics"]["semseg"]["miou"] for r in runs]
        closed = (statistics.mean(miou) - source) / (oracle - source) if oracle != source else float("nan")
        cells = [
            mean_half_range(miou, 2),
            mean_half_range([r["metrics"]["depth"]["rmse"] for r in runs], 3),
            f"{100 * closed:+.0f} %" if label not in (labels[0], labels[-1]) else "",
            wall_cell(runs),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500, help="optimiser steps of every run")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (and the pose network's)")
    parser.add_argument("--num-train", type=int, default=512, help="training scenes (source, target and oracle alike)")
    parser.add_argument("--num-val", type=int, default=160)
    parser.add_argument("--only", default="sde,da", help="comma-separated: sde, da")
    parser.add_argument("--runs", default="runs/settings_cpu", help="where the runs go (reused when finished)")
    parser.add_argument("--out", default="benchmarks/results/settings_cpu.md")
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    comparisons = {"sde": sde_arms(args), "da": da_arms(args)}
    chosen = [c for c in comparisons if c in args.only.split(",")]
    results: dict[str, dict[str, list[dict]]] = {}
    for comparison in chosen:
        results[comparison] = {}
        for label, (folder, overrides) in comparisons[comparison].items():
            results[comparison][label] = [run_arm(args, comparison, folder, label, overrides, seed) for seed in seeds]
    write_report(args, seeds, results)


def write_report(args: argparse.Namespace, seeds: list[int], results: dict) -> None:
    """The markdown report: tables, command and machine; the discussion under them is kept from the earlier file."""
    import numpy as np
    import timm

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    every = [r for arms in results.values() for runs in arms.values() for r in runs]
    runs_total, count, reused = sum(r["wall_s"] for r in every), len(every), sum(bool(r.get("reused")) for r in every)
    seed_note = f"seeds {seeds}, mean ± half-range" if len(seeds) > 1 else f"one seed ({seeds[0]})"
    lines = [
        "# DenseMTL's training settings on synthetic scenes, on a CPU",
        "",
        f"`python benchmarks/settings_cpu.py {' '.join(sys.argv[1:])}`",
        "",
        f"{torch.get_num_threads()} torch threads on a {os_cpus()}-CPU machine ({cpu}); Python {platform.python_version()}, "
        f"torch {torch.__version__}, timm {timm.__version__}, numpy {np.__version__}. Every run: hard parameter sharing "
        f"(`hps`, timm `test_resnet` backbone, FPN heads at stride 8; {parameters(args) / 1e6:.2f} M parameters), "
        f"tasks semseg + depth, {args.steps} AdamW steps "
        f"(lr {args.lr:g}, poly schedule, 20 warm-up steps, gradient clipping at 10) of batch {args.batch} at "
        f"{args.height}×{args.width}, {args.num_train} training scenes, {args.num_val} val scenes; {seed_note}. "
        "Steps/s: median over the run's logged 50-step windows (the first left out); "
        f"wall time per run includes building the run (rendering its scenes) and the final evaluation; the {count} runs "
        f"took {runs_total / 60:.1f} min in all, one after another"
        + (f" (this report reused {reused} of them from earlier invocations)." if reused else "."),
        "",
    ]
    if "sde" in results:
        check = next((r["check"] for runs in results["sde"].values() for r in runs if r.get("check")), None)
        lines += [
            "## Self-supervised depth (SDE)",
            "",
            "Clips of three frames, camera moving about 0.15 m per frame (`data.options.frames: true`); depth head a "
            f"sigmoid disparity (`output: disparity`, depth range {DEPTH_RANGE} m) in every arm; depth scored with "
            "per-image median scaling, clamp [0.001, 80] m, image pooling (`median_scaling: true`, `pooling: image`), "
            "on the source-domain val split. The supervised arm's loss is the depth task's L1 in metres of the decoded "
            "disparity. The last two depth columns are the same predictions without median scaling.",
            "",
            *sde_table(results["sde"], constant_depth_baseline(args)),
            "",
            f"Weight 0 check: {check}." if check else "",
            "",
        ]
        diagnostics = [r["diagnostics"] for runs in results["sde"].values() for r in runs if r.get("diagnostics")]
        if diagnostics:
            pick = lambda key, digits: mean_half_range([d[key] for d in diagnostics], digits)  # noqa: E731
            lines += [
                "Self-supervised arm, on the val clips: photometric term (scale 0, auto-masked, as in training) "
                f"{pick('photometric_trained', 4)} with the trained depth and pose network vs "
                f"{pick('photometric_true', 4)} with the true depth and camera motion (share of pixels where a warped "
                "neighbour beats the unwarped one, i.e. kept by auto-masking: "
                f"{pick('automask_trained', 2)} vs {pick('automask_true', 2)}); the pose network's translations: cosine "
                f"with the true direction {pick('translation_cosine', 2)}, median length ratio predicted/true "
                f"{pick('translation_norm_ratio', 2)}.",
                "",
            ]
    if "da" in results:
        lines += [
            "## Domain adaptation (DA)",
            "",
            "Source: synthetic `domain: source` (labelled); target: `domain: target` (another appearance); every arm "
            "scored on the target's val split (`data.eval_dataset`), depth metric (pixel-pooled RMSE, no scaling). "
            "Gap closed: (arm − source only) / (oracle − source only) of the mean mIoU.",
            "",
            *da_table(results["da"]),
            "",
        ]
    if any(busy(r) for arms in results.values() for runs in arms.values() for r in runs):
        lines += ["† measured while other processes loaded the CPUs (1-minute load average above the torch threads + 1).", ""]
    lines += ["## What this shows and does not show", "", "(discussion: see below)", ""]
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    if out.exists():  # keep a discussion written under the tables by hand
        old = out.read_text()
        marker = "## What this shows and does not show"
        if marker in old:
            text = text.split(marker)[0] + marker + old.split(marker, 1)[1]
    out.write_text(text)
    print(text)


def parameters(args: argparse.Namespace) -> int:
    """Parameters of the network every arm trains (semseg + depth)."""
    from scenemtl.config import apply_overrides, validate
    from scenemtl.engine import builder
    from scenemtl.models import build_model

    _, overrides = next(iter(da_arms(args).values()))
    config = validate(apply_overrides(base_config(args, 0, REPO / args.runs / "unused"), overrides), "(settings_cpu)")
    model = build_model(config.model, builder.build_tasks(config, builder.dataset_info(config)))
    return sum(p.numel() for p in model.parameters())


def os_cpus() -> int:
    """CPUs of the machine."""
    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
