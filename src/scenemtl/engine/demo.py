"""``scenemtl demo``: single-task baselines vs hard sharing on synthetic scenes, next to trivial baselines."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from PIL import Image

from scenemtl.config import Config, load_config
from scenemtl.engine import builder
from scenemtl.engine.evaluate import results_report
from scenemtl.engine.predict import predict_files
from scenemtl.engine.priors import estimate_priors
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ScenemtlError
from scenemtl.metrics import delta_m
from scenemtl.models.registry import HARD_SHARING, SINGLE_TASK

MARKER = ".scenemtl-demo"
DEMO_STEPS = 500
#: the demo runs the embedded default experiment on small scenes, so that six networks train in
#: a few minutes on two CPU cores (configs/synthetic/base.yaml is the same experiment)
DEMO_OVERRIDES = ["data.options.height=48", "data.options.width=64"]


def demo_config(arch: str, out: Path, steps: int, overrides: list[str] | None = None) -> Config:
    """The embedded default experiment (the config defaults) for one architecture, writing under ``out``."""
    fixed = [f"model.arch={arch}", f"name={arch}", f"out_dir={out / arch}", f"train.steps={steps}"]
    return load_config(None, [*DEMO_OVERRIDES, *(overrides or []), *fixed])


def trivial_baselines(config: Config, train_set, val_set, progress: bool = True) -> dict[str, dict[str, float]]:
    """Each task's best constant prediction (majority class, mean depth, mean normal, prior), evaluated."""
    tasks = builder.build_tasks(config, builder.dataset_info(config))
    priors = estimate_priors(train_set, tasks, max_samples=len(train_set), show_progress=progress)
    metrics = {name: task.metric() for name, task in tasks.items()}
    for i in range(len(val_set)):
        sample = val_set.sample(i)
        for name, task in tasks.items():
            target = sample[name][None]
            metrics[name].update(task.constant_prediction(priors[name], target), target)
    return results_report(metrics)["metrics"]


def beats_trivial(label: str, results: dict, trivial: dict, mains: dict, directions: dict) -> list[tuple[str, bool]]:
    """Per task: the main metric at least twice the trivial one (higher-better) or at most half (lower-better)."""
    checks = []
    for task, name in mains.items():
        value, base = results[task][name], trivial[task][name]
        if directions[task][name]:
            checks.append((f"{label} {task} {name} {value:.3g} ≥ 2 × trivial {base:.3g}", value >= 2 * base))
        else:
            checks.append((f"{label} {task} {name} {value:.3g} ≤ ½ × trivial {base:.3g}", value <= 0.5 * base))
    return checks


def _row(label: str, metrics: dict, mains: dict, dm: float | None) -> str:
    cells = [f"{metrics[t][m]:.3f}" if math.isfinite(metrics[t][m]) else "n/a" for t, m in mains.items()]
    return f"| {label} | " + " | ".join(cells) + f" | {'' if dm is None else f'{dm:+.2f}'} |"


def run_demo(out: Path, steps: int | None = None, progress: bool = True, overrides: list[str] | None = None) -> int:
    """Train STL and HPS, evaluate, print the comparison table, write panels; 0 when HPS/STL beat the baselines.

    ``overrides`` (dotted ``key=value``) change the embedded default experiment, e.g. its size.
    """
    started = time.perf_counter()
    steps = steps or DEMO_STEPS
    if out.exists() and not out.is_dir():
        raise ScenemtlError(f"--out {out} is a file; give a folder")
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise ScenemtlError(f"{out} exists and is not a demo folder; choose another --out so nothing is overwritten")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by scenemtl demo; replaced on the next run\n")

    single_config = demo_config(SINGLE_TASK, out, steps, overrides)
    shared_config = demo_config(HARD_SHARING, out, steps, overrides)
    train_set = builder.build_dataset(single_config, "train")
    val_set = builder.build_dataset(single_config, "val")
    height, width = val_set.sample(0)["image"].shape[-2:]
    print(f"{single_config.data.name}: {len(train_set)} train / {len(val_set)} val images of {height}×{width}; {steps} steps per model")

    trivial = trivial_baselines(single_config, train_set, val_set, progress)
    single = Trainer(single_config, progress=progress, datasets=(train_set, val_set)).fit()
    shared_config = shared_config.model_copy(update={"reference": single["metrics"]})
    shared_trainer = Trainer(shared_config, progress=progress, datasets=(train_set, val_set))
    shared = shared_trainer.fit()

    mains = single["main"]
    directions = single["directions"]
    delta = lambda results: delta_m(results, single["metrics"], directions, {t: [m] for t, m in mains.items()})  # noqa: E731
    header = "| model | " + " | ".join(f"{t} {m} {'↑' if directions[t][m] else '↓'}" for t, m in mains.items()) + " | Δm % |"
    lines = [header, "|" + "---|" * (len(mains) + 2)]
    lines.append(_row("trivial (constant)", trivial, mains, delta(trivial)))
    lines.append(_row("STL (one network per task)", single["metrics"], mains, 0.0))
    lines.append(_row("HPS (shared backbone)", shared["metrics"], mains, delta(shared["metrics"])))
    table = "\n".join(lines)

    checks = [
        check
        for label, results in (("STL", single["metrics"]), ("HPS", shared["metrics"]))
        for check in beats_trivial(label, results, trivial, mains, directions)
    ]

    inputs = out / "inputs"
    inputs.mkdir()
    for i in range(4):
        Image.fromarray(val_set.render(i)["image"]).save(inputs / f"val_{i:05d}.png")
    predict_files(shared_trainer.checkpoint_dir, [inputs], out / "predictions", device=shared_config.train.device, progress=False)

    elapsed = time.perf_counter() - started
    report = {
        "trivial": trivial,
        SINGLE_TASK: single["metrics"],
        HARD_SHARING: shared["metrics"],
        "main": mains,
        "directions": directions,
        "delta_m": {"trivial": delta(trivial), HARD_SHARING: delta(shared["metrics"])},
        "checks": {name: ok for name, ok in checks},
        "steps": steps,
        "seconds": round(elapsed, 1),
        "threads": torch.get_num_threads(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(table + "\n")
    print()
    print(table)
    print()
    for name, ok in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    print(f"\nprediction panels: {out / 'predictions' / 'panels'}   report: {out / 'report.md'}   ({elapsed:.0f} s)")
    return 0 if all(ok for _, ok in checks) else 1
