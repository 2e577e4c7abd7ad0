"""ATRC's genotypes: the context code of every (target, source) pair, read and written in ATRC's released format."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scenemtl.errors import ConfigError
from scenemtl.tasks import TASKS
from scenemtl.tasks.official import OFFICIAL_NAMES, official_name

#: genotype codes of ATRC's released files
CONTEXTS = {0: "none", 1: "global", 2: "local", 3: "t-label", 4: "s-label"}
_CONTEXT_NAMES = {"none": 0, "global": 1, "local": 2, "t-label": 3, "tlabel": 3, "s-label": 4, "slabel": 4}
#: ATRC's files spell tasks as the seeds' code does (``tasks/official.py``: saliency is ``sal``)
_FROM_OFFICIAL = {v: k for k, v in OFFICIAL_NAMES.items()}
_CODES_TEXT = "0 none, 1 global, 2 local, 3 t-label, 4 s-label"

Genotype = dict[str, dict[str, int]]


def load_genotype(spec: str | os.PathLike | Mapping | None, tasks: Sequence[str]) -> Genotype:
    """The context code of every (target, source) pair of ``tasks`` from a genotype file, mapping or name.

    ``spec``: a JSON file in ATRC's released format, the same content as a mapping, one of the
    context names (every pair the same), or None (every pair global). Errors name the file and key.
    """
    if spec is None:
        spec = "global"
    if isinstance(spec, str) and spec in _CONTEXT_NAMES:
        return {t: {s: _CONTEXT_NAMES[spec] for s in tasks} for t in tasks}
    if isinstance(spec, Mapping):
        content, where = spec, "model.options.genotype"
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.options.genotype: genotype file not found: {path}. Give a JSON file in the format of ATRC's "
                "released genotypes (e.g. written by `scenemtl search`), one of "
                f"{', '.join(sorted(set(_CONTEXT_NAMES) - {'tlabel', 'slabel'}))}, or null (every pair global)"
            )
        try:
            content = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"genotype file {path} is not valid JSON ({error})") from None
        where = f"genotype file {path}"
    else:
        raise ConfigError(f"model.options.genotype must be a file path, a mapping or a context name, got {spec!r}")
    if not isinstance(content, Mapping):
        raise ConfigError(f'{where}: expected a JSON object {{"data": {{target: {{source: code}}}}}}')
    table, prefix = (content["data"], "data.") if "data" in content else (content, "")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: '{prefix or 'data'}' must map target tasks to their sources")

    def normalise(mapping: Mapping, key_path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in mapping.items():
            name = _FROM_OFFICIAL.get(key, key)
            if name not in TASKS:
                raise ConfigError(
                    f"{where}: unknown task '{key_path}{key}'; tasks are named as in ATRC's files "
                    f"({', '.join(official_name(t) for t in TASKS.names())})"
                )
            if name in out:
                raise ConfigError(f"{where}: task '{name}' appears twice in '{key_path.rstrip('.') or 'data'}'")
            out[name] = (key, value)
        return out

    rows = normalise(table, prefix)
    genotype: Genotype = {}
    for target in tasks:
        if target not in rows:
            raise ConfigError(f"{where}: no entry '{prefix}{official_name(target)}' for the target task '{target}'")
        key, row = rows[target]
        if not isinstance(row, Mapping):
            raise ConfigError(f"{where}: '{prefix}{key}' must map source tasks to context codes")
        sources = normalise(row, f"{prefix}{key}.")
        genotype[target] = {}
        for source in tasks:
            if source not in sources:
                raise ConfigError(f"{where}: '{prefix}{key}' has no source '{official_name(source)}'")
            skey, code = sources[source]
            if isinstance(code, bool) or not isinstance(code, int) or code not in CONTEXTS:
                raise ConfigError(f"{where}: '{prefix}{key}.{skey}' = {code!r} is not a context code ({_CODES_TEXT})")
            genotype[target][source] = code
    return genotype


def genotype_json(genotype: Genotype, step: int) -> dict[str, Any]:
    """A genotype in ATRC's released file format (its task names)."""
    data = {official_name(t): {official_name(s): int(c) for s, c in row.items()} for t, row in genotype.items()}
    return {"data": data, "step": int(step)}


def format_genotype(genotype: Genotype) -> str:
    """A target × source table of context names."""
    tasks = list(genotype)
    width = max(len(t) for t in tasks + ["target\\source"])
    cell = max(8, *(len(t) for t in tasks))
    lines = ["target\\source".ljust(width) + "".join(s.rjust(cell + 1) for s in tasks)]
    for t in tasks:
        lines.append(t.ljust(width) + "".join(CONTEXTS[genotype[t][s]].rjust(cell + 1) for s in tasks))
    return "\n".join(lines)
