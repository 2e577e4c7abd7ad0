"""The registry of architectures and the one entry point that builds them."""

from __future__ import annotations

from collections.abc import Mapping

from scenemtl.config import ModelConfig
from scenemtl.models.base import MultiTaskModel
from scenemtl.registry import Registry, check_options
from scenemtl.tasks import Task

MODELS: Registry = Registry("architecture")
register_model = MODELS.register


def build_model(config: ModelConfig, tasks: Mapping[str, Task]) -> MultiTaskModel:
    """Build the architecture ``config.arch`` for ``tasks``; ``config.options`` go to its factory."""
    factory = MODELS.get(config.arch)
    check_options(factory, config.options, "model.options", ("config", "tasks"), owner=config.arch)
    model = factory(config=config, tasks=dict(tasks), **config.options)
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"architecture '{config.arch}' must return a MultiTaskModel, got {type(model).__name__}")
    model.arch = config.arch
    return model
