"""The registry of architectures and the one entry point that builds them."""

from __future__ import annotations

from collections.abc import Mapping

from scenemtl.config import BackboneConfig, ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.base import MultiTaskModel
from scenemtl.registry import Registry, check_options
from scenemtl.tasks import Task

MODELS: Registry = Registry("architecture")

#: the architectures the engine asks for by role, never by name: the single-task baseline (one
#: network per task: Δm's reference runs, the demo's first row) and hard parameter sharing
SINGLE_TASK = "stl"
HARD_SHARING = "hps"


def register_model(
    name: str | None = None,
    *,
    tiny: Mapping | None = None,
    min_tasks: int = 1,
    max_tasks: int | None = None,
    tasks: tuple[str, ...] | None = None,
    tiny_backbone: str = "test_resnet",
    published: Mapping[str, tuple[str, str]] | None = None,
    backbone: bool = True,
    instance_tasks: bool = False,
    image_level: bool = False,
):
    """Register an architecture factory ``factory(config, tasks, **options)`` under ``name``.

        ``tiny``: options that make it narrow enough for the test suite (architectures whose widths
        are fixed by their paper, e.g. SegNet's filters); ``tiny_backbone``: the timm backbone of that
        test (``test_vit`` for the transformer architectures); ``min_tasks``: the fewest tasks it is
        defined for; ``max_tasks``: the most (None: any; ``build_model`` refuses more, e.g. a
        single-task network, which ``stl`` with ``per_task`` builds once per task); ``tasks``: the
        task names it supports (None: any). The architecture test reads
        these, so a new architecture is tested without editing the test. ``published``: the paper's
        or README's parameter and compute figures by backbone, ``{backbone: (dataset, text)}``, which
        ``scenemtl info`` prints beside its own counts. ``backbone=False``: the architecture builds its
        own encoder (SegNet), so a ``model.backbone`` other than the default is an error rather than ignored.
    ``instance_tasks``: it puts an instance task's own head (``Task.build_head``, e.g. 3D detection) on
    its multi-scale features; other architectures refuse such tasks. ``image_level``: it predicts
    image-level tasks only (``Task.is_image_level``: classification, e.g. ``mtan_wrn``); per-pixel
    tasks are an error there, and image-level tasks elsewhere.

        The factory's keyword parameters are the architecture's options: ``build_model`` checks their
        names and validates their types from the annotations (pydantic), so annotate them precisely
        (``PositiveInt``, ``Literal[...]``, ``Sequence[int]``).
    """

    def decorator(factory):
        MODELS.register(name)(factory)
        factory.tiny_options = dict(tiny or {})
        factory.tiny_backbone = tiny_backbone
        factory.min_tasks = min_tasks
        factory.max_tasks = max_tasks
        factory.supported_tasks = tasks
        factory.published = dict(published or {})
        factory.uses_backbone = backbone
        factory.instance_tasks = instance_tasks
        factory.image_level = image_level
        return factory

    return decorator


def build_model(config: ModelConfig, tasks: Mapping[str, Task]) -> MultiTaskModel:
    """Build the architecture ``config.arch`` for ``tasks``; ``config.options`` go to its factory."""
    factory = MODELS.get(config.arch)
    options = check_options(factory, config.options, "model.options", ("config", "tasks"), owner=config.arch)
    if not factory.uses_backbone and config.backbone != BackboneConfig():
        raise ConfigError(
            f"architecture '{config.arch}' builds its own encoder and reads no model.backbone "
            f"(given {config.backbone.model_dump(exclude_defaults=True)}): remove model.backbone"
        )
    if factory.image_level:
        dense = [name for name, task in tasks.items() if not task.is_image_level]
        if dense:
            able = [name for name in MODELS.names() if not MODELS.get(name).image_level]
            raise ConfigError(
                f"architecture '{config.arch}' predicts image-level tasks (classification) only, not {dense}; "
                f"for per-pixel tasks use e.g. {', '.join(able[:6])}"
            )
    if factory.max_tasks is not None and len(tasks) > factory.max_tasks:
        hint = ""
        if factory.max_tasks == 1:  # a single-task network: stl builds one per task
            hint = (
                f"; for one per task (the single-task references) use model: {{arch: {SINGLE_TASK}, options: {{per_task: {config.arch}}}}}"
            )
        raise ConfigError(
            f"architecture '{config.arch}' takes at most {factory.max_tasks} task{'s' if factory.max_tasks > 1 else ''}, "
            f"got {len(tasks)} ({', '.join(tasks)}){hint}"
        )
    instance = [name for name, task in tasks.items() if not task.is_map and not task.is_image_level]
    if instance and not factory.instance_tasks:
        able = [name for name in MODELS.names() if MODELS.get(name).instance_tasks]
        raise ConfigError(
            f"architecture '{config.arch}' has no head for the instance task(s) {instance} (3D boxes); "
            f"use one that carries it: {', '.join(able)}"
        )
    image = [name for name, task in tasks.items() if task.is_image_level]
    # the single-task baseline builds its per-task architecture for each task, which then decides
    per_task = MODELS.get(str(options.get("per_task", HARD_SHARING))) if config.arch == SINGLE_TASK else None
    if image and not factory.image_level and not (per_task is not None and per_task.image_level):
        able = [name for name in MODELS.names() if MODELS.get(name).image_level]
        raise ConfigError(
            f"architecture '{config.arch}' has no head for the image-level task(s) {image} (classification); "
            f"use one that predicts them: {', '.join(able)}"
        )
    model = factory(config=config, tasks=dict(tasks), **options)
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"architecture '{config.arch}' must return a MultiTaskModel, got {type(model).__name__}")
    if config.arch != SINGLE_TASK and (config.backbone.freeze or config.backbone.lora is not None):  # (stl's networks did it)
        from scenemtl.models.backbones.tuning import configure_encoders

        configure_encoders(model, config.backbone.freeze, config.backbone.lora)
    model.arch = config.arch
    return model
