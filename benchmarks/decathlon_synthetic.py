"""Many-to-many classification on ``synthetic_domains``, on a CPU: MTAN vs one shared network vs ten networks.

    python benchmarks/decathlon_synthetic.py [--steps 3000] [--batch 32] [--lr 0.05] [--weight-decay 5e-4]
                                             [--filters 4,8,16,32] [--blocks 1] [--domains 10]
                                             [--num-train 600] [--num-val 200] [--seed 0] [--arms 'mtan;shared;independent']
                                             [--no-route] [--no-recalibrate] [--runs runs/decathlon_synthetic]
                                             [--out benchmarks/results/decathlon_synthetic_cpu.md]

``synthetic_domains`` (:mod:`scenemtl.data.synthetic_domains`) is the package's drawn stand-in for the Visual
Decathlon: ten 72×72 classification domains, one ``classification`` task each, every image labelled for its
own domain only. Every arm trains on the same images with the same optimiser (SGD, momentum 0.9, Nesterov when
``train.nesterov`` exists, poly schedule), steps, batch, seed and grouped batches (``data.batching: grouped``:
each epoch visits the domains one after another, no batch mixes two, MTAN's loop; each batch runs only its
domain's branch or network, ``train.route_tasks``, when the installed trainer has it); horizontal flips only where
the dataset allows them. The arms are the three rows of MTAN's decathlon comparison at a CPU width
(``model.options.filters`` and ``blocks`` narrow the WRN-28-4):

- ``mtan``: ``mtan_wrn``, the shared WRN with each domain's attention masks and linear head;
- ``shared``: ``mtan_wrn`` with ``attention: false``, the same WRN trunk shared by the ten linear heads;
- ``independent``: ``stl`` with ``per_task: mtan_wrn, attention: false``, ten separate WRNs, one per domain.

Each arm is scored on the val split twice: as training leaves the batch norms (the trainer's final report), and
after re-estimating them per domain on that domain's training images (``eval.recalibrate_bn``, MTAN's test
protocol, statistics only; ``engine/recalibrate.py``). Per arm: parameters, per-domain top-1, the mean over
domains, and a decathlon-style score: the formula of :mod:`scenemtl.metrics.decathlon` (1000 per domain
at no error, 0 at E_max, quadratic between) with E_max = 2 × the ``independent`` arm's error on that domain,
so the independent networks score 250 per domain by construction (scored with their own recalibration
setting); wall time and s/step.

Each arm is trained in this process, one after another; a finished arm (its ``bench.json``) is reused, so the
command continues after an interruption. The markdown report goes to ``--out`` (a discussion written by hand
under its last heading is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MARKER = "## What this shows and does not show"
REFERENCE = "independent"


def nesterov_available() -> bool:
    from scenemtl.config import TrainConfig

    return "nesterov" in TrainConfig.model_fields


def base_config(args: argparse.Namespace, run_dir: Path, model: dict) -> dict:
    """What every arm shares, with the arm's model."""
    from scenemtl.data.synthetic_domains import DOMAIN_NAMES

    train = {
        "steps": args.steps,
        "optimizer": "sgd",
        "lr": args.lr,
        "momentum": 0.9,
        "weight_decay": args.weight_decay,
        "warmup_steps": 20,
        "schedule": "poly",
        "init_output_bias": False,
        "log_every": 25,
        "eval_every": 0,
        "checkpoint_every": 0,
        "keep_checkpoints": 1,
        "log_images": False,
        "device": "cpu",
    }
    if nesterov_available():
        train["nesterov"] = True
    if args.no_route:
        train["route_tasks"] = False
    return {
        "name": run_dir.name,
        "seed": args.seed,
        "out_dir": str(run_dir),
        "tasks": {name: {} for name in DOMAIN_NAMES[: args.domains]},
        "data": {
            "name": "synthetic_domains",
            "options": {"domains": args.domains, "num_train": args.num_train, "num_val": args.num_val, "seed": 0},
            "batching": "grouped",
            "batch_size": args.batch,
            "eval_batch_size": 100,
            "augment": {"scale": None, "flip": True, "photometric": False},
        },
        "model": model,
        "train": train,
        "eval": {"recalibrate_bn": False},
    }


def arms(args: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    """Each arm's key, its label and its model."""
    width = {"filters": [int(c) for c in args.filters.split(",")], "blocks": args.blocks}
    return {
        "mtan": ("MTAN (mtan_wrn)", {"arch": "mtan_wrn", "options": dict(width)}),
        "shared": ("shared WRN (mtan_wrn, attention: false)", {"arch": "mtan_wrn", "options": {"attention": False, **width}}),
        "independent": (
            "independent WRNs (stl, per_task: mtan_wrn)",
            {"arch": "stl", "options": {"per_task": "mtan_wrn", "attention": False, **width}},
        ),
    }


def top1(metrics: dict) -> dict[str, float]:
    return {name: float(values["top1"]) for name, values in metrics.items()}


def recalibrated(trainer) -> tuple[dict[str, dict[str, float]], float]:
    """The val metrics after re-estimating the batch norms per domain (``eval.recalibrate_bn``), and the seconds it took."""
    from scenemtl.engine.recalibrate import evaluate_recalibrated

    start = time.perf_counter()
    data = trainer.config.data
    metrics = evaluate_recalibrated(
        trainer.model,
        trainer.tasks,
        trainer.train_set,
        trainer.train_transform,
        trainer.val_set,
        trainer.eval_transform,
        trainer.device,
        data.batch_size,
        data.eval_batch_size,
        seed=trainer.config.seed,
    )
    return {name: metric.compute() for name, metric in metrics.items()}, time.perf_counter() - start


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, summed task loss) of the logged training windows (each window's batches are one or two domains')."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["step"], float(sum(r["loss"].values()))) for r in rows if r.get("kind") == "train" and r.get("loss")]


def run_arm(args: argparse.Namespace, index: int, key: str, label: str, model: dict) -> dict:
    """Train and score one arm, or reuse its earlier result."""
    from scenemtl.config import validate
    from scenemtl.engine.trainer import Trainer

    run_dir = REPO / args.runs / f"arm{index}"
    saved = run_dir / "bench.json"
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "runs", "arms")}
    if saved.exists():
        record = json.loads(saved.read_text())
        if record["key"] == key and record["settings"] == settings:
            print(f"[{label}] reused {saved.relative_to(REPO)}", flush=True)
            return record
        raise SystemExit(f"{run_dir} holds a run of other settings; remove it or pass another --runs")
    config = validate(base_config(args, run_dir, model), "(decathlon_synthetic)")
    start = time.perf_counter()
    trainer = Trainer(config, progress=False)
    built = time.perf_counter()
    load_before = os.getloadavg()
    report = trainer.fit()  # ends with the val evaluation (batch norms as trained)
    fitted = time.perf_counter()
    log = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    begun = next(r["time"] for r in log if r.get("kind") == "run")
    trained = [r["time"] for r in log if r.get("kind") == "train"][-1]
    evaluated = [r["time"] for r in log if r.get("kind") == "val"][-1]
    record = {
        "key": key,
        "label": label,
        "model": model,
        "settings": settings,
        "nesterov": bool(getattr(config.train, "nesterov", False)),
        "routed": bool(getattr(trainer, "route", False)),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "shared_parameters": sum(p.numel() for p in trainer.model.shared_parameters()),
        "plain": report["metrics"],
        "setup_s": built - start,
        "fit_s": fitted - built,
        # from the run's log: the steps (to the last logged step, the last step) and the final evaluation
        "train_s": trained - begun,
        "eval_s": evaluated - trained,
        "train_losses": train_losses(trainer.run_dir),
    }
    if not args.no_recalibrate:
        record["recalibrated"], record["recalibrate_s"] = recalibrated(trainer)
    record["wall_s"] = time.perf_counter() - start
    record["load_before"], record["load_after"] = load_before, os.getloadavg()
    saved.write_text(json.dumps(record, indent=1))
    plain = top1(record["plain"])
    line = f"[{label}] mean top-1 {sum(plain.values()) / len(plain):.2f}"
    if "recalibrated" in record:
        recal = top1(record["recalibrated"])
        line += f", recalibrated {sum(recal.values()) / len(recal):.2f}"
    print(f"{line} (training {record['train_s']:.0f} s, {record['train_s'] / args.steps:.3f} s/step)", flush=True)
    return record


def relative_score(errors: dict[str, float], reference: dict[str, float]) -> tuple[float, dict[str, float]]:
    """The decathlon formula (:mod:`scenemtl.metrics.decathlon`: α_d · max(0, E_max − E)^γ, α_d = 1000 · E_max^−γ,
    γ = 2) with E_max = 2 × the ``reference`` error of each domain (percent). A domain the reference gets all right
    (E_max 0) gives 1000 to an arm without error there and 0 otherwise."""
    from scenemtl.metrics.decathlon import GAMMA, POINTS

    parts = {}
    for domain, error in errors.items():
        limit = 2.0 * reference[domain]
        parts[domain] = (POINTS if error <= 0 else 0.0) if limit <= 0 else POINTS * max(0.0, limit - error) ** GAMMA / limit**GAMMA
    return sum(parts.values()), parts


def epoch_losses(record: dict, per_epoch: int) -> list[float]:
    """The mean of the logged training-loss windows of each epoch (a window counts in the epoch of its last step)."""
    epochs: dict[int, list[float]] = {}
    for step, loss in record["train_losses"]:
        epochs.setdefault((step - 1) // per_epoch, []).append(loss)
    return [sum(values) / len(values) for _, values in sorted(epochs.items())]


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def results_table(records: list[dict], domains: list[str], classes: dict[str, int]) -> list[str]:
    """Per arm and batch-norm setting: per-domain top-1, the mean and the score against the independent networks."""
    reference = {r["key"]: r for r in records}.get(REFERENCE)
    header = ["arm", "BN statistics", *(f"{d} ({classes[d]})" for d in domains), "mean top-1", "score (ref. = independent)"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines.append(
        "| *chance* |  | "
        + " | ".join(fmt(100 / classes[d]) for d in domains)
        + f" | {fmt(sum(100 / classes[d] for d in domains) / len(domains))} |  |"
    )
    for record in records:
        for kind, when in (("plain", "as trained"), ("recalibrated", "recalibrated per domain")):
            if kind not in record:
                continue
            accuracy = top1(record[kind])
            score = ""
            if reference is not None and kind in reference:
                ref_errors = {d: 100.0 - v for d, v in top1(reference[kind]).items()}
                total, _ = relative_score({d: 100.0 - accuracy[d] for d in domains}, ref_errors)
                score = f"{total:.0f}"
            cells = [fmt(accuracy[d]) for d in domains] + [fmt(sum(accuracy[d] for d in domains) / len(domains), 2), score]
            lines.append(f"| {record['label']} | {when} | " + " | ".join(cells) + " |")
    return lines


def score_table(records: list[dict], domains: list[str]) -> list[str]:
    """Each domain's part of the score (recalibrated statistics where measured)."""
    reference = {r["key"]: r for r in records}.get(REFERENCE)
    if reference is None:
        return ["(no independent arm: no score)"]
    kind = "recalibrated" if "recalibrated" in reference else "plain"
    ref_errors = {d: 100.0 - v for d, v in top1(reference[kind]).items()}
    lines = ["| arm | " + " | ".join(domains) + " | total |", "|---" * (len(domains) + 2) + "|"]
    lines.append("| *E_max = 2 × independent error, %* | " + " | ".join(fmt(2 * ref_errors[d]) for d in domains) + " |  |")
    for record in records:
        if kind not in record:
            continue
        accuracy = top1(record[kind])
        total, parts = relative_score({d: 100.0 - accuracy[d] for d in domains}, ref_errors)
        lines.append(f"| {record['label']} | " + " | ".join(f"{parts[d]:.0f}" for d in domains) + f" | {total:.0f} |")
    return lines


def cost_table(records: list[dict]) -> list[str]:
    lines = [
        "| arm | parameters | of which shared | training s | s/step | scoring s (as trained) | scoring s (recalibrated) | wall s "
        "| load avg before → after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        steps = r["settings"]["steps"]
        cells = [
            f"{r['parameters']:,}",
            f"{r['shared_parameters']:,}",
            f"{r['train_s']:.0f}",
            f"{r['train_s'] / steps:.3f}",
            f"{r['eval_s']:.0f}",
            fmt(r.get("recalibrate_s"), 0),
            f"{r['wall_s']:.0f}",
            f"{r['load_before'][0]:.2f} → {r['load_after'][0]:.2f}",
        ]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{torch.get_num_threads()} torch threads on a {os.cpu_count() or 1}-CPU machine ({cpu})"


def write_report(args: argparse.Namespace, records: list[dict], total: float) -> None:
    """The markdown report (a discussion under ``MARKER`` in an existing file is kept)."""
    import numpy as np

    from scenemtl.data.synthetic_domains import DOMAINS

    domains = [d.name for d in DOMAINS[: args.domains]]
    classes = {d.name: len(d.classes) for d in DOMAINS}
    per_epoch = sum(-(-args.num_train // args.batch) for _ in domains)
    nesterov = all(r["nesterov"] for r in records)
    routed = [r.get("routed", False) for r in records]
    routing = (
        "; each batch runs only its domain's branch or network, `train.route_tasks`"
        if all(routed)
        else "; every batch runs every domain's branch or network"
        if not any(routed)
        else "; some arms run only the batch's domain's branch (`train.route_tasks`), not all"
    )
    runs_total = sum(r["wall_s"] for r in records)
    lines = [
        "# Many-to-many classification on synthetic domains, on a CPU: MTAN vs a shared network vs independent networks",
        "",
        f"`python benchmarks/decathlon_synthetic.py {' '.join(sys.argv[1:])}`",
        "",
        f"{machine()}; Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}. "
        f"Data: `synthetic_domains` (seed 0), {args.domains} domains, {args.num_train} training and {args.num_val} val "
        f"images per domain, 72×72. Every arm: {args.steps} SGD steps ({'Nesterov ' if nesterov else ''}momentum 0.9, "
        f"lr {args.lr:g}, weight decay {args.weight_decay:g}, poly schedule, 20 warm-up steps) of batch {args.batch}, "
        f"grouped batches (each epoch visits the domains one after another: {per_epoch} steps an epoch, "
        f"{args.steps / per_epoch:.1f} epochs{routing}), horizontal flips where the dataset allows them, seed {args.seed}; WRN "
        f"widths `filters` [{args.filters}], `blocks` {args.blocks} (MTAN's WRN-28-4: [16, 64, 128, 256], 4). Top-1 "
        "accuracy on the val split in percent, with the batch norms as training left them and after re-estimating "
        "them on each domain's training images before scoring it (`eval.recalibrate_bn`). Score: the decathlon "
        "formula with E_max = 2 × the independent networks' error per domain (250 per domain for them by "
        f"construction, {250 * args.domains} in all; 1000 per domain at no error), each BN setting against the "
        f"independent arm's same setting. The arms took {runs_total / 60:.1f} min in all, one after another (this "
        f"invocation: {total / 60:.1f} min, reused arms counting 0).",
        "",
        "## Top-1 per domain (classes in brackets)",
        "",
        *results_table(records, domains, classes),
        "",
        "## Score per domain (recalibrated statistics)",
        "",
        *score_table(records, domains),
        "",
        "## Cost",
        "",
        *cost_table(records),
        "",
        "Mean training loss per epoch (the cross-entropy of each batch's domain, averaged over the epoch's logged "
        "25-step windows), epochs 1, 2, …: "
        + "; ".join(
            f"{r['label']}: " + ", ".join(f"{loss:.2f}" for loss in epoch_losses(r, per_epoch)) for r in records if r["train_losses"]
        )
        + ".",
        "",
        MARKER,
        "",
        "(discussion: written by hand below)",
        "",
    ]
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    if out.exists():
        old = out.read_text()
        if MARKER in old:
            text = text.split(MARKER)[0] + MARKER + old.split(MARKER, 1)[1]
    out.write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps of every arm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--filters", default="4,8,16,32", help="the WRN's four widths (MTAN: 16,64,128,256)")
    parser.add_argument("--blocks", type=int, default=1, help="blocks per stage (MTAN: 4)")
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--num-train", type=int, default=600, help="training images per domain")
    parser.add_argument("--num-val", type=int, default=200, help="val images per domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default="mtan;shared;independent", help="';'-separated: mtan; shared; independent")
    parser.add_argument(
        "--no-route", action="store_true", help="every batch runs every domain's branch or network (train.route_tasks: false)"
    )
    parser.add_argument("--no-recalibrate", action="store_true", help="skip the scoring with recalibrated batch norms")
    parser.add_argument("--runs", default="runs/decathlon_synthetic", help="where the runs go (reused when finished)")
    parser.add_argument("--out", default="benchmarks/results/decathlon_synthetic_cpu.md")
    args = parser.parse_args()

    # grouped batches visit the domains in turn: every task goes unlabelled for ~9/10 of an epoch at a time, which
    # the trainer's check for tasks that never learn reports once a domain; expected here
    warnings.filterwarnings("ignore", message="task '.*' has had no labelled pixel")
    chosen = [(i, key, label, model) for i, (key, (label, model)) in enumerate(arms(args).items()) if key in args.arms.split(";")]
    if not chosen:
        raise SystemExit("--arms names none of mtan, shared, independent")
    start = time.perf_counter()
    records = [run_arm(args, index, key, label, model) for index, key, label, model in chosen]
    write_report(args, records, time.perf_counter() - start)


if __name__ == "__main__":
    main()
