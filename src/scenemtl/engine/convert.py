"""``scenemtl convert``: an official checkpoint of a seed method as a scenemtl checkpoint.

The official InvPT and TaskPrompter releases (``*.pth.tar``) and DenseMTL's (``*.pkl``) are read weights-only, renamed
through the architecture's key map (``models/official.py``; every key mapped or listed as unused
by the official forward) into the model the config builds, and written as a model folder
(``scenemtl.save_pretrained``: ``model.safetensors`` with the config, tasks, class names and
normalisation in its metadata, ``config.yaml``, ``classes.json`` and a model card naming the
official file and its licence), so ``scenemtl eval``, ``predict`` and ``scenemtl.load_model`` take
it like any checkpoint of ours (they also take the ``.pth.tar`` directly, with the config).
"""

from __future__ import annotations

from pathlib import Path

from scenemtl.config import Config
from scenemtl.engine.loading import load_model
from scenemtl.errors import CheckpointError


def convert_official(config: Config, path: str | Path, out: str | Path) -> tuple[Path, list[str], int]:
    """Write the model folder ``out`` from an official checkpoint; returns it, the dropped (unused) keys and the step."""
    from scenemtl.api import save_pretrained

    loaded = load_model(path, config)
    if not loaded.official:
        raise CheckpointError(f"{loaded.file} is already a scenemtl checkpoint: `scenemtl eval`/`predict` take it as it is")
    loaded.model.meta = loaded.meta
    origin = (
        f"converted from the official release file `{Path(path).name}` (its licence applies to these weights; "
        "InvPT, TaskPrompter, DiffusionMTL and MTI-Net release theirs under CC BY-NC 4.0, non-commercial; DenseMTL's "
        "repository is Apache-2.0 but its decoder and encoder code comes from monodepth2, whose licence is non-commercial)"
    )
    folder = save_pretrained(loaded.model, out, origin=origin)
    return folder, loaded.dropped, loaded.meta.step
