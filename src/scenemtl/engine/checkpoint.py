"""Checkpoints: safetensors weights with self-describing metadata, training state loaded weights-only.

A checkpoint is a folder ``step_NNNNNNN/`` holding ``model.safetensors`` (weights, and in its
metadata the scenemtl version, the full config, tasks, class names and normalisation: enough to
predict with nothing else) and ``trainer.pt`` (optimiser, scheduler, balancer, RNG states and
the position in the data, read back with ``torch.load(weights_only=True)`` so no pickled code
runs). The folder is written under a temporary name, flushed to disk, then renamed, so a crash
mid-write never damages an existing checkpoint.

With ``train.selection`` the best weights so far are kept in ``best/`` (same writer, weights
only, never pruned and never resumed from); its metadata holds the selection score and step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from scenemtl import __version__
from scenemtl.config import Config, validate
from scenemtl.fileio import read_torch
from scenemtl.engine.storage import file_mode, storage_error
from scenemtl.errors import CheckpointError, key_mismatch

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer.pt"
BEST_DIR = "best"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself."""

    config: Config
    step: int
    class_names: dict[str, list[str]]
    palettes: dict[str, list[list[int]]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    version: str
    # a ``best/`` checkpoint: metric, score, step and selection data that chose it
    selection: dict[str, Any] | None = None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    folder: Path,
    step: int,
    model: nn.Module,
    config: Config,
    info_class_names: dict[str, list[str]],
    info_palettes: dict[str, Any],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    trainer_state: dict[str, Any] | None,
    keep: int | None = None,
    name: str | None = None,
    selection: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/step_NNNNNNN`` (or ``folder/name``) atomically; keep only the newest ``keep`` step checkpoints.

    ``selection`` (for ``best/``) is stored in the metadata as JSON.
    """
    name = name or f"step_{step:07d}"
    final = folder / name
    temporary = folder / f".{name}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
    except OSError as error:
        raise storage_error(error, folder, "write a checkpoint in") from None
    metadata = _metadata(config, step, info_class_names, info_palettes, mean, std, selection)
    mode = file_mode()
    try:
        save_file(_weights(model), str(temporary / MODEL_FILE), metadata=metadata)
        os.chmod(temporary / MODEL_FILE, mode)  # safetensors creates it owner-only
        _fsync_file(temporary / MODEL_FILE)
        if trainer_state is not None:
            torch.save(trainer_state, temporary / STATE_FILE)
            os.chmod(temporary / STATE_FILE, mode)
            _fsync_file(temporary / STATE_FILE)
        _fsync_dir(temporary)
    except (OSError, RuntimeError, SafetensorError) as error:  # disk full, quota, I/O: torch and safetensors wrap them
        shutil.rmtree(temporary, ignore_errors=True)
        previous = list_checkpoints(folder)
        kept = f"; the previous checkpoint {previous[-1].name} is intact" if previous else ""
        raise storage_error(error, temporary, "write the checkpoint", kept) from None
    if final.exists():
        old = folder / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        temporary.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        temporary.rename(final)
    _fsync_dir(folder)
    if keep is not None:
        for stale in list_checkpoints(folder)[:-keep]:
            remove_tree(stale)
    return final


def remove_tree(path: Path) -> None:
    """Delete a checkpoint folder crash-safely: renamed to ``.<name>.trash`` first (one atomic step that takes it
    out of the list), then deleted; a crash in between leaves only a ``.trash`` folder, removed at the next start."""
    trash = path.parent / f".{path.name}.trash"
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_leftovers(folder: Path) -> list[str]:
    """Remove what interrupted writes and prunes left in ``folder`` (``.step_N.tmp``, ``.*.trash``); the names removed.

    ``.step_N.old`` folders are not leftovers: ``list_checkpoints`` renames one back when its
    ``step_N`` is missing (a crash between the two renames of a re-save).
    """
    if not folder.is_dir():
        return []
    list_checkpoints(folder)
    removed = []
    for leftover in sorted([*folder.glob(".*.tmp"), *folder.glob(".*.trash"), *folder.glob(".*.old")]):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover.name)
    return removed


def checkpoint_problem(step_folder: Path, state: bool = True) -> str | None:
    """Why ``step_folder`` cannot be resumed from (unreadable weights, metadata or training state), or ``None``."""
    try:
        read_meta(step_folder)
        with safe_open(str(step_folder / MODEL_FILE), framework="pt") as handle:
            for key in handle.keys():  # reads every tensor: a truncated or damaged file fails here
                handle.get_slice(key)
        if state:
            load_trainer_state(step_folder)
    except CheckpointError as error:
        return str(error)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        return f"{step_folder / MODEL_FILE}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    return None


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoint folders under ``folder``, oldest first.

    A ``.step_N.old`` folder without its ``step_N`` is what a crash between the two renames of
    a re-save leaves; it is renamed back first, so that write loses nothing either (the same
    for ``.best.old``). ``best/`` is not listed.
    """
    if not folder.is_dir():
        return []
    for old in folder.glob(".*.old"):
        final = folder / old.name[1:-4]
        if not final.exists() and (old / MODEL_FILE).is_file():
            old.rename(final)
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / MODEL_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def resolve(path: str | Path) -> Path:
    """Accept a ``model.safetensors`` file, a ``step_N`` or ``best`` folder, a ``checkpoints`` folder or a run folder.

    A ``checkpoints`` or run folder resolves to its latest ``step_N`` (``best`` must be named).
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    for folder in (path, path / "checkpoints"):
        found = list_checkpoints(folder)
        if found:
            return found[-1] / MODEL_FILE
    raise CheckpointError(f"no checkpoint in {path}: expected {MODEL_FILE} or step_N/ folders")


def results_folder(file: Path) -> Path:
    """Where ``scenemtl eval`` writes by default: ``<run>/eval`` for ``<run>/checkpoints/<step_N|best>/model.safetensors``,
    else an ``eval`` folder beside the file."""
    file = Path(file)
    if file.parent.parent.name == "checkpoints":
        return file.parent.parent.parent / "eval"
    return file.parent / "eval"


def _metadata(
    config: Config,
    step: int,
    class_names: Mapping[str, list[str]],
    palettes: Mapping[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    selection: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The safetensors metadata of a checkpoint: everything needed to rebuild its model (strings only)."""
    metadata = {
        "scenemtl_version": __version__,
        "config": json.dumps(config.to_dict()),
        "step": str(step),
        "class_names": json.dumps(dict(class_names)),
        "palettes": json.dumps({k: [list(map(int, c)) for c in v] for k, v in palettes.items()}),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
    }
    if selection is not None:
        metadata["selection"] = json.dumps(dict(selection))
    return metadata


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def write_model_file(path: Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``model``'s weights with ``meta`` as one ``model.safetensors`` (a model folder's weights);
    written under a temporary name and renamed, so a failed write leaves no half file."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        save_file(
            _weights(model),
            str(temporary),
            metadata=_metadata(meta.config, meta.step, meta.class_names, meta.palettes, meta.mean, meta.std, meta.selection),
        )
        os.chmod(temporary, file_mode())
        os.replace(temporary, path)
    except (OSError, RuntimeError, SafetensorError) as error:
        temporary.unlink(missing_ok=True)
        raise storage_error(error, path, "write the model file") from None
    return path


def read_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of a checkpoint, without loading its weights."""
    file = resolve(path)
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file} is not a readable safetensors checkpoint ({error})") from None
    if "config" not in metadata:
        raise CheckpointError(f"{file} has no scenemtl metadata: it was not written by scenemtl (see `scenemtl --help`)")
    try:
        return CheckpointMeta(
            config=validate(json.loads(metadata["config"]), f"stored in {file}"),
            step=int(metadata.get("step", 0)),
            class_names=json.loads(metadata.get("class_names", "{}")),
            palettes=json.loads(metadata.get("palettes", "{}")),
            mean=tuple(json.loads(metadata["mean"])),
            std=tuple(json.loads(metadata["std"])),
            version=metadata.get("scenemtl_version", "?"),
            selection=json.loads(metadata["selection"]) if "selection" in metadata else None,
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{file} has damaged scenemtl metadata ({type(error).__name__}: {error})") from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint's weights into ``model``; any key or shape mismatch is listed in the error."""
    file = resolve(path)
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file} is not a readable safetensors checkpoint ({error})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes]
        raise CheckpointError(f"checkpoint {file} does not fit this model ({key_mismatch(missing, unexpected, shapes)})")
    model.load_state_dict(state)


def load_trainer_state(step_folder: Path) -> dict[str, Any]:
    """The training state next to a checkpoint's weights (weights-only unpickling)."""
    file = step_folder / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{step_folder} has no {STATE_FILE}: it holds weights only and cannot resume training")
    return read_torch(file, "training state", "resume from an earlier checkpoint", error=CheckpointError)


def compare_to_config(meta: CheckpointMeta, config: Config, file: Path) -> None:
    """Raise if the checkpoint was trained for another architecture, backbone or task set."""
    stored = meta.config
    differences = []
    if stored.model.arch != config.model.arch:
        differences.append(f"architecture '{stored.model.arch}' vs config '{config.model.arch}'")
    if stored.model.backbone.name != config.model.backbone.name:
        differences.append(f"backbone '{stored.model.backbone.name}' vs config '{config.model.backbone.name}'")
    if set(stored.tasks) != set(config.tasks):
        differences.append(f"tasks {list(stored.tasks)} vs config {list(config.tasks)}")
    if differences:
        raise CheckpointError(f"checkpoint {file} is for another model: " + "; ".join(differences))
