"""Monocular 3D detection (``det3d``) on synthetic scenes, on a CPU: does the FCOS3D head learn?

    python benchmarks/det3d_synthetic.py [--steps 1500] [--height 64 --width 96] [--batch 16] [--lr 3e-3]
                                         [--num-train 4096] [--num-val 160] [--arms 'det3d;det3d+semseg']
                                         [--backbone test_resnet] [--out-indices 1,2,3,4] [--seed 0]
                                         [--runs runs/det3d_synthetic] [--out benchmarks/results/det3d_synthetic_cpu.md]

The synthetic renderer's spheres, boxes and cylinders are objects with a known 3D pose (``tasks: [det3d]``:
a ``Boxes3D`` per image, the classes sphere, box, cylinder; ``meta['sensor']`` the camera for the official
evaluator). Every arm trains hard parameter sharing (``hps``) on a small random-init timm backbone with the
TaskPrompter FCOS3D head (``tasks.det3d``: FPN + towers of ``--head-width`` channels, plain convs instead of
DCNv2) on the same scenes with the same optimiser, steps, batch and seed; the arms differ only in their tasks:

- ``det3d``: 3D detection alone;
- ``det3d + semseg``: plus semantic segmentation (its own FPN head), both weight 1;
- ``det3d, dir_offset 90°``: det3d alone with the direction bins of all three angles meeting at ±90°
  (mmdet3d's ``dir_offset``) instead of TaskPrompter's 0°, where the roll and pitch of upright objects and
  the synthetic labels' yaws (``SyntheticScenes.boxes``: in [−90°, 90°)) lie.

Each arm is scored on the val split by cityscapesScripts' evaluator as ``Det3DTask.metric`` drives it
(TaskPrompter's settings: modal 2D matching at IoU > 0.7, TP metrics to 100 m in 5 m bins, per class the
working point of best P·R): mDS, mAP and per class DS, AP and the TP metrics, in percent; once with the
untrained weights (step 0, the floor) and once after training. Also on the val split:

- the ground truth fed as predictions (score 1), which must score mDS = mAP = 100 (the evaluator setup:
  sensor, JSON conversion, pixel conventions, distance bins);
- the trained arms at a 2D IoU threshold of 0.5 (the same predictions; how much the 0.7 threshold costs on
  small images), and each class's true positives per 5 m distance bin at the working point (DS is 0 for a
  class whose true positives all fall in one bin);
- where the FCOS assignment puts the objects: the number of positive points per FPN level under the
  regress ranges (``detection.targets.regress_ranges``, 96 · 2^k px, set for Cityscapes' 2048-px
  images), and the objects that get no positive point at all (their projected centre is outside the image).

Each arm is trained in this process, one after another; a finished arm (its ``bench.json``) is reused, so the
command continues after an interruption. The markdown report goes to ``--out`` (a discussion written by hand
under its last heading is kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("sphere", "box", "cylinder")
MARKER = "## What this shows and does not show"


def base_config(args: argparse.Namespace, run_dir: Path, tasks: dict) -> dict:
    """What every arm shares, with the arm's tasks."""
    out_indices = None if args.out_indices == "all" else [int(i) for i in args.out_indices.split(",")]
    return {
        "name": run_dir.name,
        "seed": args.seed,
        "out_dir": str(run_dir),
        "tasks": tasks,
        "data": {
            "name": "synthetic",
            "options": {"height": args.height, "width": args.width, "num_train": args.num_train, "num_val": args.num_val},
            "batch_size": args.batch,
            "eval_batch_size": 32,
            "augment": {"scale": None, "flip": True, "photometric": False},
        },
        "model": {"arch": "hps", "backbone": {"name": args.backbone, "weights": None, "out_indices": out_indices}},
        "train": {
            "steps": args.steps,
            "optimizer": "adamw",
            "lr": args.lr,
            "weight_decay": 1e-4,
            "warmup_steps": 20,
            "grad_clip": 10.0,
            "log_every": 25,
            "eval_every": 0,
            "checkpoint_every": 0,
            "keep_checkpoints": 1,
            "log_images": False,
            "device": "cpu",
        },
    }


def arms(args: argparse.Namespace) -> dict[str, dict]:
    """The tasks of each arm."""
    det3d = {"weight": 1.0, "width": args.head_width, "dcn": False}
    return {
        "det3d": {"det3d": det3d},
        "det3d+semseg": {"det3d": det3d, "semseg": {"weight": 1.0}},
        "det3d, dir_offset 90°": {"det3d": {**det3d, "dir_offset": math.pi / 2}},
    }


def score(trainer) -> dict:
    """The val-split metrics of the model as it is now, plus the detection diagnostics (IoU 0.5, class-agnostic,
    true positives and BEV centre error per distance bin)."""
    from scenemtl.detection.evaluation import evaluate_jsons
    from scenemtl.engine.evaluate import evaluate

    start = time.perf_counter()
    metrics = evaluate(trainer.model, trainer.tasks, trainer.val_loader, trainer.device, progress=False)
    values: dict = {name: metric.compute() for name, metric in metrics.items()}
    det = metrics["det3d"]
    images = {name: (entry[0], entry[1]) for name, entry in det.images.items()}
    strict = det.results()
    loose = evaluate_jsons(images, det.labels, det.matching, min_iou=0.5)
    values["det3d_iou05"] = headline(loose, det.labels)
    # class-agnostic: every prediction and every ground-truth object relabelled as one class
    one = det.labels[0]
    relabelled = {
        name: tuple({**data, "objects": [{**obj, "label": one} for obj in data["objects"]]} for data in pair)
        for name, pair in images.items()
    }
    values["det3d_agnostic"] = headline(evaluate_jsons(relabelled, (one,), det.matching), (one,))
    values["tp_per_bin"] = tp_per_bin(strict, det.labels)
    values["tp_per_bin_iou05"] = tp_per_bin(loose, det.labels)
    values["centre_error_m"] = centre_error(strict, det.labels)
    values["working_confidence"] = {label: float(strict["working_confidence"][label]) for label in det.labels}
    values["gt_per_class"] = {label: int(strict["GT_stats"].get(label, 0)) for label in det.labels}
    values["predicted_per_image"] = sum(len(entry[0]["objects"]) for entry in det.images.values()) / max(len(det.images), 1)
    values["eval_s"] = time.perf_counter() - start
    return values


def headline(results: dict, labels) -> dict[str, float]:
    """mDS, mAP and per class AP and DS (percent) of an evaluator ``results`` dict."""
    values = {"mds": float(results["mDetection_Score"]) * 100, "map": float(results["mAP"]) * 100}
    for label in labels:
        if results["GT_stats"].get(label):
            values[f"ap/{label}"] = float(results["AP"][label]["auc"]) * 100
            values[f"ds/{label}"] = float(results["Detection_Score"][label]) * 100
    return values


def tp_per_bin(results: dict, labels) -> dict[str, dict[str, int]]:
    """Per class, the true positives at the working point in each 5 m BEV-distance bin."""
    return {label: {str(k): int(v) for k, v in results["Center_Dist"][label].get("items", {}).items()} for label in labels}


def centre_error(results: dict, labels) -> dict[str, float | None]:
    """Per class, the mean BEV centre error (metres) of the true positives at the working point: the evaluator
    keeps 1 − error / 100 m per bin."""
    errors: dict[str, float | None] = {}
    for label in labels:
        means, counts = results["Center_Dist"][label].get("data", {}), results["Center_Dist"][label].get("items", {})
        total = sum(counts.values())
        errors[label] = sum((1 - means[k]) * 100 * counts[k] for k in means) / total if total else None
    return errors


def ground_truth_as_predictions(trainer) -> dict[str, float]:
    """The val split's targets fed to the task's metric as predictions with score 1 (must give 100)."""
    from scenemtl.engine.evaluate import move

    task = trainer.tasks["det3d"]
    metric = task.metric()
    for batch in trainer.val_loader:
        batch = move(batch, trainer.device)
        targets = batch["det3d"]
        predictions = [dataclasses.replace(boxes, scores=torch.ones(len(boxes))) for boxes in targets]
        ids = [str(meta["id"]) for meta in batch["meta"]]
        metric.update(predictions, targets, ids=ids, meta=list(batch["meta"]))
    return metric.compute()


@torch.no_grad()
def angle_errors(trainer) -> dict:
    """The rotation errors of the trained model's true positives on the val split, per regressed angle.

    Each ground-truth box is matched to the best-scoring unmatched prediction of its class with modal 2D IoU
    > 0.7 (greedy by score, as the evaluator matches). The angles are the head's targets
    (``detection.targets.rotation_to_angles``: ZXY Euler angles of the S-style rotation; 0 = roll about the
    optical axis, 1 = pitch, 2 = yaw), each decoded as ``limit_period(angle − offset, 0, π) + offset + π·direction bin``
    (``offset``: the task's ``dir_offset``, 0 by default)."""
    import math

    from torchvision.ops import box_iou  # type: ignore[import-untyped]

    from scenemtl.detection.targets import direction_bins, rotation_to_angles
    from scenemtl.engine.evaluate import move

    task, model = trainer.tasks["det3d"], trainer.model
    was = model.training
    model.eval()
    truths, pairs = [], []
    for batch in trainer.val_loader:
        batch = move(batch, trainer.device)
        predictions = task.predict(model(batch["image"]).final["det3d"], **task.prediction_inputs(batch))
        for predicted, target in zip(predictions, batch["det3d"]):
            if not len(target):
                continue
            angles = rotation_to_angles(target.rotations)
            truths.append(angles)
            if not len(predicted):
                continue
            assert predicted.scores is not None
            iou = box_iou(target.boxes2d, predicted.boxes2d)
            iou[target.labels[:, None] != predicted.labels[None]] = 0
            for j in predicted.scores.argsort(descending=True).tolist():
                i = int(iou[:, j].argmax())
                if iou[i, j] > 0.7:
                    iou[i] = 0
                    pairs.append((int(target.labels[i]), angles[i], rotation_to_angles(predicted.rotations[j : j + 1])[0]))
    model.train(was)
    truth = torch.cat(truths)

    def median(values: torch.Tensor) -> float | None:
        return float(values.median()) if values.numel() else None

    def wrapped(delta: torch.Tensor, period: float) -> torch.Tensor:
        return torch.rad2deg((torch.remainder(delta + period / 2, period) - period / 2).abs())

    per_angle = []
    for k in range(3):
        delta = torch.tensor([float(p[k] - t[k]) for _, t, p in pairs])
        error = wrapped(delta, 2 * math.pi)
        per_angle.append(
            {
                "truth_deg": [float(torch.rad2deg(truth[:, k]).min()), float(torch.rad2deg(truth[:, k]).max())],
                "truth_bin1": float(direction_bins(truth[:, k], task.dir_offset[k]).float().mean()) * 100,
                "flipped": float((error > 90).float().mean()) * 100 if error.numel() else None,
                "median_rest_deg": median(error[error <= 90]),
            }
        )
    yaw = {}
    for c, label in enumerate(CLASSES):
        delta = torch.tensor([float(p[2] - t[2]) for lab, t, p in pairs if lab == c])
        yaw[label] = {
            "matched": len(delta),
            "median_deg": median(wrapped(delta, 2 * math.pi)),
            "median_mod_pi_deg": median(wrapped(delta, math.pi)),
            "median_mod_half_pi_deg": median(wrapped(delta, math.pi / 2)),
        }
    return {"matched": len(pairs), "angles": per_angle, "yaw": yaw}


@torch.no_grad()
def assignment_census(trainer) -> dict:
    """Where the FCOS assignment puts the val objects: positive points per level, objects without any."""
    from scenemtl.detection.targets import assign, encode, level_points
    from scenemtl.engine.evaluate import move

    task, model = trainer.tasks["det3d"], trainer.model
    was = model.training
    model.eval()
    positives: list[int] = []
    covered: list[int] = []
    objects = without = outside = 0
    strides: list[float] = []
    for batch in trainer.val_loader:
        batch = move(batch, trainer.device)
        output = model(batch["image"]).final["det3d"]
        strides = list(output.strides)
        points = level_points([x.shape[-2:] for x in output.cls_scores], output.strides)
        level = torch.cat([torch.full((len(p),), i) for i, p in enumerate(points)])
        stride = torch.cat([torch.full((len(p),), float(s)) for p, s in zip(points, output.strides)])
        xy = torch.cat(points)
        positives = positives or [0] * len(points)
        covered = covered or [0] * len(points)
        height, width = output.image_size
        for boxes in batch["det3d"]:
            if not len(boxes):
                continue
            codes = encode(boxes)
            targets = assign(codes, points, output.strides, task.num_classes)
            positive = targets.labels < task.num_classes
            # the object each positive point regresses: its centre is the point minus the offset target
            centres = xy[positive] - targets.boxes[positive, :2] * stride[positive, None]
            owner = (centres[:, None, :] - codes.centers2d[None]).norm(dim=-1).argmin(dim=1)
            pairs = set(zip(owner.tolist(), level[positive].tolist()))
            for k in range(len(points)):
                positives[k] += int((level[positive] == k).sum())
                covered[k] += len({obj for obj, lv in pairs if lv == k})
            objects += len(boxes)
            without += len(boxes) - len({obj for obj, _ in pairs})
            cx, cy = codes.centers2d.unbind(-1)
            outside += int(((cx < 0) | (cx > width) | (cy < 0) | (cy > height)).sum())
    model.train(was)
    return {
        "strides": strides,
        "positives_per_level": positives,
        "objects_per_level": covered,
        "objects": objects,
        "objects_without_positive": without,
        "centre_outside_image": outside,
    }


def run_arm(args: argparse.Namespace, index: int, label: str, tasks: dict) -> dict:
    """Train and score one arm, or reuse its earlier result."""
    from scenemtl.config import validate
    from scenemtl.engine.trainer import Trainer

    run_dir = REPO / args.runs / f"arm{index}"
    saved = run_dir / "bench.json"
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "runs", "arms")}
    if saved.exists():
        record = json.loads(saved.read_text())
        if record["label"] == label and record["settings"] == settings:
            print(f"[{label}] reused {saved.relative_to(REPO)}", flush=True)
            return record
        raise SystemExit(f"{run_dir} holds a run of other settings; remove it or pass another --runs")
    config = validate(base_config(args, run_dir, tasks), "(det3d_synthetic)")
    start = time.perf_counter()
    trainer = Trainer(config, progress=False)
    built = time.perf_counter()
    load_before = os.getloadavg()
    floor = score(trainer)
    print(f"[{label}] step 0: {summary(floor)} ({floor['eval_s']:.0f} s)", flush=True)
    fitted = time.perf_counter()
    report = trainer.fit()
    trained_s = time.perf_counter() - fitted
    trained = score(trainer)
    trained["angles"] = angle_errors(trainer)
    record = {
        "label": label,
        "tasks": tasks,
        "settings": settings,
        "floor": floor,
        "trained": trained,
        "report": report["metrics"],
        "setup_s": built - start,
        "fit_s": trained_s,
        "wall_s": time.perf_counter() - start,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "train_losses": train_losses(trainer.run_dir),
        "census": assignment_census(trainer) if index == 0 else None,
        "sanity": ground_truth_as_predictions(trainer) if index == 0 else None,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "head_parameters": sum(p.numel() for p in trainer.model.heads["det3d"].parameters()),
    }
    saved.write_text(json.dumps(record, indent=1))
    print(f"[{label}] step {args.steps}: {summary(trained)} (fit {trained_s:.0f} s, {trained_s / args.steps:.2f} s/step)", flush=True)
    return record


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, det3d loss) of the logged training windows."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["step"], r["loss"]["det3d"]) for r in rows if r.get("kind") == "train" and "det3d" in r.get("loss", {})]


def summary(values: dict) -> str:
    """One line of the main numbers."""
    det = values["det3d"]
    loose = values["det3d_iou05"]
    line = f"mDS {det['mds']:.2f} mAP {det['map']:.2f} (IoU 0.5: mDS {loose['mds']:.2f} mAP {loose['map']:.2f})"
    if "semseg" in values:
        line += f" mIoU {values['semseg']['miou']:.2f}"
    return line + f", {values['predicted_per_image']:.1f} predictions/image"


def fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def det_cells(det: dict) -> list[str]:
    """mDS, mAP, AP per class, DS per class."""
    return [fmt(det["mds"]), fmt(det["map"])] + [fmt(det.get(f"ap/{c}")) for c in CLASSES] + [fmt(det.get(f"ds/{c}")) for c in CLASSES]


def det_header(first: str, extra: str = "") -> list[str]:
    columns = ["mDS", "mAP", *(f"AP {c}" for c in CLASSES), *(f"DS {c}" for c in CLASSES)]
    more = [x for x in extra.split("|") if x]
    return [f"| {first} | " + " | ".join(columns + more) + " |", "|---" * (1 + len(columns) + len(more)) + "|"]


def main_table(records: list[dict], sanity: dict) -> list[str]:
    """mDS, mAP, per-class AP and DS: ground truth, then each arm at step 0 and trained."""
    lines = det_header("model", "semseg mIoU|wall s")
    lines.append("| *ground truth as predictions (sanity)* | " + " | ".join(det_cells(sanity) + ["", ""]) + " |")
    for record in records:
        steps = record["settings"]["steps"]
        rows = (
            ("step 0 (untrained)", record["floor"], None),
            (f"{steps} steps", record["trained"], record["wall_s"]),
        )
        for when, values, wall in rows:
            miou = values.get("semseg", {}).get("miou")
            lines.append(f"| {record['label']}, {when} | " + " | ".join(det_cells(values["det3d"]) + [fmt(miou), fmt(wall, 0)]) + " |")
    return lines


def bins_text(bins: dict[str, int]) -> str:
    return ", ".join(f"{k}–{int(k) + 5} m: {v}" for k, v in bins.items()) or "none"


def tp_table(records: list[dict]) -> list[str]:
    """The TP metrics of the trained arms (per class, percent), the working point and the true positives per 5 m bin."""
    names = ("center_dist", "size_similarity", "os_yaw", "os_pitch_roll")
    extra = ["mean BEV centre error m", "working point (score)", "TPs per 5 m bin", "TPs per bin, IoU 0.5", "GT objects"]
    lines = ["| arm | class | " + " | ".join([*names, *extra]) + " |", "|---" * (2 + len(names) + len(extra)) + "|"]
    for record in records:
        trained = record["trained"]
        for c in CLASSES:
            cells = [fmt(trained["det3d"].get(f"{n}/{c}")) for n in names]
            cells += [
                fmt(trained["centre_error_m"].get(c)),
                fmt(trained["working_confidence"].get(c)),
                bins_text(trained["tp_per_bin"].get(c, {})),
                bins_text(trained["tp_per_bin_iou05"].get(c, {})),
                str(trained["gt_per_class"].get(c, "")),
            ]
            lines.append(f"| {record['label']} | {c} | " + " | ".join(cells) + " |")
    return lines


def variants_table(records: list[dict]) -> list[str]:
    """The trained arms' predictions under the official setting, at a 2D IoU threshold of 0.5, and class-agnostic."""
    lines = det_header("arm, scoring", "class-agnostic AP|class-agnostic DS")
    for record in records:
        trained = record["trained"]
        agnostic = trained["det3d_agnostic"]
        tail = [fmt(agnostic["map"]), fmt(agnostic["mds"])]
        lines.append(f"| {record['label']}, IoU 0.7 (official) | " + " | ".join(det_cells(trained["det3d"]) + tail) + " |")
        lines.append(f"| {record['label']}, IoU 0.5 | " + " | ".join(det_cells(trained["det3d_iou05"]) + ["", ""]) + " |")
    return lines


def angle_table(records: list[dict]) -> list[str]:
    """Per regressed angle: the range of the truth, its share in direction bin 1, the flipped share and the rest's error."""
    names = ("roll (about the optical axis)", "pitch", "yaw")
    lines = [
        "| arm | angle | truth range ° | truth in bin 1 at the arm's dir_offset % | TPs off by > 90° % | median error of the rest ° |",
        "|---|---|---|---|---|---|",
    ]
    for record in records:
        angles = record["trained"]["angles"]
        for name, angle in zip(names, angles["angles"]):
            low, high = angle["truth_deg"]
            cells = [f"{low:.1f} to {high:.1f}", fmt(angle["truth_bin1"], 0), fmt(angle["flipped"], 0), fmt(angle["median_rest_deg"], 1)]
            lines.append(f"| {record['label']} ({angles['matched']} TPs) | {name} | " + " | ".join(cells) + " |")
    lines += ["", "| arm | class | TPs | median yaw error ° | mod 180° | mod 90° |", "|---|---|---|---|---|---|"]
    for record in records:
        for label, yaw in record["trained"]["angles"]["yaw"].items():
            cells = [
                str(yaw["matched"]),
                fmt(yaw["median_deg"], 1),
                fmt(yaw["median_mod_pi_deg"], 1),
                fmt(yaw["median_mod_half_pi_deg"], 1),
            ]
            lines.append(f"| {record['label']} | {label} | " + " | ".join(cells) + " |")
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
    import timm

    first = records[0]
    census, sanity = first["census"], first["sanity"]
    runs_total = sum(r["wall_s"] for r in records)
    lines = [
        "# Monocular 3D detection (det3d) on synthetic scenes, on a CPU",
        "",
        f"`python benchmarks/det3d_synthetic.py {' '.join(sys.argv[1:])}`",
        "",
        f"{machine()}; Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
        f"numpy {np.__version__}. Every arm: hard parameter sharing (`hps`), timm `{args.backbone}` backbone from random "
        f"weights (feature levels `out_indices` {args.out_indices}; the head's FPN levels at strides {census['strides']} px), "
        f"the FCOS3D head of `tasks.det3d` at width {args.head_width} without DCN "
        f"({first['head_parameters'] / 1e6:.2f} M parameters of the arm's {first['parameters'] / 1e6:.2f} M), "
        f"{args.steps} AdamW steps (lr {args.lr:g}, weight decay 1e-4, poly schedule, 20 warm-up steps, gradient "
        f"clipping at 10) of batch {args.batch} at {args.height}×{args.width} with horizontal flips, "
        f"{args.num_train} training scenes, {args.num_val} val scenes, seed {args.seed}. Scored on the val split by "
        "cityscapesScripts' `Box3dEvaluator` as `Det3DTask.metric` runs it (modal 2D matching at IoU > 0.7, TP "
        "metrics to 100 m in 5 m bins, per class the working point of best P·R), in percent. Wall time per arm "
        f"includes building the run (rendering its scenes), the step-0 and final evaluations; the arms took "
        f"{runs_total / 60:.1f} min in all, one after another (this invocation: {total / 60:.1f} min, reused arms "
        "counting 0).",
        "",
        "## Detection score",
        "",
        *main_table(records, sanity),
        "",
        "Training speed: "
        + "; ".join(f"{r['label']} {r['fit_s'] / r['settings']['steps']:.2f} s/step ({r['fit_s']:.0f} s for the fit)" for r in records)
        + ". Evaluation of the val split: "
        + "; ".join(f"{r['label']} {r['floor']['eval_s']:.0f} s at step 0, {r['trained']['eval_s']:.0f} s trained" for r in records)
        + ". Load average (1 min) before and after each arm: "
        + "; ".join(f"{r['label']} {r['load_before'][0]:.2f} → {r['load_after'][0]:.2f}" for r in records)
        + f" ({os.cpu_count()} CPUs). Predictions per val image (after NMS, score > 0.05): "
        + "; ".join(
            f"{r['label']} {r['floor']['predicted_per_image']:.1f} at step 0, {r['trained']['predicted_per_image']:.1f} trained"
            for r in records
        )
        + ".",
        "",
        "det3d training loss (mean of each 25-step window): "
        + "; ".join(
            f"{r['label']}: "
            + ", ".join(f"{loss:.2f}" for _, loss in r["train_losses"][:: max(1, len(r["train_losses"]) // 6)])
            + f" … {r['train_losses'][-1][1]:.2f}"
            for r in records
            if r["train_losses"]
        )
        + ".",
        "",
        "## TP metrics of the trained arms, and true positives per distance bin",
        "",
        "The TP metrics are the evaluator's AUCs over the 5 m distance bins (BEV distance from the camera) of the "
        "true positives at each class's working point; with true positives in one bin only the AUC is 0 and so is DS.",
        "",
        *tp_table(records),
        "",
        "## The same predictions scored at a 2D IoU threshold of 0.5, and class-agnostic",
        "",
        "Class-agnostic: every prediction and ground-truth object relabelled as one class before the evaluator (IoU 0.7); "
        "the gap to mAP is what confusing the three shapes costs.",
        "",
        *variants_table(records),
        "",
        "## Rotation of the true positives",
        "",
        "The trained arms' true positives on the val split (each ground-truth box matched to the best-scoring "
        "prediction of its class with modal 2D IoU > 0.7), per angle the head regresses (ZXY Euler angles of the "
        "S-style box rotation, `detection.targets.rotation_to_angles`), decoded as the angle modulo 180° plus 180° "
        "times the predicted direction bin. Errors of a guess uniform over the circle: median 90°, modulo 180° 45°, "
        "modulo 90° 22.5°.",
        "",
        *angle_table(records),
        "",
        "## Where the FCOS assignment puts the objects",
        "",
        f"On the {census['objects']} val objects, with the head's FPN levels at strides {census['strides']} px and "
        "the regress ranges of `detection.targets.regress_ranges` (96 · 2^k px: a point goes to the level whose range "
        "holds its largest distance to the 2D box's sides): positive points per level "
        f"{census['positives_per_level']}, objects with a positive point on each level {census['objects_per_level']}; "
        f"{census['objects_without_positive']} objects get no positive point at all "
        "(centre sampling takes the points within 1.5 strides of the projected 3D centre, and a point regresses the "
        f"nearest such centre; {census['centre_outside_image']} objects have that centre outside the image).",
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
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps of every arm")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    parser.add_argument("--num-train", type=int, default=4096, help="training scenes")
    parser.add_argument("--num-val", type=int, default=160)
    parser.add_argument("--backbone", default="test_resnet", help="timm backbone (random init)")
    parser.add_argument("--out-indices", default="1,2,3,4", help="backbone levels the head reads ('all': strides 2 to 32)")
    parser.add_argument("--head-width", type=int, default=64, help="tasks.det3d.width (a multiple of 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--arms", default="det3d;det3d+semseg;det3d, dir_offset 90°", help="';'-separated: det3d; det3d+semseg; det3d, dir_offset 90°"
    )
    parser.add_argument("--runs", default="runs/det3d_synthetic", help="where the runs go (reused when finished)")
    parser.add_argument("--out", default="benchmarks/results/det3d_synthetic_cpu.md")
    args = parser.parse_args()

    chosen = [(i, label, tasks) for i, (label, tasks) in enumerate(arms(args).items()) if label in args.arms.split(";")]
    if not chosen or chosen[0][0] != 0:
        raise SystemExit("--arms must include det3d (its run also gives the sanity check and the assignment census)")
    start = time.perf_counter()
    records = [run_arm(args, index, label, tasks) for index, label, tasks in chosen]
    write_report(args, records, time.perf_counter() - start)


if __name__ == "__main__":
    main()
