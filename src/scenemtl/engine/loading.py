"""The one path from a checkpoint to a model: ``load_model``, used by ``eval``, ``predict`` and ``convert``.

It is the only place that knows the kinds of checkpoint: scenemtl's (a run folder, a ``step_N``
or ``best`` folder, a ``model.safetensors``; the model is rebuilt from the config in its
metadata) and the seeds' official files (InvPT's/TaskPrompter's ``*.pth.tar``, DenseMTL's ``*.pkl``,
read weights-only and renamed through the architecture's key map into the model the given config builds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from scenemtl.config import Config
from scenemtl.engine.checkpoint import CheckpointMeta, compare_to_config, read_meta, resolve
from scenemtl.errors import CheckpointError
from scenemtl.tasks import Task


@dataclass
class LoadedModel:
    """A model ready for inference, its tasks, what its checkpoint says about it, and where it came from."""

    model: nn.Module
    tasks: dict[str, Task]
    meta: CheckpointMeta
    file: Path
    official: bool = False
    #: official tensors the official forward never uses, left out by the key map
    dropped: list[str] = field(default_factory=list)


def load_model(source: str | Path, config: Config | None = None, device: torch.device | str = "cpu") -> LoadedModel:
    """Load ``source`` in evaluation mode on ``device``.

    An official ``.pth.tar`` needs ``config`` (the config of its model). A scenemtl checkpoint
    carries its own config; when ``config`` is given too it must describe the same model
    (architecture, backbone, tasks) and the same normalisation, else a CheckpointError says how
    they differ.
    """
    from scenemtl.models.official import is_official_file

    file = resolve(source)
    device = torch.device(device)
    if is_official_file(file):
        if config is None:
            raise CheckpointError(
                f"{file} is an official checkpoint without scenemtl metadata: give the config of "
                "its model (its configs/<dataset>/<arch>.yaml)"
            )
        model, tasks, meta, extra = _from_official(config, file)
        return LoadedModel(model.to(device).eval(), tasks, meta, file, official=True, dropped=list(extra.get("dropped", [])))
    meta = read_meta(file)
    if config is not None:
        _check_against(meta, config, file)
    from scenemtl.engine.builder import model_from_checkpoint

    model, tasks, meta = model_from_checkpoint(file, device)
    return LoadedModel(model, tasks, meta, file)


def _check_against(meta: CheckpointMeta, config: Config, file: Path) -> None:
    from scenemtl.engine.builder import dataset_info

    compare_to_config(meta, config, file)
    info = dataset_info(config)
    if tuple(meta.mean) != tuple(info.mean) or tuple(meta.std) != tuple(info.std):
        raise CheckpointError(
            f"checkpoint {file} was trained with normalisation mean {meta.mean} std {meta.std}, but dataset "
            f"'{info.name}' uses mean {info.mean} std {info.std}; evaluate it on the data it was trained for"
        )


def _from_official(config: Config, path: Path):
    """The config's model with an official checkpoint's weights, its tasks and a metadata record."""
    from scenemtl import __version__
    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.models import build_model
    from scenemtl.models.layers.winograd import set_max_tile
    from scenemtl.models.official import load_official_into

    info = dataset_info(config)
    tasks = build_tasks(config, info)
    model_config = config.model.model_copy(deep=True)
    model_config.backbone.weights = None  # the checkpoint carries every weight
    model = set_max_tile(build_model(model_config, tasks), config.train.winograd)
    extra = load_official_into(model, path)
    meta = CheckpointMeta(
        config=config,
        step=int(extra.get("iter_count", extra.get("step", 0)) or 0),  # InvPT's iter_count, DenseMTL's resume.pkl step
        class_names=dict(info.class_names),
        palettes={k: [list(map(int, c)) for c in v] for k, v in info.palettes.items()},
        mean=tuple(info.mean),
        std=tuple(info.std),
        version=f"official ({__version__} key map)",
    )
    return model, tasks, meta, extra
