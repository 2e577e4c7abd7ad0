"""The ``scenemtl`` command.

Over 400 lines because it is one table of subcommands: each a thin handler (parse, call the engine,
print one line) and its argparse definition; the work is in ``engine/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scenemtl import __version__
from scenemtl.errors import ScenemtlError


def _train(args: argparse.Namespace) -> int:
    from scenemtl.config import load_config
    from scenemtl.engine.distributed import cleanup
    from scenemtl.engine.evaluate import format_table
    from scenemtl.engine.trainer import Trainer

    config = load_config(args.config, args.set)
    trainer = None
    try:
        trainer = Trainer(config, resume=args.resume, progress=not args.quiet)
        report = trainer.fit()
    finally:
        if trainer is not None:
            trainer.close()
        cleanup()
    if report is None:  # stopped by a signal or the time limit (the trainer said how to resume)
        return EXIT_STOPPED
    if not trainer.dist.is_main:
        return 0
    print(format_table(report))
    print(f"run folder: {config.run_dir}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from scenemtl.config import load_config
    from scenemtl.engine.distributed import cleanup
    from scenemtl.engine.evaluate import format_table
    from scenemtl.engine.trainer import Trainer
    from scenemtl.errors import ConfigError

    config = load_config(args.config, args.set)
    trainer = None
    try:
        trainer = Trainer(config, resume=args.resume, progress=not args.quiet)
        if trainer.extension is None or trainer.extension.name != "search":
            raise ConfigError(
                f"scenemtl search: architecture '{config.model.arch}' searches nothing (its model adds no "
                "search to training); use a search-space architecture, or `scenemtl train`"
            )
        report = trainer.fit()
    finally:
        if trainer is not None:
            trainer.close()
        cleanup()
    if report is None:  # stopped by a signal or the time limit: resumable
        return EXIT_STOPPED
    if not trainer.dist.is_main:
        return 0
    trainer.extension.write_artifacts(trainer.run_dir, trainer.step, Path(args.out) if args.out else None)
    print(format_table(report))
    for line in trainer.extension.summary(trainer.run_dir):
        print(line)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from scenemtl.config import load_config
    from scenemtl.engine import builder
    from scenemtl.engine.checkpoint import resolve, results_folder
    from scenemtl.engine.distributed import cleanup, setup
    from scenemtl.engine.evaluate import evaluate, load_reference, results_report
    from scenemtl.engine.export import PanelWriter, PngWriter, parse_save_png
    from scenemtl.engine.loading import load_model
    from scenemtl.engine.storage import check_writable
    from scenemtl.errors import ConfigError

    config = load_config(args.config, args.set)
    file = resolve(args.checkpoint)
    # results go beside the checkpoint (its run folder's eval/), checked writable before any work
    out_folder = Path(args.out).parent if args.out else results_folder(file)
    check_writable(out_folder, "results")
    folders = parse_save_png(args.save_png)
    for folder in folders.values():
        check_writable(folder, "PNG predictions")
    if args.save_panels:
        check_writable(args.save_panels, "panels")
    # the checkpoint must be for this config's model and data (checked before the data is read)
    loaded = load_model(file, config)
    info = builder.dataset_info(config)
    tasks = builder.build_tasks(config, info)  # the config's tasks: its evaluation protocol and metric options
    unknown = [t for t in folders if t not in tasks]
    if unknown:
        raise ConfigError(f"--save-png: no task {unknown} in this model; its tasks are {list(tasks)}")
    dataset = builder.build_dataset(config, args.split or config.data.val_split, evaluation=True)
    info = builder.eval_info(config)  # the images' normalisation: those of the dataset evaluated
    try:
        place = setup(config.train.device)  # under torchrun: each process scores its share, metrics are summed
        transform = builder.build_transform(config, tasks, info, train=False)
        loader = builder.eval_loader(config, dataset, transform, place.rank, place.world_size)
        progress = not args.quiet and place.is_main
        writers = {task: PngWriter(folder, task, getattr(tasks[task], "quantize", "truncate")) for task, folder in folders.items()}
        challenge = None
        if args.decathlon_results:
            from scenemtl.data.decathlon import ChallengeResults, VisualDecathlon

            if not isinstance(dataset, VisualDecathlon) or place.world_size > 1:
                raise ConfigError("--decathlon-results writes the predictions of the decathlon dataset, from one process")
            challenge = ChallengeResults(dataset)
            writers.update({task: challenge.writer(task) for task in tasks})
        panels = None
        if args.save_panels and place.is_main:
            panels = PanelWriter(args.save_panels, tasks, info.mean, info.std, limit=args.panels or None)
        if config.eval.recalibrate_bn:
            from scenemtl.engine.recalibrate import evaluate_recalibrated

            if panels:
                raise ConfigError("--save-panels are not written with eval.recalibrate_bn; evaluate without them")
            train_set = builder.build_dataset(config, config.data.train_split, evaluation=False)
            train_transform = builder.build_transform(config, tasks, builder.dataset_info(config), train=True)
            metrics = evaluate_recalibrated(
                loaded.model.to(place.device),
                tasks,
                train_set,
                train_transform,
                dataset,
                transform,
                place.device,
                config.data.batch_size,
                config.data.eval_batch_size,
                config.train.precision,
                progress,
                place.rank,
                place.world_size,
                config.seed,
                writers,
            )
        else:
            metrics = evaluate(
                loaded.model.to(place.device), tasks, loader, place.device, config.train.precision, progress, writers, panels
            )
    finally:
        cleanup()
    step = loaded.meta.step
    report = results_report(
        metrics,
        load_reference(config.reference),
        {"name": config.name, "checkpoint": str(file), "step": step, "split": dataset.split, "processes": place.world_size},
    )
    if not place.is_main:
        return 0
    out = Path(args.out) if args.out else out_folder / f"results_{dataset.split}_step{step}.json"
    _write_report(report, out)
    if challenge is not None:
        print(f"challenge submission: {challenge.save(args.decathlon_results)} ({len(challenge.rows)} images)")
    print(f"results: {out} (and {out.with_suffix('.md').name})")
    return 0


def _write_report(report: dict, out: Path) -> None:
    """The report as JSON at ``out`` and Markdown beside it; the main metrics printed as a table."""
    from scenemtl.engine.evaluate import format_report, format_table, write_json

    write_json(out, report)
    out.with_suffix(".md").write_text(format_report(report))
    print(format_table(report))


def _score(args: argparse.Namespace) -> int:
    from scenemtl.engine.score import score

    from scenemtl.engine.storage import check_writable

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    check_writable(Path(args.out).parent if args.out else Path(args.pred), "results")
    report = score(args.dataset, args.root, args.split, args.pred, tasks, args.protocol, progress=not args.quiet)
    out = Path(args.out) if args.out else Path(args.pred) / f"results_{args.split}.json"
    _write_report(report, out)
    if report["extra_predictions"]:
        extra = report["extra_predictions"]
        print(
            f"{len(extra)} file(s) for ids outside split '{args.split}' were not scored: {', '.join(extra[:10])}"
            + (" …" if len(extra) > 10 else "")
        )
    print(f"results: {out} (and {out.with_suffix('.md').name})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from scenemtl.engine.predict import predict_files

    config = None
    if args.config:
        from scenemtl.config import load_config

        config = load_config(args.config, args.set)
    from scenemtl.engine.storage import check_writable

    check_writable(args.out, "predictions")
    from scenemtl.engine.video import is_video, predict_video
    from scenemtl.errors import ConfigError

    if args.sensor and (args.video or any(is_video(item) for item in args.inputs)):
        raise ConfigError("--sensor is for image inputs (3D boxes written as Cityscapes-3D JSON); drop it for a video")
    if args.video or any(is_video(item) for item in args.inputs):
        if len(args.inputs) != 1:
            raise ConfigError("predict takes one video (a file, or a frame folder with --video) at a time")
        source = Path(args.inputs[0])
        out = Path(args.out) / f"{source.stem or 'video'}.mp4"
        raw = Path(args.out) / "raw" if args.raw else None
        report = predict_video(
            args.checkpoint, source, out, device=args.device, progress=not args.quiet, config=config, fps=args.fps, raw=raw
        )
        print(f"wrote {report.frames} frames at {float(report.fps):g} fps to {report.path}" + (f" and raw outputs to {raw}" if raw else ""))
        return 0
    panels = predict_files(
        args.checkpoint,
        args.inputs,
        args.out,
        device=args.device,
        progress=not args.quiet,
        config=config,
        batch_size=args.batch_size,
        sensor=args.sensor,
    )
    print(f"wrote predictions for {len(panels)} image(s) to {args.out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from scenemtl.config import load_config
    from scenemtl.engine.convert import convert_official

    config = load_config(args.config, args.set)
    from scenemtl.engine.storage import check_writable

    check_writable(args.out, "converted checkpoint")
    folder, dropped, step = convert_official(config, args.checkpoint, args.out)
    print(f"converted {args.checkpoint} (step {step}) for {config.model.arch}: {folder / 'model.safetensors'}")
    if dropped:
        print(
            f"left out {len(dropped)} official tensors the official forward never uses "
            f"(see the architecture's docstring): {', '.join(dropped[:4])}{', …' if len(dropped) > 4 else ''}"
        )
    print(f"evaluate it: scenemtl eval {args.config} --checkpoint {folder}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from scenemtl.api import load_model
    from scenemtl.engine.onnx_export import export_onnx

    model = load_model(args.checkpoint, args.config)
    out = args.out or str(Path(args.checkpoint).with_suffix("")) + ".onnx"
    report = export_onnx(model, out, size=tuple(args.size), check=not args.no_check)
    print("\n".join(report.lines()))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from scenemtl.engine.serve import serve

    config = None
    if args.config:
        from scenemtl.config import load_config

        config = load_config(args.config, args.set)
    serve(args.checkpoint, host=args.host, port=args.port, device=args.device, config=config)
    return 0


def foundations() -> list[str]:
    """One line per foundation-encoder family (``models/backbones/presets.py``): an example, its licence and weights."""
    from scenemtl.models.backbones.presets import EXAMPLES, foundation

    lines = []
    for name in EXAMPLES:
        found = foundation(name)
        if found is not None:
            lines.append(f"  {name:<44} {found.family:<22} licence {found.licence:<16} weights {found.source}")
    return lines


def _list(args: argparse.Namespace) -> int:
    from scenemtl.balancing import BALANCERS
    from scenemtl.data import DATASETS
    from scenemtl.tasks.protocols import PROTOCOLS
    from scenemtl.models import MODELS, SUGGESTED_BACKBONES
    from scenemtl.tasks import TASKS
    from scenemtl.extension import OBJECTIVES
    from scenemtl.settings import SETTINGS

    def describe(name: str) -> str:
        info = DATASETS.get(name).info
        tasks = ", ".join(f"{t} ({len(info.class_names[t])} classes)" if t in info.class_names else t for t in info.tasks)
        return f"{name:<18} {tasks}"

    sections = {
        "tasks": TASKS.names(),
        "models": MODELS.names(),
        "datasets": [describe(name) for name in DATASETS.names()],
        "balancers": BALANCERS.names(),
        "backbones": [*SUGGESTED_BACKBONES, "(any timm model that supports features_only)", "foundation encoders:", *foundations()],
        "protocols": [f"{name:<10} {protocol.description}" for name, protocol in PROTOCOLS.items()],
        "objectives": [f"{name:<22} {(OBJECTIVES.get(name).__doc__ or '').strip().splitlines()[0]}" for name in OBJECTIVES.names()],
        "settings": [
            line
            for setting in SETTINGS
            for line in (
                f"{setting.name:<20} {setting.description}",
                f"{'':<20}   select: {setting.keys}",
                *(f"{'':<20}   recipe: {recipe}" for recipe in setting.recipes),
            )
        ],
    }
    for name, items in sections.items():
        if args.what in (None, name):
            print(f"{name}:")
            for item in items:
                print(f"  {item}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from scenemtl.engine.benchmark import format_balancing_table, load_benchmark, run_balancing_benchmark
    from scenemtl.errors import ConfigError

    bench, base = load_benchmark(args.config, args.set)
    updates = {}
    if args.methods:
        wanted = args.methods.split(",")
        chosen = [m for m in bench.methods if (m if isinstance(m, str) else m.row) in wanted]
        missing = sorted(set(wanted) - {m if isinstance(m, str) else m.row for m in chosen})
        if missing:
            raise ConfigError(f"--methods: {missing} not in the benchmark's methods")
        updates["methods"] = chosen
    if args.seeds:
        updates["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.out:
        updates["out_dir"] = args.out
    bench = bench.model_copy(update=updates)
    summary = run_balancing_benchmark(bench, base, progress=not args.quiet)
    print(format_balancing_table(summary))
    out = bench.out_dir.replace("{name}", bench.name)
    print(f"results: {out}/results.md (and results.json)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from scenemtl.config import load_config
    from scenemtl.engine.info import model_info

    config = load_config(args.config, args.set)
    if args.meta:  # shapes only: any size of model, no memory, no weights
        import torch

        with torch.device("meta"):
            print(model_info(config, tuple(args.size) if args.size else None).format())
        return 0
    print(model_info(config, tuple(args.size) if args.size else None).format())
    return 0


def _dataset_options(pairs: list[str]) -> dict:
    import yaml

    from scenemtl.errors import ConfigError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option '{pair}': expected KEY=VALUE, e.g. --option classes=19")
        options[key] = yaml.safe_load(value)
    return options


def _data(args: argparse.Namespace) -> int:
    from scenemtl.data import DATASETS
    from scenemtl.registry import check_options

    cls = DATASETS.get(args.name)
    if args.action == "download":
        from scenemtl.data.download import download

        for path in download(args.name, args.root):
            print(f"ready: {path}")
        return 0
    from scenemtl.data.check import check_dataset

    options = _dataset_options(args.option)
    check_options(cls, options, "--option", ("root", "split", "tasks"), owner=args.name)
    splits = args.split.split(",") if args.split else None
    report = check_dataset(args.name, args.root, splits, options)
    print(report.format(limit=args.limit))
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> int:
    from scenemtl.engine.demo import run_demo

    return run_demo(Path(args.out), steps=args.steps, progress=not args.quiet, overrides=args.set)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="scenemtl", description="Multi-task dense scene understanding.")
    parser.add_argument("--version", action="version", version=f"scenemtl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("config", help="experiment YAML (may inherit with 'base:')")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4")
    train.add_argument(
        "--resume", action="store_true", help="continue from the run's latest readable checkpoint (a new run when there is none)"
    )
    common(train)
    train.set_defaults(func=_train)

    search = commands.add_parser(
        "search", help="architecture search: train a search-space architecture, write what it found (e.g. a genotype JSON)"
    )
    search.add_argument("config", help="experiment YAML whose model.arch is a search space")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=1000")
    search.add_argument("--out", default=None, help="also write the genotype here (default: <run>/genotype.json only)")
    search.add_argument(
        "--resume", action="store_true", help="continue from the run's latest readable checkpoint (a new run when there is none)"
    )
    common(search)
    search.set_defaults(func=_search)

    ev = commands.add_parser("eval", help="evaluate a checkpoint on the config's validation split")
    ev.add_argument("config")
    ev.add_argument(
        "--checkpoint", required=True, help="model.safetensors, a step_N folder, a run folder, or an official InvPT/TaskPrompter .pth.tar"
    )
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--split", default=None, help="split to evaluate (default: data.val_split)")
    ev.add_argument("--out", default=None, help="results JSON (default: <checkpoint's run>/eval/results_<split>_step<N>.json)")
    ev.add_argument(
        "--save-png",
        action="append",
        default=[],
        metavar="TASK=FOLDER",
        help="also save each prediction as <id>.png (e.g. edge=results/edge for SEISM's MATLAB benchmark)",
    )
    ev.add_argument(
        "--save-panels",
        default=None,
        metavar="FOLDER",
        help="save <id>.png panels: input and predictions with their keys, the ground truth below",
    )
    ev.add_argument("--panels", type=int, default=20, help="how many images get a panel (0: all; default 20)")
    ev.add_argument(
        "--decathlon-results",
        default=None,
        metavar="FILE",
        help="the Visual Decathlon: also write the predictions as the challenge's results.json (e.g. of the test split)",
    )
    common(ev)
    ev.set_defaults(func=_eval)

    sc = commands.add_parser("score", help="score saved predictions (<pred>/<task>/<id>.png …) without a model")
    sc.add_argument("dataset", help="dataset name (see `scenemtl list datasets`)")
    sc.add_argument("--root", required=True, help="the dataset folder (as data.root)")
    sc.add_argument("--split", default="val", help="split the predictions are for (default: val)")
    sc.add_argument("--pred", required=True, help="folder holding one sub-folder per task")
    sc.add_argument("--tasks", default=None, help="comma-separated tasks (default: every task folder in --pred)")
    sc.add_argument("--protocol", default=None, help="evaluation protocol (`scenemtl list protocols`)")
    sc.add_argument("--out", default=None, help="results JSON (default: <pred>/results_<split>.json), and its .md")
    common(sc)
    sc.set_defaults(func=_score)

    pr = commands.add_parser("predict", help="predict every task on images of any size")
    pr.add_argument("inputs", nargs="+", help="image files or folders")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--video", action="store_true", help="treat the input folder as the frames of one video")
    pr.add_argument("--fps", type=float, default=None, help="frame rate of a frame folder (default 25), or to override a video's")
    pr.add_argument("--raw", action="store_true", help="with a video: also save each frame's predictions as .npy")
    pr.add_argument("--batch-size", type=int, default=1, help="images predicted together (consecutive images of one size; default 1)")
    pr.add_argument(
        "--sensor",
        default=None,
        help="3D detection: a Cityscapes-3D gtBbox3d JSON (or its 'sensor' object) of the inputs' camera; boxes are decoded "
        "with it and written in its vehicle frame as Cityscapes-3D prediction JSON (default: the task's camera, camera frame)",
    )
    pr.add_argument(
        "--config", default=None, help="the model's config, needed only for an official .pth.tar checkpoint (InvPT, TaskPrompter)"
    )
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the --config")
    common(pr)
    pr.set_defaults(func=_predict)

    cv = commands.add_parser("convert", help="write an official InvPT/TaskPrompter .pth.tar as a scenemtl checkpoint")
    cv.add_argument("config", help="the config that builds the checkpoint's model (its configs/<dataset>/<arch>.yaml)")
    cv.add_argument("checkpoint", help="the official file, e.g. InvPT_pascal_vitLp16.pth.tar")
    cv.add_argument("--out", required=True, help="the model folder to write (model.safetensors, config.yaml, a model card)")
    cv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    cv.set_defaults(func=_convert)

    ex = commands.add_parser("export", help="write a checkpoint as ONNX and check it against PyTorch with onnxruntime")
    ex.add_argument("checkpoint", help="any checkpoint `scenemtl eval` reads (an official .pth.tar needs --config)")
    ex.add_argument("--format", choices=["onnx"], default="onnx")
    ex.add_argument("--out", default=None, help="the .onnx file (default: beside the checkpoint)")
    ex.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"), help="input size to export at")
    ex.add_argument("--config", default=None, help="the model's config, for an official .pth.tar")
    ex.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    ex.set_defaults(func=_export)

    sv = commands.add_parser("serve", help="a web demo (gradio): upload an image or a video, see every task")
    sv.add_argument("checkpoint", help="any checkpoint `scenemtl eval` reads (an official .pth.tar needs --config)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=7860)
    sv.add_argument("--device", default="auto")
    sv.add_argument("--config", default=None, help="the model's config, for an official .pth.tar")
    sv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the --config")
    sv.set_defaults(func=_serve)

    ls = commands.add_parser(
        "list", help="list tasks, models, backbones, datasets, balancers, evaluation protocols, objectives and training settings"
    )
    ls.add_argument(
        "what", nargs="?", choices=["tasks", "models", "backbones", "datasets", "balancers", "protocols", "objectives", "settings"]
    )
    ls.set_defaults(func=_list)

    bench = commands.add_parser("benchmark", help="compare methods over several seeds")
    kinds = bench.add_subparsers(dest="kind", required=True)
    balancing = kinds.add_parser("balancing", help="task-balancing methods × seeds on one experiment: mean ± std, Δm, cost")
    balancing.add_argument("--config", required=True, help="benchmark YAML (e.g. configs/synthetic/balancing.yaml)")
    balancing.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override every run's experiment, e.g. train.steps=100"
    )
    balancing.add_argument("--methods", default=None, help="comma-separated subset of the methods' rows")
    balancing.add_argument("--seeds", default=None, help="comma-separated seeds (default: the file's)")
    balancing.add_argument("--out", default=None, help="output folder (default: the file's out_dir)")
    common(balancing)
    balancing.set_defaults(func=_benchmark)

    info = commands.add_parser("info", help="parameters (shared and per task) and GFLOPs of a config's model")
    info.add_argument("config")
    info.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    info.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the config's crop)")
    info.add_argument("--meta", action="store_true", help="build and count on PyTorch's meta device (shapes only: no memory, any size)")
    info.set_defaults(func=_info)

    data = commands.add_parser("data", help="download a dataset, or check a copy of one")
    actions = data.add_subparsers(dest="action", required=True)
    dl = actions.add_parser("download", help="fetch, verify and extract a dataset's public archives (resumable)")
    dl.add_argument("name", help="dataset name (see `scenemtl list datasets`)")
    dl.add_argument("--root", required=True, help="folder to download and extract into")
    dl.set_defaults(func=_data)
    ck = actions.add_parser("check", help="read every sample of a copy and report what is missing or wrong")
    ck.add_argument("name", help="dataset name (see `scenemtl list datasets`)")
    ck.add_argument("--root", required=True, help="the dataset folder (as data.root)")
    ck.add_argument("--split", default=None, help="comma-separated splits (default: all)")
    ck.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a data.options entry")
    ck.add_argument("--limit", type=int, default=50, help="problems listed before the rest are counted")
    ck.set_defaults(func=_data)

    demo = commands.add_parser("demo", help="train STL and HPS on synthetic scenes and compare them")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--steps", type=int, default=None, help="training steps per model (default: the demo's)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the experiment")
    common(demo)
    demo.set_defaults(func=_demo)
    return parser


#: exit code of a training stopped before its end by SIGTERM/SIGINT or ``train.time_limit``, with a
#: checkpoint to continue from (``--resume``); sysexits' EX_TEMPFAIL, "try again later"
EXIT_STOPPED = 75


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit codes: 0 finished; 75 stopped and resumable; 2 a user error (one line, no
    traceback); 1 an operating-system failure (one line naming the path) or any other failure."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ScenemtlError as error:
        print(f"scenemtl: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except OSError as error:  # an output path the checks above did not cover
        from scenemtl.engine.storage import storage_error

        where = error.filename or "a file"
        print(f"scenemtl: error: {storage_error(error, where, 'use')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scenemtl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
