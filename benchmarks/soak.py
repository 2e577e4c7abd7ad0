"""Soak test of exact resume: random hard kills (SIGKILL) of `scenemtl train`, restarts with --resume.

    python benchmarks/soak.py [--kills 50] [--seed 0] [--steps 60] [--checkpoint-every 2]
                              [--startup-kills 0.3] [--window S] [--keep] [--out soak.md]

A tiny HPS model (``configs/synthetic/hps.yaml`` on 32×32 synthetic scenes, batch 4, CPU,
a checkpoint every ``--checkpoint-every`` steps) is first trained without interruption into
its own run folder: the reference. Then the soak run: ``scenemtl train`` is started as a
subprocess in its own process group, left to run a random time drawn by
``random.Random(--seed)``, and its process group is sent SIGKILL.
It is restarted with ``--resume`` once a complete checkpoint (``checkpoints/step_N/`` with a
``model.safetensors``) exists; before that ``--resume`` is tried first and the restart falls
back to no flag when the CLI answers "no checkpoint to resume". After ``--kills`` kills the
last run is left to finish. The final weights of both runs
(``checkpoints/step_<steps>/model.safetensors``) are compared tensor by tensor with
``torch.equal``.

The start-up of the command (imports, data, model, restore: about 5 s on two cores) is far
longer than a step of the tiny model (a few hundredths of a second) and varies more than a step
from launch to launch, so a delay counted from the launch alone would land almost every kill in
the start-up. The delays are therefore drawn in two kinds: a fraction ``--startup-kills`` of the
kills come uniform between ``--min-delay`` and the reference's start-up time after the launch;
the others come uniform between 0 and ``--window`` seconds after the process logged its first
training step (``metrics.jsonl`` is polled), the window defaulting to (steps / kills + 2 ×
checkpoint interval) step times of the reference, so that the kills spread over the schedule
and some land inside checkpoint writes. Each kill is classified from ``metrics.jsonl`` (logged
every step; the records of the killed process are those stamped after its start) and from the
hidden folders left in ``checkpoints/`` right after it (a ``.step_N.tmp`` the killed process
created: the kill hit a checkpoint write).

Printed: kills delivered, kills that hit a running training (after its first step and before
its last; the others hit the start-up or restore), each restart (resumed from which step, or
started fresh), total time, the leftovers seen in ``checkpoints/``, and
``final weights equal: True/False``. Exit 0 only when the weights are equal and no launch
failed on its own (a non-zero exit other than the SIGKILL, or a traceback on stderr).
Run folders go to a temporary folder, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/synthetic/hps.yaml"
MODEL_FILE = "model.safetensors"
NO_CHECKPOINT = "no checkpoint to resume"

# a model and data small enough that a step takes a fraction of a second on one CPU core
TINY = [
    "reference=null",
    "data.options.height=32",
    "data.options.width=32",
    "data.options.num_train=64",
    "data.options.num_val=8",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "data.num_workers=0",
    "model.options.head_channels=16",
    "train.device=cpu",
    "train.eval_every=0",
    "train.log_every=1",  # one metrics.jsonl record per step: tells where each kill landed
    "train.log_images=false",
]


@dataclass
class Launch:
    """One `scenemtl train` process."""

    resume: bool
    delay: float | None  # seconds before SIGKILL; None: left to finish
    after_first_step: bool = False  # delay counted from the first training step this process logs
    started: float = 0.0  # time.time() at launch
    seconds: float = 0.0
    returncode: int | None = None
    killed: bool = False
    stderr: str = ""
    log: Path | None = None


@dataclass
class Life:
    """One restart of the soak run: a launch, and its fallback launch without --resume if there was one."""

    index: int
    delay: float | None
    after_first_step: bool
    checkpoint_before: int | None  # latest complete checkpoint step when it started
    launches: list[Launch] = field(default_factory=list)
    phase: str = ""  # where the kill landed, or how the process ended
    kind: str = ""  # where the kill landed, without the step
    steps_logged: tuple[int, int] | None = None  # first and last training step this life logged
    leftovers: list[str] = field(default_factory=list)  # hidden entries of checkpoints/ after it ended
    mode: str = ""  # resumed from step_N / fresh


def checkpoint_steps(run: Path) -> list[int]:
    """Steps of the complete checkpoints (``step_N/model.safetensors``) of a run, oldest first."""
    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    steps = []
    for path in folder.glob("step_*"):
        if path.is_dir() and (path / MODEL_FILE).is_file() and path.name[5:].isdigit():
            steps.append(int(path.name[5:]))
    return sorted(steps)


def hidden_entries(run: Path) -> list[str]:
    """Entries of ``checkpoints/`` whose name starts with a dot (``.step_N.tmp``, ``.step_N.old``…)."""
    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def records_since(run: Path, since: float) -> list[dict]:
    """The metrics.jsonl records stamped at or after ``since`` (the records of one process)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if record.get("time", 0) >= since - 0.01:
            records.append(record)
    return records


def command(run: Path, name: str, steps: int, every: int, extra: list[str], resume: bool) -> list[str]:
    sets = [*TINY, f"train.steps={steps}", f"train.checkpoint_every={every}", f"out_dir={run.parent}/{{name}}", f"name={name}", *extra]
    line = [sys.executable, "-m", "scenemtl.cli", "train", str(CONFIG), "--quiet"]
    for item in sets:
        line += ["--set", item]
    return line + (["--resume"] if resume else [])


def launch(line: list[str], run: Path, delay: float | None, after_first_step: bool, log: Path) -> Launch:
    """Run ``line`` in its own process group; SIGKILL the group ``delay`` seconds after its launch (or after
    the first training step it logs in ``run``/metrics.jsonl) unless it ended before."""
    result = Launch(resume="--resume" in line, delay=delay, after_first_step=after_first_step, log=log)
    with open(log, "w") as out, open(log.with_suffix(".err"), "w+") as err:
        result.started = time.time()
        start = time.perf_counter()
        process = subprocess.Popen(line, cwd=REPO, stdout=out, stderr=err, start_new_session=True)
        deadline = None if delay is None or after_first_step else start + delay
        while process.poll() is None:
            now = time.perf_counter()
            if deadline is None and delay is not None and any(r.get("kind") == "train" for r in records_since(run, result.started)):
                deadline = now + delay
            if deadline is not None and now >= deadline:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                    result.killed = True
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.005 if deadline is not None else 0.02)
        process.wait()
        result.seconds = time.perf_counter() - start
        result.returncode = process.returncode
        err.seek(0)
        result.stderr = err.read()
    if result.killed and result.returncode != -signal.SIGKILL:
        result.killed = False  # it ended on its own between the timeout and the signal
    return result


def refused(item: Launch) -> bool:
    """A --resume launch that answered 'no checkpoint to resume' (and may have been killed while exiting)."""
    return item.resume and NO_CHECKPOINT in item.stderr and (item.killed or item.returncode == 2)


def failed(item: Launch) -> bool:
    """Ended on its own with an error (not the kill, not the expected 'no checkpoint to resume')."""
    if item.killed:
        return "Traceback (most recent call last)" in item.stderr
    if refused(item):
        return False
    return item.returncode != 0 or "Traceback (most recent call last)" in item.stderr


def compare(reference: Path, soak: Path) -> tuple[bool, str]:
    """Tensor-by-tensor torch.equal of two model.safetensors files."""
    import torch
    from safetensors.torch import load_file

    if not reference.is_file() or not soak.is_file():
        missing = [str(p) for p in (reference, soak) if not p.is_file()]
        return False, f"missing: {', '.join(missing)}"
    a, b = load_file(str(reference)), load_file(str(soak))
    if set(a) != set(b):
        return False, f"different keys: {sorted(set(a) ^ set(b))[:6]}"
    different = [k for k in sorted(a) if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    if different:
        worst = max(
            ((a[k].double() - b[k].double()).abs().max().item() for k in different if a[k].shape == b[k].shape), default=float("nan")
        )
        return False, f"{len(different)} of {len(a)} tensors differ (e.g. {different[0]}; max |Δ| {worst:.3g})"
    return True, f"{len(a)} tensors, all equal"


def classify(life: Life, run: Path, steps: int) -> None:
    """Where the kill landed (or how the launch ended), from metrics.jsonl and the checkpoints/ folder."""
    last = life.launches[-1]
    train = [r["step"] for r in records_since(run, last.started) if r.get("kind") == "train"]
    life.steps_logged = (min(train), max(train)) if train else None
    life.leftovers = hidden_entries(run)
    if not last.killed:
        if last.returncode == 0:
            life.phase = "finished"
        elif refused(last):
            life.phase = "--resume refused"
        else:
            life.phase = f"exited {last.returncode}"
        return
    if life.checkpoint_before is not None and life.checkpoint_before >= steps:
        life.kind = "after training (restart of a finished run)"
    elif not train:
        life.kind = "start-up / restore (no step finished)"
    elif max(train) >= steps:
        life.kind = "after the last step (final save / evaluation)"
    else:
        life.kind = "training"
    # a .tmp folder this process created (an older one may be left by an earlier kill until a restart removes it)
    if any(name.endswith(".tmp") and (run / "checkpoints" / name).stat().st_mtime >= last.started - 0.01 for name in life.leftovers):
        life.kind += ", inside a checkpoint write"
    life.phase = f"killed: {life.kind}" + (f" (after step {max(train)})" if life.kind.startswith("training") else "")


def when(life: Life) -> str:
    if life.delay is None:
        return "none"
    return f"{life.delay:.2f} s after its first step" if life.after_first_step else f"{life.delay:.2f} s after launch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs to deliver before the last run may finish")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (not of the training)")
    parser.add_argument("--steps", type=int, default=60, help="training steps of both runs")
    parser.add_argument("--checkpoint-every", type=int, default=2, help="train.checkpoint_every")
    parser.add_argument("--startup-kills", type=float, default=0.3, help="fraction of the kills timed from the launch, within the start-up")
    parser.add_argument("--min-delay", type=float, default=0.5, help="shortest time from a launch to its kill (s)")
    parser.add_argument(
        "--window", type=float, default=None, help="longest time from a first step to its kill (s); default: calibrated on the reference"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another override of both runs")
    parser.add_argument("--keep", action="store_true", help="keep the run folders and the launch logs")
    parser.add_argument("--out", default=None, help="also write the summary to this Markdown file")
    args = parser.parse_args()
    if args.steps % args.checkpoint_every:
        print(f"note: --steps {args.steps} is not a multiple of --checkpoint-every {args.checkpoint_every}", flush=True)

    root = Path(tempfile.mkdtemp(prefix="scenemtl_soak_"))
    logs = root / "logs"
    logs.mkdir()
    reference, soak = root / "reference", root / "soak"
    begin = time.perf_counter()

    # 1. the uninterrupted reference
    line = command(reference, "reference", args.steps, args.checkpoint_every, args.set, resume=False)
    print(f"reference: {' '.join(line[1:])}", flush=True)
    ref = launch(line, reference, None, False, logs / "reference.log")
    if ref.returncode != 0:
        print(f"reference run failed (exit {ref.returncode}; logs in {logs}):\n{ref.stderr}", file=sys.stderr)
        sys.exit(1)
    records = records_since(reference, ref.started)
    first = next(r["time"] for r in records if r.get("kind") == "train")
    last = max(r["time"] for r in records if r.get("kind") == "train")
    step_s = (last - first) / max(args.steps - 1, 1)
    startup_s = first - ref.started - step_s
    window = args.window
    if window is None:
        window = (args.steps / max(args.kills, 1) + 2 * args.checkpoint_every) * step_s
    startup_max = max(startup_s, args.min_delay)
    schedule = (
        f"{args.startup_kills:.0%} of the kills uniform in [{args.min_delay:.1f}, {startup_max:.1f}] s after "
        f"the launch, the others uniform in [0, {window:.2f}] s after the first step"
    )
    print(f"reference: {ref.seconds:.1f} s (start-up {startup_s:.1f} s, {step_s:.3f} s per step with checkpoints); {schedule}", flush=True)

    # 2. the soak run
    rng = random.Random(args.seed)
    lives: list[Life] = []
    kills = 0
    max_lives = 3 * args.kills + 10  # a guard, should a finished run keep outliving its delays
    soak_begin = time.perf_counter()
    while True:
        final = kills >= args.kills
        if len(lives) >= max_lives and not final:
            print(f"stopping the kills after {len(lives)} launches: the run kept finishing first", flush=True)
            final = True
        after_first_step = rng.random() >= args.startup_kills
        delay = rng.uniform(0.0, window) if after_first_step else rng.uniform(args.min_delay, startup_max)
        if final:
            delay = None
        existing = checkpoint_steps(soak)
        life = Life(index=len(lives), delay=delay, after_first_step=after_first_step, checkpoint_before=existing[-1] if existing else None)
        base = command(soak, "soak", args.steps, args.checkpoint_every, args.set, resume=True)
        item = launch(base, soak, delay, after_first_step, logs / f"life_{life.index:03d}_resume.log")
        life.launches.append(item)
        if refused(item):
            if existing:
                print(f"  life {life.index}: --resume refused although {soak}/checkpoints holds step {existing[-1]}", flush=True)
            item = launch(base[:-1], soak, delay, after_first_step, logs / f"life_{life.index:03d}_fresh.log")
            life.launches.append(item)
            life.mode = "fresh (fallback: 'no checkpoint to resume')"
        elif existing:
            life.mode = f"resumed from step {existing[-1]}"
        classify(life, soak, args.steps)
        if not life.mode and (life.steps_logged or not item.killed):
            life.mode = "fresh (--resume accepted with no checkpoint)"
        elif not life.mode:
            life.mode = "no checkpoint yet; --resume launch killed before it trained or refused"
        if item.killed:
            kills += 1
        if life.steps_logged and existing and life.steps_logged[0] != existing[-1] + 1:
            print(f"  life {life.index}: resumed from step {existing[-1]} but first logged step {life.steps_logged[0]}", flush=True)
        lives.append(life)
        logged = f", steps {life.steps_logged[0]}–{life.steps_logged[1]}" if life.steps_logged else ""
        left = f"; leftovers {life.leftovers}" if life.leftovers else ""
        print(
            f"  life {life.index:3d}: {life.mode}; kill {when(life)}; {life.phase}{logged}; "
            f"checkpoints {checkpoint_steps(soak)[-2:]}{left}",
            flush=True,
        )
        if any(failed(x) for x in life.launches):
            print(f"  life {life.index}: failed on its own:\n{item.stderr}", flush=True)
            break
        if final:
            break
    soak_seconds = time.perf_counter() - soak_begin

    # 3. compare and report
    name = f"step_{args.steps:07d}"
    equal, detail = compare(reference / "checkpoints" / name / MODEL_FILE, soak / "checkpoints" / name / MODEL_FILE)
    launches = [x for life in lives for x in life.launches]
    failures = [x for x in launches if failed(x)]
    hits = [life for life in lives if life.launches[-1].killed and life.kind.startswith("training")]
    startup = [life for life in lives if life.launches[-1].killed and life.kind.startswith("start-up")]
    phases: dict[str, int] = {}
    for life in lives:
        if life.launches[-1].killed:
            phases[life.kind] = phases.get(life.kind, 0) + 1
    refusals = sum(1 for x in launches if refused(x))
    leftovers = sorted({n for life in lives for n in life.leftovers if life.launches[-1].killed})
    notes: dict[str, int] = {}  # stderr lines with numbers as N and the run folder as <run>: how many launches
    for x in launches:
        for key in {
            re.sub(r"\d+", "N", ln.strip().replace(str(soak), "<run>").replace(str(root), "<tmp>")) for ln in x.stderr.splitlines()
        }:
            if key:
                notes[key] = notes.get(key, 0) + 1
    total = time.perf_counter() - begin

    rows = ["| life | started | kill timer | ended | steps logged | checkpoints/ dot entries after |", "|---|---|---|---|---|---|"]
    for life in lives:
        logged = f"{life.steps_logged[0]}–{life.steps_logged[1]}" if life.steps_logged else "–"
        rows.append(f"| {life.index} | {life.mode} | {when(life)} | {life.phase} | {logged} | {', '.join(life.leftovers) or '–'} |")
    lines = [
        f"kills delivered: {kills}",
        f"kills that hit a running training: {len(hits)} (after its first step, before its last; "
        f"{len(startup)} more in the start-up or restore, {kills - len(hits) - len(startup)} after the last step)",
        "kills by phase: " + ", ".join(f"{k}: {v}" for k, v in sorted(phases.items())),
        f"restarts: {len(lives) - 1} (resumed: {sum(x.mode.startswith('resumed') for x in lives[1:])}, "
        f"fresh: {sum(x.mode.startswith('fresh') for x in lives[1:])}, killed before either showed: "
        f"{sum(x.mode.startswith('no checkpoint') for x in lives[1:])}); launches: {len(launches)}, "
        f"of which --resume refused ('{NO_CHECKPOINT}'): {refusals}",
        f"launches that failed on their own: {len(failures)}"
        + "".join(f"\n  exit {x.returncode}: {x.stderr.strip().splitlines()[-1] if x.stderr.strip() else ''}" for x in failures),
        f"checkpoints/ dot entries seen after kills: {', '.join(leftovers) or 'none'}; "
        f"at the end: {', '.join(hidden_entries(soak)) or 'none'}",
        f"stderr lines of the launches (numbers as N): {len(notes)} kinds"
        + "".join(f"\n  {count}× {line}" for line, count in sorted(notes.items())[:12]),
        f"time: total {total:.0f} s (reference {ref.seconds:.0f} s, soak {soak_seconds:.0f} s)",
        f"final weights ({name}): {detail}",
        f"final weights equal: {equal}",
    ]
    summary = "\n".join(lines)
    print("\n" + "\n".join(rows) + "\n\n" + summary, flush=True)
    if args.out:
        Path(args.out).write_text(
            f"# Soak: exact resume under random SIGKILLs\n\n`python benchmarks/soak.py {' '.join(sys.argv[1:])}` "
            f"on {os.cpu_count()} CPUs; {schedule}.\n\n" + "\n".join(rows) + "\n\n```\n" + summary + "\n```\n"
        )
    if args.keep:
        print(f"run folders and launch logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if equal and not failures else 1)


if __name__ == "__main__":
    main()
