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

from scenemtl.config import Config
from scenemtl.engine.checkpoint import save_checkpoint
from scenemtl.engine.loading import load_model
from scenemtl.errors import CheckpointError


def convert_official(config: Config, path: str | Path, out: str | Path) -> tuple[Path, list[str], int]:
    """Write ``out/step_N/model.safetensors`` from an official checkpoint; the dropped (unused) keys and step."""
    loaded = load_model(path, config)
    if not loaded.official:
        raise CheckpointError(f"{loaded.file} is already a scenemtl checkpoint: `scenemtl eval`/`predict` take it as it is")
    meta = loaded.meta
    folder = save_checkpoint(
        Path(out), meta.step, loaded.model, config, meta.class_names, meta.palettes, meta.mean, meta.std, trainer_state=None
    )
    return folder, loaded.dropped, meta.step
