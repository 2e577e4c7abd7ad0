"""Name registries filled by a decorator at each definition site (timm's ``@register_model`` style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from scenemtl.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories; unknown names raise an error listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name`` (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the entry called ``name``; an unknown name raises ConfigError with the nearest one."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} '{name}'.{did_you_mean(name, self._items)}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def check_options(
    factory: Callable,
    options: Mapping[str, Any],
    prefix: str,
    reserved: Iterable[str] = (),
    owner: str = "",
    also: Iterable[str] = (),
) -> None:
    """Raise ConfigError for an option ``factory`` does not accept, naming ``prefix.key`` and the nearest one.

    ``also`` lists keys valid at the same place but handled elsewhere (offered in the hint).
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    allowed = [p for p in parameters if p not in {"self", *reserved}]
    for key in options:
        if key not in allowed:
            where = f" for '{owner}'" if owner else ""
            raise ConfigError(f"unknown option '{prefix}.{key}'{where}.{did_you_mean(key, [*allowed, *also])}")
