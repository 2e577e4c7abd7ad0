"""Run logs: JSON lines (one record per event) and TensorBoard scalars."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from scenemtl.errors import ConfigError


class RunLogger:
    """Writes ``metrics.jsonl`` and TensorBoard events under a run folder (only on rank 0)."""

    def __init__(
        self,
        folder: Path,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
        wandb_project: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.folder = folder
        self._jsonl = None
        self._writer = None
        self._wandb = None
        if not enabled:
            return
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise ConfigError(f"train.wandb is '{wandb_project}' but wandb is not installed: pip install 'scenemtl[wandb]'") from None
            self._wandb = wandb.init(project=wandb_project, name=folder.name, config=config, dir=str(folder), resume="allow")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "metrics.jsonl"
        if resume_step is not None and path.exists():
            _truncate_after(path, resume_step)  # -1: a new run over an earlier attempt's logs, all dropped
        self._jsonl = open(path, "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events logged after the checkpoint by the interrupted run
            purge = resume_step + 1 if resume_step is not None else None
            self._writer = SummaryWriter(log_dir=str(folder / "tensorboard"), purge_step=purge)

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """Record ``values`` (flat or nested one level) at ``step`` under the tag prefix ``kind``."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(record, default=_jsonable) + "\n")
        scalars = {
            f"{kind}/{key}": value
            for key, value in _flatten(values).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        }
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def log_image(self, tag: str, step: int, picture: Any) -> None:
        """An HxWx3 uint8 picture in TensorBoard (and W&B)."""
        if not self.enabled:
            return
        if self._writer is not None:
            self._writer.add_image(tag, picture, step, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(picture)}, step=step)

    def close(self) -> None:
        """Flush and close the files."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _truncate_after(path: Path, step: int) -> None:
    """Drop the records an interrupted run wrote after the checkpoint it is resumed from."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(f"{line}\n" for line in kept))
    temporary.replace(path)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def _jsonable(value: Any) -> Any:
    return float(value) if hasattr(value, "__float__") else str(value)


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm bar that redraws at most every 10 s when stderr is not a terminal (CI logs, files)."""
    interactive = sys.stderr.isatty()
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.1 if interactive else 10.0)
    return tqdm(iterable, **kwargs)
