"""``scenemtl benchmark balancing``: several balancers × several seeds on one experiment, one table.

A benchmark file names an experiment config, the methods (a name, or a name with options and a
label), the seeds and the overrides every run gets. Each (method, seed) trains in its own run
folder under ``out_dir``; a finished run (its ``results.json`` exists) is reused and an
interrupted one resumed, so re-running the command after a stop continues where it was. Δm of
each run is taken against the single-task reference: single-task networks trained on the same
seeds (``reference:`` the single-task architecture's name, their mean), or numbers from a results file or written inline (e.g. a
paper's STL row). The table gives mean ± sample standard deviation over seeds of every metric
entering Δm, Δm itself, and each method's cost: seconds per optimiser step (measured in the same
benchmark, relative to equal weighting) and backward passes through the shared part.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scenemtl.balancing import BALANCERS, build_balancer
from scenemtl.config import Config, Strict, _format, _read_yaml, apply_overrides, validate
from scenemtl.engine.checkpoint import list_checkpoints
from scenemtl.engine.evaluate import load_reference, write_json
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError
from scenemtl.models.registry import SINGLE_TASK
from scenemtl.metrics import delta_m


class MethodSpec(BaseModel):
    """One balancer of the comparison: its registered name, options and the label of its row."""

    model_config = ConfigDict(extra="forbid")
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @property
    def row(self) -> str:
        """The row label (the name unless given)."""
        return self.label or self.name


class BalancingBenchmark(Strict):
    """A balancing comparison (see the module docstring)."""

    name: str = "balancing"
    #: the experiment every run starts from (relative paths are relative to the benchmark file)
    experiment: str
    methods: list[str | MethodSpec]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    #: dotted overrides applied to every run, single-task reference runs included
    set: list[str] = Field(default_factory=list)
    #: the single-task architecture (SINGLE_TASK): train single-task networks on the same seeds; or a results file; or task → metric → value
    reference: str | dict[str, dict[str, float]] = SINGLE_TASK
    #: overrides that turn the experiment into its single-task reference
    stl_set: list[str] = Field(default_factory=lambda: [f"model.arch={SINGLE_TASK}", "balancer.name=equal"])
    #: task → metrics entering Δm (default: each task's main metric)
    delta_metrics: dict[str, list[str]] | None = None
    #: report −Δm, so that lower is better, as the NYUv2-13 balancing literature (Nash-MTL, FAMO) does;
    #: the default is the MTI-Net/InvPT sign (higher is better)
    delta_m_lower_is_better: bool = False
    out_dir: str = "runs/{name}"

    def specs(self) -> list[MethodSpec]:
        """The methods as specs, checked: known names, unique labels."""
        specs = [MethodSpec(name=m) if isinstance(m, str) else m for m in self.methods]
        for spec in specs:
            BALANCERS.get(spec.name)  # unknown names fail here, naming the nearest
        labels = [s.row for s in specs]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ConfigError(f"benchmark methods: the rows {duplicates} appear twice; give each a distinct 'label'")
        return specs


def load_benchmark(path: str | Path, overrides: list[str] | None = None) -> tuple[BalancingBenchmark, Path]:
    """Read and validate a benchmark file; ``overrides`` are appended to its ``set``."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        bench = BalancingBenchmark.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format(error, str(path))) from None
    if overrides:
        bench = bench.model_copy(update={"set": [*bench.set, *overrides]})
    return bench, path.resolve().parent


def run_config(bench: BalancingBenchmark, base: Path, label: str, seed: int, extra: list[str], balancer: MethodSpec | None) -> Config:
    """The experiment config of one run of the benchmark."""
    experiment = Path(bench.experiment)
    experiment = experiment if experiment.is_absolute() else base / experiment
    raw = validate(_read_yaml(experiment), str(experiment)).to_dict()
    raw = apply_overrides(raw, [*bench.set, *extra])
    if balancer is not None:
        raw["balancer"] = {"name": balancer.name, "options": dict(balancer.options)}
    out = Path(bench.out_dir.replace("{name}", bench.name))
    raw.update(seed=seed, name=f"{bench.name}-{label}-seed{seed}", out_dir=str(out / label / f"seed{seed}"))
    raw["reference"] = None
    return validate(raw, f"{experiment} in benchmark {bench.name} ({label}, seed {seed})")


def seconds_per_step(run_dir: Path) -> float | None:
    """Mean training seconds per optimiser step from the run's log (the first logged window, warm-up, left out)."""
    log = run_dir / "metrics.jsonl"
    if not log.exists():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    batch = next((r["global_batch"] for r in records if r["kind"] == "run"), None)
    speeds = [r["samples_per_s"] for r in records if r["kind"] == "train" and r.get("samples_per_s")]
    speeds = speeds[1:] if len(speeds) > 1 else speeds
    if not batch or not speeds:
        return None
    return statistics.mean(batch / s for s in speeds)


def train_or_reuse(config: Config, progress: bool) -> dict[str, Any]:
    """The final report of a run: read when finished, resumed when interrupted, trained otherwise."""
    results = config.run_dir / "results.json"
    if results.exists():
        return json.loads(results.read_text())
    resume = bool(list_checkpoints(config.run_dir / "checkpoints"))
    report = Trainer(config, resume=resume, progress=progress).fit()
    if report is None:
        raise ConfigError(f"run {config.run_dir} stopped before its last step; run the benchmark again to continue it")
    return report


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.mean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def run_balancing_benchmark(bench: BalancingBenchmark, base: Path, progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Train every (method, seed) not yet done; write and return the summary (``results.json``/``.md``)."""
    specs = bench.specs()
    out = Path(bench.out_dir.replace("{name}", bench.name))
    reference_runs: dict[int, dict] = {}
    if bench.reference == SINGLE_TASK:
        for seed in bench.seeds:
            log(f"[{bench.name}] single-task reference, seed {seed}")
            reference_runs[seed] = train_or_reuse(run_config(bench, base, SINGLE_TASK, seed, bench.stl_set, None), progress)
    runs: dict[str, dict[int, dict]] = {}
    timing: dict[str, list[float]] = {}
    for spec in specs:
        for seed in bench.seeds:
            log(f"[{bench.name}] {spec.row}, seed {seed}")
            config = run_config(bench, base, spec.row, seed, [], spec)
            runs.setdefault(spec.row, {})[seed] = train_or_reuse(config, progress)
            step_time = seconds_per_step(config.run_dir)
            if step_time is not None:
                timing.setdefault(spec.row, []).append(step_time)
    first = next(iter(next(iter(runs.values())).values()))
    directions, mains = first["directions"], first["main"]
    metrics = bench.delta_metrics or {task: [name] for task, name in mains.items()}
    for task, names in metrics.items():
        for name in names:
            if task not in directions or name not in directions[task]:
                known = {t: sorted(d) for t, d in directions.items()}
                raise ConfigError(f"benchmark delta_metrics: no metric '{task}/{name}'; the runs report {known}")
    if bench.reference == SINGLE_TASK:
        reference = {
            task: {name: statistics.mean(r["metrics"][task][name] for r in reference_runs.values()) for name in names}
            for task, names in metrics.items()
        }
    else:
        reference = load_reference(
            bench.reference
            if isinstance(bench.reference, dict)
            else str(Path(bench.reference) if Path(bench.reference).is_absolute() else base / bench.reference)
        )
    equal_time = statistics.mean(timing["equal"]) if timing.get("equal") else None
    rows = []
    for spec in specs:
        per_seed = runs[spec.row]
        balancer = build_balancer(spec.name, list(mains), {}, spec.options)
        values = {
            task: {name: _mean_std([r["metrics"][task][name] for r in per_seed.values()]) for name in names}
            for task, names in metrics.items()
        }
        sign = -1.0 if bench.delta_m_lower_is_better else 1.0
        deltas = [sign * delta_m(r["metrics"], reference, directions, metrics) for r in per_seed.values()]
        step_time = statistics.mean(timing[spec.row]) if timing.get(spec.row) else None
        rows.append(
            {
                "method": spec.row,
                "balancer": spec.name,
                "options": spec.options,
                "seeds": sorted(per_seed),
                "metrics": values,
                "delta_m": _mean_std(deltas),
                "delta_m_per_seed": deltas,
                "seconds_per_step": step_time,
                "time_vs_equal": step_time / equal_time if step_time and equal_time else None,
                "backward_passes": balancer.backward_passes,
                "extra_forward": balancer.extra_forward,
            }
        )
    summary = {
        "name": bench.name,
        "experiment": bench.experiment,
        "seeds": bench.seeds,
        "set": bench.set,
        "delta_metrics": metrics,
        "directions": directions,
        "reference": reference,
        "delta_m_lower_is_better": bench.delta_m_lower_is_better,
        "reference_kind": f"{SINGLE_TASK} runs (mean over seeds)" if bench.reference == SINGLE_TASK else "given",
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", summary)
    (out / "results.md").write_text(format_balancing_table(summary))
    (out / "benchmark.yaml").write_text(yaml.safe_dump(bench.model_dump(), sort_keys=False))
    return summary


def format_balancing_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per method, mean ± std over seeds, Δm and cost."""
    metrics, directions = summary["delta_metrics"], summary["directions"]
    columns = [(t, n) for t, names in metrics.items() for n in names]
    arrow = lambda t, n: "↑" if directions[t][n] else "↓"  # noqa: E731
    header = (
        "| method | "
        + " | ".join(f"{t} {n} {arrow(t, n)}" for t, n in columns)
        + f" | Δm % {'↓' if summary['delta_m_lower_is_better'] else '↑'} | s/step | × equal | backward passes |"
    )
    lines = [
        f"Balancing benchmark `{summary['name']}`: mean ± std over seeds {summary['seeds']}; Δm against {summary['reference_kind']}.",
        "",
        header,
        "|" + "---|" * (len(columns) + 5),
    ]
    reference = summary["reference"]
    lines.append("| STL reference | " + " | ".join(f"{reference[t][n]:.4g}" for t, n in columns) + " | 0 | | | |")
    for row in summary["rows"]:
        cells = [f"{row['metrics'][t][n][0]:.4g} ± {row['metrics'][t][n][1]:.2g}" for t, n in columns]
        dm, sd = row["delta_m"]
        time = f"{row['seconds_per_step']:.3f}" if row["seconds_per_step"] else "n/a"
        ratio = f"{row['time_vs_equal']:.2f}" if row["time_vs_equal"] else "n/a"
        passes = f"{row['backward_passes']}" + (" + 1 forward" if row["extra_forward"] else "")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {dm:+.2f} ± {sd:.2f} | {time} | {ratio} | {passes} |")
    return "\n".join(lines) + "\n"
