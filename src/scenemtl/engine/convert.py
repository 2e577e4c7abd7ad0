"""``scenemtl convert``: an official checkpoint of a seed method as a scenemtl checkpoint.

The official InvPT and TaskPrompter releases (``*.pth.tar``) are read weights-only, renamed
through the architecture's key map (``models/official.py``; every key mapped or listed as unused
by the official forward) into the model the config builds, and written as ``step_N/
model.safetensors`` with the config, tasks, class names and normalisation in its metadata, so
``scenemtl eval`` and ``predict`` take it like any checkpoint of ours (both also take the
``.pth.tar`` directly, with the config).
"""

from __future__ import annotations

from pathlib import Path

from scenemtl import __version__
from scenemtl.config import Config
from scenemtl.engine.checkpoint import CheckpointMeta, save_checkpoint


def model_from_official(config: Config, path: str | Path):
    """The config's model with an official checkpoint's weights, its tasks and a metadata record."""
    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.models import build_model
    from scenemtl.models.official import load_official_into

    info = dataset_info(config)
    tasks = build_tasks(config, info)
    model_config = config.model.model_copy(deep=True)
    model_config.backbone.weights = None  # the checkpoint carries every weight
    model = build_model(model_config, tasks)
    extra = load_official_into(model, path)
    meta = CheckpointMeta(
        config=config, step=int(extra.get("iter_count", 0) or 0), class_names=dict(info.class_names),
        palettes={k: [list(map(int, c)) for c in v] for k, v in info.palettes.items()},
        mean=tuple(info.mean), std=tuple(info.std), version=f"official ({__version__} key map)",
    )
    return model, tasks, meta, extra


def convert_official(config: Config, path: str | Path, out: str | Path) -> tuple[Path, list[str], int]:
    """Write ``out/step_N/model.safetensors`` from an official checkpoint; the dropped (unused) keys and step."""
    model, _, meta, extra = model_from_official(config, path)
    folder = save_checkpoint(Path(out), meta.step, model, config, meta.class_names, meta.palettes, meta.mean,
                             meta.std, trainer_state=None)
    return folder, list(extra["dropped"]), meta.step
