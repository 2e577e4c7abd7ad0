"""Δm: the mean relative change of a multi-task model against single-task references."""

from __future__ import annotations

import math
from collections.abc import Mapping

from scenemtl.errors import ScenemtlError


def relative_change(value: float, reference: float, higher_is_better: bool) -> float:
    """Signed relative change in percent: positive when ``value`` is better than ``reference``."""
    if reference == 0 or not math.isfinite(reference):
        raise ScenemtlError(f"cannot compute Δm against a reference value of {reference}")
    sign = 1.0 if higher_is_better else -1.0
    return sign * (value - reference) / abs(reference) * 100


def delta_m(
    results: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    directions: Mapping[str, Mapping[str, bool]],
    metrics: Mapping[str, list[str]],
) -> float:
    """Δm = (1/T) Σ_t (−1)^{l_t} (M_mt,t − M_st,t)/M_st,t × 100, averaged over the listed metrics.

    ``results`` and ``reference`` map task → metric → value; ``directions`` task → metric →
    higher-is-better; ``metrics`` task → the metric names that enter Δm (one per task in the
    MTI-Net/InvPT family). Each metric counts once, as in ASTMT's Eq. 4.
    """
    changes = []
    for task, names in metrics.items():
        for name in names:
            try:
                value, ref = results[task][name], reference[task][name]
            except KeyError as error:
                raise ScenemtlError(f"Δm needs '{task}/{name}' in both results and reference; missing {error}") from None
            changes.append(relative_change(value, ref, directions[task][name]))
    if not changes:
        raise ScenemtlError("Δm needs at least one task metric")
    return sum(changes) / len(changes)
