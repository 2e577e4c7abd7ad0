"""Every architecture on synthetic scenes with the same budget: Δm against STL, speed and peak memory.

    python benchmarks/architectures.py [--file benchmarks/architectures.yaml] [--seeds 0,1]
                                       [--only hps,mtinet] [--steps 300] [--out runs/architectures]

Each (architecture, seed) is trained by ``scenemtl train`` in a process of its own, so that its
peak memory is its own: on CUDA the allocator's peak, on CPU the process's peak resident set
(which includes the interpreter and PyTorch, the same for every row; the STL row shows it).
Training speed is read from the run's log (optimiser steps per second, the first logged window
left out); Δm is taken against the single-task networks of the same seeds. A finished run is
reused, so the command continues after an interruption. The table goes to stdout and to
``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run(label: str, seed: int, experiment: Path, overrides: list[str], out: Path) -> dict:
    """Train one row's seed (or reuse it) and return its results and log-derived cost."""
    run_dir = out / label / f"seed{seed}"
    if not (run_dir / "results.json").exists():
        command = [
            sys.executable,
            "-m",
            "scenemtl.cli",
            "train",
            str(experiment),
            "--quiet",
            "--set",
            f"seed={seed}",
            "--set",
            f"out_dir={run_dir}",
            "--set",
            "reference=null",
            *[x for item in overrides for x in ("--set", item)],
        ]
        print(f"[{label} seed {seed}] {' '.join(command[3:])}", flush=True)
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    results = json.loads((run_dir / "results.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    batch = next(r["global_batch"] for r in records if r["kind"] == "run")
    windows = [r for r in records if r["kind"] == "train" and r.get("samples_per_s")]
    windows = windows[1:] if len(windows) > 1 else windows
    return {
        "results": results,
        "steps_per_s": statistics.mean(r["samples_per_s"] for r in windows) / batch,
        "memory_mib": max(r.get("memory_mib", 0.0) for r in windows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default="benchmarks/architectures.yaml")
    parser.add_argument("--seeds", default=None, help="comma-separated (default: the file's)")
    parser.add_argument("--only", default=None, help="comma-separated row labels")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the file's)")
    parser.add_argument("--out", default="runs/architectures")
    args = parser.parse_args()

    from scenemtl.metrics import delta_m

    spec = yaml.safe_load((REPO / args.file).read_text())
    experiment = (REPO / args.file).parent / spec["experiment"]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else spec["seeds"]
    common = list(spec.get("set", [])) + ([f"train.steps={args.steps}"] if args.steps else [])
    rows = spec["architectures"]
    if args.only:
        rows = [r for r in rows if r["label"] in args.only.split(",")]
    out = REPO / args.out
    reference_runs = [run("stl", seed, experiment, common + spec["stl_set"], out) for seed in seeds]
    first = reference_runs[0]["results"]
    directions, mains = first["directions"], first["main"]
    metrics = {task: [name] for task, name in mains.items()}
    reference = {t: {n: statistics.mean(r["results"]["metrics"][t][n] for r in reference_runs) for n in ns} for t, ns in metrics.items()}
    table = [("STL", reference_runs, [0.0] * len(seeds))]
    for row in rows:
        runs = [run(row["label"], seed, experiment, common + row["set"], out) for seed in seeds]
        deltas = [delta_m(r["results"]["metrics"], reference, directions, metrics) for r in runs]
        table.append((row["label"], runs, deltas))

    columns = [(t, n) for t, ns in metrics.items() for n in ns]
    arrow = lambda t, n: "↑" if directions[t][n] else "↓"  # noqa: E731
    lines = [
        f"Architectures on synthetic scenes: mean ± std over seeds {seeds}; Δm against the STL row; "
        f"`python benchmarks/architectures.py {' '.join(sys.argv[1:])}`",
        "",
        "| architecture | "
        + " | ".join(f"{t} {n} {arrow(t, n)}" for t, n in columns)
        + " | Δm % ↑ | steps/s | × STL speed | peak memory MiB |",
        "|" + "---|" * (len(columns) + 5),
    ]
    stl_speed = statistics.mean(r["steps_per_s"] for r in reference_runs)

    def mean_std(values):
        values = [v for v in values if math.isfinite(v)]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    for label, runs, deltas in table:
        cells = []
        for t, n in columns:
            m, s = mean_std([r["results"]["metrics"][t][n] for r in runs])
            cells.append(f"{m:.4g} ± {s:.2g}")
        dm, ds = mean_std(deltas)
        speed = statistics.mean(r["steps_per_s"] for r in runs)
        memory = max(r["memory_mib"] for r in runs)
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {dm:+.2f} ± {ds:.2f} | {speed:.2f} | {speed / stl_speed:.2f} | {memory:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)


if __name__ == "__main__":
    main()
