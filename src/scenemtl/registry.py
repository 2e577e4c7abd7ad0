"""Name registries filled by a decorator at each definition site (timm's ``@register_model`` style)."""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

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
    factory: Callable[..., Any],
    options: Mapping[str, Any],
    prefix: str,
    reserved: Iterable[str] = (),
    owner: str = "",
    also: Iterable[str] = (),
) -> dict[str, Any]:
    """Check ``options`` against ``factory``'s signature and return them validated (pydantic's lax coercion).

    An option the factory does not take raises ConfigError naming ``prefix.key`` and the valid keys
    (``also``: keys valid at the same place but handled elsewhere, offered in the hint); a value of
    the wrong type raises ConfigError naming the key, the expected type and the value. A factory with
    ``**kwargs`` checks its extra keys itself (the types of its named parameters are still checked).
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    parameters = inspect.signature(target).parameters
    allowed = [p for p in parameters if p not in {"self", *reserved}]
    where = f" for '{owner}'" if owner else ""
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for key in options:
            if key not in allowed:
                raise ConfigError(f"unknown option '{prefix}.{key}'{where}.{did_you_mean(key, [*allowed, *also])}")
    hints = _annotations(target)
    checked = dict(options)
    for key, value in options.items():
        adapter = _adapter(hints.get(key)) if key in allowed else None
        if adapter is None:
            continue
        try:
            checked[key] = adapter.validate_python(value)
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            raise ConfigError(f"option '{prefix}.{key}'{where} must be {_type_name(hints[key])}, got {value!r} ({reason})") from None
    return checked


def _annotations(target: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``target``'s parameters; one that cannot be resolved is left out."""
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # a name imported only for type checking: resolve what can be resolved
        namespace = getattr(target, "__globals__", {})
        hints = {}
        for name, annotation in getattr(target, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
            except Exception:
                continue
        return hints


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    """A pydantic validator of ``annotation``, or None for a type pydantic cannot check (e.g. a module)."""
    if annotation is None or annotation is Any:
        return None
    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:
        return None


def _type_name(annotation: Any) -> str:
    """``annotation`` as a reader writes it (``int | None``, ``Sequence[int]``, ``Literal['a', 'b']``)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    text = text.replace("typing.", "").replace("collections.abc.", "")
    # Annotated[int, Gt(gt=0)] reads as int (pydantic's message, quoted after it, names the constraint)
    return re.sub(r"Annotated\[(\w+), [^\]]*\]", r"\1", text)
