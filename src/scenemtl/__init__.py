"""scenemtl: multi-task dense scene understanding.

The Python API (``scenemtl.api``) is importable from here: ``create_model``, ``load_model``,
``save_pretrained``, ``from_pretrained``, ``push_to_hub``, ``Predictor``, ``tasks_of`` and the
``list_*`` functions. They are imported on first use, so ``import scenemtl`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Predictor",
    "__version__",
    "create_model",
    "from_pretrained",
    "list_balancers",
    "list_datasets",
    "list_models",
    "list_tasks",
    "load_model",
    "push_to_hub",
    "save_pretrained",
    "tasks_of",
]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from scenemtl.engine.predict import Predictor

        return Predictor
    if name in __all__:
        from scenemtl import api

        return getattr(api, name)
    raise AttributeError(f"module 'scenemtl' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
