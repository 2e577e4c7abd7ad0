"""The Python API: list, create, load, save and run models in a few lines (timm's and smp's style).

    import scenemtl
    model = scenemtl.create_model("hps", tasks=["semseg", "depth"], dataset="nyud", backbone="resnet50")
    scenemtl.save_pretrained(model, "my-model")
    predictor = scenemtl.Predictor(scenemtl.load_model("my-model"))
    outputs = predictor(image)          # task → prediction in the data contract's units

Every model this module returns carries ``model.meta`` (a ``CheckpointMeta``: its config, class
names, palettes and input normalisation), which is what saving, loading and prediction need;
``tasks_of(model)`` rebuilds its ``Task`` objects from it. ``load_model`` is the loading path of
the CLI's ``eval``, ``predict`` and ``convert`` (``engine/loading.py``).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from scenemtl import __version__
from scenemtl.config import Config, validate
from scenemtl.data.base import IMAGENET_MEAN, IMAGENET_STD
from scenemtl.engine.builder import tasks_from_meta
from scenemtl.engine.checkpoint import MODEL_FILE, CheckpointMeta, write_model_file
from scenemtl.errors import CheckpointError, ConfigError, did_you_mean
from scenemtl.models import MODELS, MultiTaskModel, build_model
from scenemtl.tasks import TASKS, Task

#: files of a model folder besides the weights
CONFIG_FILE, CLASSES_FILE, RESULTS_FILE, CARD_FILE = "config.yaml", "classes.json", "results.json", "README.md"


def list_models(pattern: str = "*") -> list[str]:
    """Registered architectures whose name matches the shell-style ``pattern`` (``"mt*"``)."""
    return [name for name in MODELS.names() if fnmatch.fnmatchcase(name, pattern)]


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered datasets matching ``pattern``."""
    from scenemtl.data import DATASETS

    return [name for name in DATASETS.names() if fnmatch.fnmatchcase(name, pattern)]


def list_balancers(pattern: str = "*") -> list[str]:
    """Registered loss-weighting and gradient balancers matching ``pattern``."""
    from scenemtl.balancing import BALANCERS

    return [name for name in BALANCERS.names() if fnmatch.fnmatchcase(name, pattern)]


def list_tasks(pattern: str = "*") -> list[str]:
    """Registered tasks matching ``pattern``."""
    return [name for name in TASKS.names() if fnmatch.fnmatchcase(name, pattern)]


def create_model(
    arch: str = "hps",
    tasks: Sequence[str] | Mapping[str, Any] = ("semseg", "depth", "normals"),
    *,
    dataset: str | None = None,
    backbone: str | Mapping[str, Any] = "resnet50",
    pretrained: bool | str = False,
    **options: Any,
) -> MultiTaskModel:
    """A new model of architecture ``arch`` for ``tasks``, in training mode, with ``model.meta`` set.

    ``tasks``: names (class names from ``dataset``), or a mapping from name to a class count
    (``{"semseg": 21}``), a list of class names, the task's options (``{"pos_weight": 0.95,
    "classes": 2}``; ``type`` for a task named other than its type: ``{"dtd": {"type":
    "classification", "classes": 47}}``) or None. ``dataset``: a registered dataset whose class names and input
    normalisation the model takes (ImageNet's normalisation without one). ``backbone``: a timm
    name or ``model.backbone``'s fields; ``pretrained``: True for timm's ImageNet weights
    (downloaded, or from the Hugging Face cache), or a local weights file. ``options``: the
    architecture's options (``model.options``; checked and typed by the architecture).
    """
    if arch not in MODELS:
        raise ConfigError(f"unknown architecture '{arch}'.{did_you_mean(arch, MODELS.names())}")
    specs = {name: None for name in tasks} if not isinstance(tasks, Mapping) else dict(tasks)
    if not specs:
        raise ConfigError("create_model: give at least one task, e.g. tasks=['semseg', 'depth']")
    info = None
    if dataset is not None:
        from scenemtl.data import DATASETS

        info = DATASETS.get(dataset).info
    task_options: dict[str, dict[str, Any]] = {}
    class_names: dict[str, list[str]] = {}
    for name, spec in specs.items():
        spec = dict(spec) if isinstance(spec, Mapping) else {"classes": spec}
        kind = spec.get("type") or (info.task_types.get(name) if info is not None else None) or name
        if kind not in TASKS:
            raise ConfigError(
                f"unknown task '{name}'.{did_you_mean(name, TASKS.names())} (a task of another name gives its type: "
                f"{{'{name}': {{'type': 'classification', 'classes': 10}}}})"
            )
        classes = spec.pop("classes", None)
        task_options[name] = spec
        if isinstance(classes, int) and not isinstance(classes, bool):
            class_names[name] = [f"class_{i}" for i in range(classes)]
        elif isinstance(classes, Sequence) and not isinstance(classes, str):
            class_names[name] = [str(c) for c in classes]
        elif classes is not None:
            raise ConfigError(f"tasks['{name}']: give a class count or a list of class names, got {classes!r}")
        elif info is not None and name in info.class_names:
            class_names[name] = list(info.class_names[name])
    backbone_fields = {"name": backbone} if isinstance(backbone, str) else dict(backbone)
    if pretrained:
        backbone_fields["weights"] = "timm" if pretrained is True else str(pretrained)
    raw: dict[str, Any] = {
        "name": arch,
        "tasks": {name: dict(opts) for name, opts in task_options.items()},
        "model": {"arch": arch, "backbone": backbone_fields, "options": dict(options)},
    }
    if dataset is not None:
        raw["data"] = {"name": dataset}
    config = validate(raw, "(create_model)")
    # the dataset's colours only for the classes it named (other class lists get the default palette)
    palettes = {
        k: [list(map(int, c)) for c in v]
        for k, v in (info.palettes.items() if info else ())
        if k in class_names and info is not None and class_names[k] == list(info.class_names.get(k, []))
    }
    meta = CheckpointMeta(
        config=config,
        step=0,
        class_names=class_names,
        palettes=palettes,
        mean=tuple(info.mean) if info else IMAGENET_MEAN,
        std=tuple(info.std) if info else IMAGENET_STD,
        version=__version__,
    )
    model = build_model(config.model, tasks_from_meta(meta))
    model.meta = meta
    return model


def tasks_of(model: torch.nn.Module) -> dict[str, Task]:
    """The ``Task`` objects of a model from ``create_model`` or ``load_model`` (losses, metrics, colours)."""
    return tasks_from_meta(meta_of(model))


def meta_of(model: torch.nn.Module) -> CheckpointMeta:
    """``model.meta``, or an error saying how to make a model that has it."""
    meta = getattr(model, "meta", None)
    if not isinstance(meta, CheckpointMeta):
        raise ConfigError(
            f"{type(model).__name__} has no scenemtl metadata (model.meta): make it with scenemtl.create_model or scenemtl.load_model"
        )
    return meta


def load_model(source: str | Path, config: Config | str | Path | None = None, device: torch.device | str = "cpu") -> MultiTaskModel:
    """A model in evaluation mode on ``device``, with ``model.meta``, from any checkpoint scenemtl reads.

    ``source``: a run folder, a ``step_N``/``best`` folder, a ``model.safetensors``, a model folder
    (``save_pretrained``), a Hugging Face Hub id (``user/name``, downloaded to the hub cache), or
    an official ``.pth.tar`` (with ``config``: its model's config, a file or a ``Config``).
    """
    from scenemtl.config import load_config
    from scenemtl.engine.loading import load_model as load

    path = Path(source)
    if not path.exists() and _looks_like_hub_id(str(source)):
        path = _download(str(source))
    if isinstance(config, (str, Path)):
        config = load_config(config)
    loaded = load(path, config, device)
    loaded.model.meta = loaded.meta
    return loaded.model


def save_pretrained(
    model: torch.nn.Module, folder: str | Path, results: Mapping[str, Any] | str | Path | None = None, origin: str | None = None
) -> Path:
    """Write a shareable model folder: ``model.safetensors`` (weights and metadata), ``config.yaml``,
    ``classes.json``, ``results.json`` (``results``: a ``scenemtl eval`` report or its file, when given)
    and a generated ``README.md`` model card. Returns the folder; ``load_model(folder)`` reads it back."""
    meta = meta_of(model)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_model_file(out / MODEL_FILE, model, meta)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(meta.config.to_dict(), sort_keys=False))
    (out / CLASSES_FILE).write_text(
        json.dumps({"class_names": meta.class_names, "palettes": meta.palettes, "mean": list(meta.mean), "std": list(meta.std)}, indent=2)
    )
    report = _read_results(results) if results is not None else None
    if report is not None:
        (out / RESULTS_FILE).write_text(json.dumps(report, indent=2))
    (out / CARD_FILE).write_text(model_card(meta, report, origin))
    return out


def from_pretrained(source: str | Path, device: torch.device | str = "cpu") -> MultiTaskModel:
    """``load_model`` for model folders and Hub ids (the Hugging Face spelling)."""
    return load_model(source, device=device)


def push_to_hub(model: torch.nn.Module, repo_id: str, results: Mapping[str, Any] | str | Path | None = None, private: bool = False) -> str:
    """Upload the model folder of ``model`` to the Hugging Face Hub as ``repo_id``; returns its URL."""
    import tempfile

    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ConfigError("push_to_hub needs huggingface_hub: pip install 'scenemtl[hub]'") from None
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, Path(tmp) / "model", results)
        try:
            api = HfApi()
            api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(folder))
        except Exception as error:  # no network, no token, no permission: one line
            raise CheckpointError(
                f"could not push to the Hugging Face Hub repository '{repo_id}': "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            ) from None
    return f"https://huggingface.co/{repo_id}"


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(f"'{repo_id}' is not a local path; loading a Hub id needs huggingface_hub: pip install 'scenemtl[hub]'") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[MODEL_FILE, CONFIG_FILE, CLASSES_FILE, RESULTS_FILE, CARD_FILE]))
    except Exception as error:  # offline, unknown repository, gated: one line
        raise CheckpointError(
            f"'{repo_id}' is neither a local path nor a downloadable Hugging Face Hub model "
            f"({type(error).__name__}); check the path, or the id and your network"
        ) from None


def _read_results(results: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(results, Mapping):
        return dict(results)
    path = Path(results)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"results {path}: not a readable scenemtl results JSON ({error})") from None
    if not isinstance(data, dict) or "metrics" not in data:
        raise ConfigError(f"results {path}: expected a scenemtl eval report with 'metrics'")
    return data


def model_card(meta: CheckpointMeta, results: Mapping[str, Any] | None = None, origin: str | None = None) -> str:
    """A model card (the Hugging Face README format): architecture, paper, data, metrics, licence, use."""
    config = meta.config
    arch = config.model.arch
    factory = MODELS.get(arch)
    summary = (factory.__doc__ or arch).strip().splitlines()[0]
    trained = meta.step > 0
    lines = [
        "---",
        "library_name: scenemtl",
        "tags: [multi-task-learning, dense-prediction, scenemtl]",
        f"datasets: [{config.data.name}]" if trained else "datasets: []",
        "---",
        "",
        f"# {config.name}: {arch} on {config.model.backbone.name}",
        "",
        f"**Architecture**: `{arch}`: {summary}",
        f"**Backbone**: `{config.model.backbone.name}`",
        f"**Tasks**: {', '.join(f'`{t}`' for t in config.tasks)}",
        f"**Data**: {f'`{config.data.name}` ({meta.step} training steps)' if trained else 'untrained (made by create_model)'}",
        f"**Input normalisation**: mean {list(meta.mean)}, std {list(meta.std)} (RGB in [0, 1])",
        *([f"**Weights**: {origin}"] if origin else []),
        f"**Written by**: scenemtl {meta.version}",
        "",
    ]
    if meta.class_names:
        lines += (
            ["## Classes", ""]
            + [f"- `{t}` ({len(names)}): {', '.join(names[:20])}{' …' if len(names) > 20 else ''}" for t, names in meta.class_names.items()]
            + [""]
        )
    if results is not None and isinstance(results.get("metrics"), Mapping):
        protocol = results.get("protocol") or config.eval.protocol or "the dataset's default"
        lines += [
            "## Evaluation",
            "",
            f"Split `{results.get('split', config.data.val_split)}`, protocol {protocol}.",
            "",
            "| task | metric | value |",
            "|---|---|---|",
        ]
        for task, values in results["metrics"].items():
            for name, value in values.items() if isinstance(values, Mapping) else ():
                if isinstance(value, (int, float)):
                    lines.append(f"| {task} | {name} | {value:.4g} |")
        lines.append("")
    lines += [
        "## Licence",
        "",
        "The scenemtl code is Apache-2.0. Weights converted from a paper's official release keep that release's "
        "licence (InvPT, TaskPrompter, DiffusionMTL and MTI-Net: CC BY-NC 4.0, non-commercial); weights trained "
        "with scenemtl inherit the terms of their training data.",
        "",
        "## Intended use",
        "",
        "Research on multi-task dense scene understanding: per-pixel predictions for the tasks above on images "
        "like those of the training data. Not validated for safety-critical use; predictions degrade on images "
        "unlike the training data.",
        "",
        "## Use",
        "",
        "```python",
        "import scenemtl",
        'model = scenemtl.load_model("<this folder or hub id>")',
        "outputs = scenemtl.Predictor(model)(image)  # H×W×3 uint8 → task → prediction",
        "```",
        "",
    ]
    return "\n".join(lines)
