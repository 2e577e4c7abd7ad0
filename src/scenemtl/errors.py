"""User-facing errors: each names the thing that is wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class ScenemtlError(Exception):
    """An error the user can fix; the CLI prints it as one line, without a traceback."""


class ConfigError(ScenemtlError):
    """A configuration file, key or value is wrong."""


class DataError(ScenemtlError):
    """A dataset, image or label file is missing or unreadable."""


class CheckpointError(ScenemtlError):
    """A checkpoint is missing, corrupt or belongs to another model."""


def nearest(name: str, choices: Iterable[str]) -> str | None:
    """Return the choice closest to ``name`` (for 'did you mean' hints), or None."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint sentence listing the valid choices, nearest first."""
    choices = sorted(str(c) for c in choices)
    near = nearest(name, choices)
    hint = f" Did you mean '{near}'?" if near else ""
    return f"{hint} Valid choices: {', '.join(choices) or '(none)'}."


def short_list(items: Sequence[str], limit: int = 6) -> str:
    """The first ``limit`` items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def key_mismatch(missing: Sequence[str], unexpected: Sequence[str], shapes: Sequence[str], limit: int = 6) -> str:
    """'missing keys: …; unexpected keys: …; shape mismatch: …' for the non-empty lists (for checkpoint errors)."""
    parts = [
        f"{label}: {short_list(sorted(keys), limit)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes))
        if keys
    ]
    return "; ".join(parts)
