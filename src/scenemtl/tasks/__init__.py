"""Tasks: one object per dense prediction task, registered by name."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from scenemtl.errors import ConfigError
from scenemtl.registry import check_options
from scenemtl.tasks.base import Task, balanced_bce, masked_mean
from scenemtl.tasks.binary import EdgeTask, SaliencyTask
from scenemtl.tasks.classification import ClassificationTask
from scenemtl.tasks.det3d import Det3DTask
from scenemtl.tasks.depth import DepthTask, InverseDepthTask
from scenemtl.tasks.normals import NormalsTask
from scenemtl.tasks.registry import TASKS, register_task
from scenemtl.tasks.segmentation import HumanParts, SegmentationTask, SemanticSegmentation

__all__ = [
    "TASKS",
    "ClassificationTask",
    "Det3DTask",
    "DepthTask",
    "EdgeTask",
    "HumanParts",
    "InverseDepthTask",
    "NormalsTask",
    "SaliencyTask",
    "SegmentationTask",
    "SemanticSegmentation",
    "Task",
    "balanced_bce",
    "build_task",
    "task_class",
    "masked_mean",
    "register_task",
]


def task_class(name: str, options: Mapping[str, Any] | None = None, types: Mapping[str, str] | None = None) -> type[Task]:
    """The class of task ``name``: its ``type`` option, else ``types[name]`` (``DatasetInfo.task_types``), else ``name``."""
    kind = (options or {}).get("type") or (types or {}).get(name) or name
    return TASKS.get(kind)


def build_task(
    name: str,
    options: Mapping[str, Any],
    class_names: Mapping[str, list[str]] | None = None,
    palettes: Mapping[str, Any] | None = None,
    protocol: str | None = None,
    types: Mapping[str, str] | None = None,
) -> Task:
    """Create the task ``name`` with its config ``options``; class names and palettes come from the dataset.

    ``protocol``: the evaluation protocol the options were resolved under (reports name it). The task's
    type is ``options['type']``, else ``types[name]`` (the dataset's ``DatasetInfo.task_types``: the
    Visual Decathlon's domains are ``classification`` tasks), else ``name`` itself.
    """
    kwargs = dict(options)
    kwargs.pop("type", None)
    cls = task_class(name, options, types)
    check_options(cls, kwargs, f"tasks.{name}", reserved=("name", "class_names", "palette"), also=("weight", "type"))
    parameter = inspect.signature(cls.__init__).parameters.get("class_names")
    if parameter is not None and (parameter.default is inspect.Parameter.empty or (class_names and name in class_names)):
        if not class_names or name not in class_names:
            raise ConfigError(f"task '{name}' needs class names, but the dataset does not provide '{name}' labels")
        kwargs["class_names"] = class_names[name]
        if palettes and name in palettes:
            kwargs["palette"] = palettes[name]
    task = cls(name=name, **kwargs)
    task.eval_protocol = protocol
    return task
