"""The one place that reads and writes torchjd's private aggregator state (for exact resume).

torchjd's stateful aggregators keep their state in attributes that are not part of its public
API: Nash-MTL's solver state (``prvs_alpha``, ``step``, ``normalization_factor`` of the private
``_NashMTLWeighting``, and its ``_init_optim_problem``) and GradVac's EMA cosine targets
(``GradVacWeighting._phi_t`` and ``_state_key``). The balancers save and restore them through
the functions here, so a checkpoint resumes exactly.

These attributes were read from torchjd 0.18 and may change in any other minor version, so
every access first checks the installed torchjd against ``SUPPORTED`` and raises
``TorchJDVersionError`` (naming both, and the fix) when it is outside. The check runs when the
state is accessed (saving or loading a checkpoint), not at import: everything else works with
any torchjd that has these aggregators.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import functools
import importlib.metadata
import re
from typing import Any

import numpy as np
import torch

from scenemtl.errors import ScenemtlError

__all__ = [
    "SUPPORTED",
    "TorchJDVersionError",
    "check_version",
    "gradvac_state",
    "installed_version",
    "is_supported",
    "load_gradvac_state",
    "load_nash_mtl_state",
    "nash_mtl_state",
]

#: the torchjd versions whose private state this module was written for (pyproject.toml pins the same)
SUPPORTED = ">=0.18,<0.19"
_SUPPORTED_RELEASE = (0, 18)
_FIX = f'pip install "torchjd{SUPPORTED}"'


class TorchJDVersionError(ScenemtlError):
    """The installed torchjd is outside the range whose private aggregator state this code reads."""


@functools.cache
def _distribution_version() -> str:
    try:
        return importlib.metadata.version("torchjd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (no package metadata)"


def installed_version() -> str:
    """The installed torchjd's version string (from its package metadata)."""
    return _distribution_version()


def is_supported(version: str) -> bool:
    """Whether ``version`` is in ``SUPPORTED``: any 0.18.x release (pre-releases of 0.18 included)."""
    match = re.match(r"\s*v?(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) == _SUPPORTED_RELEASE


def _message(what: str, version: str) -> str:
    return (
        f"{what} is kept in torchjd's private attributes, which scenemtl reads (to save and resume it) only for "
        f"torchjd{SUPPORTED}, but the installed torchjd is {version}. Fix: {_FIX}"
    )


def check_version(what: str) -> None:
    """Raise ``TorchJDVersionError`` unless the installed torchjd is in ``SUPPORTED``; ``what`` names the state."""
    version = installed_version()
    if not is_supported(version):
        raise TorchJDVersionError(_message(what, version))


@contextmanager
def _private(what: str) -> Iterator[None]:
    """Check the version, and report a missing private attribute as the same error (a changed torchjd)."""
    check_version(what)
    try:
        yield
    except AttributeError as error:
        raise TorchJDVersionError(f"{_message(what, installed_version())} ({error})") from error


def nash_mtl_state(aggregator: Any) -> dict[str, Any]:
    """Nash-MTL's solver state: the previous α, the step count and the Gramian's normalisation factor."""
    with _private("Nash-MTL's solver state"):
        w = aggregator.weighting
        return {
            "prvs_alpha": torch.as_tensor(np.asarray(w.prvs_alpha, dtype=np.float64)),
            "step": float(w.step),
            "normalization_factor": torch.as_tensor(np.asarray(w.normalization_factor, dtype=np.float64)),
        }


def load_nash_mtl_state(aggregator: Any, state: dict[str, Any]) -> None:
    """Restore Nash-MTL's solver state (and rebuild its problem, which torchjd builds at step 0)."""
    with _private("Nash-MTL's solver state"):
        w = aggregator.weighting
        w.prvs_alpha = state["prvs_alpha"].numpy().astype(np.float32)
        w.normalization_factor = state["normalization_factor"].numpy()
        w.step = state["step"]
        if w.step > 0:
            w._init_optim_problem()


def gradvac_state(aggregator: Any) -> dict[str, torch.Tensor]:
    """GradVac's EMA cosine targets (an empty tensor before the first step)."""
    with _private("GradVac's state (its EMA cosine targets)"):
        phi = aggregator.gramian_weighting._phi_t
        return {"phi": phi.clone() if phi is not None else torch.zeros(0)}


def load_gradvac_state(aggregator: Any, state: dict[str, torch.Tensor]) -> None:
    """Restore GradVac's EMA cosine targets."""
    with _private("GradVac's state (its EMA cosine targets)"):
        weighting = aggregator.gramian_weighting
        if state["phi"].numel():
            weighting._phi_t = state["phi"].clone()
            weighting._state_key = (state["phi"].shape[0], state["phi"].dtype)
