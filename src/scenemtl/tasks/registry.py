"""The registry of task types."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scenemtl.registry import Registry

if TYPE_CHECKING:  # for the annotation only: no run-time import of the task classes here
    from scenemtl.tasks.base import Task

TASKS: Registry[type[Task]] = Registry("task")
register_task = TASKS.register
