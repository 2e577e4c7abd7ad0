"""The registry of task types."""

from __future__ import annotations

from scenemtl.registry import Registry

TASKS: Registry = Registry("task")
register_task = TASKS.register
