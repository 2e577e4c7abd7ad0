"""Compatibility module: gradient balancing now lives in ``jacobian``, ``aggregators``, ``min_norm`` and ``torchjd_state``.

``scenemtl.balancing.gradient`` re-exports the public names it used to define, so existing
imports keep working; new code should import from the modules above (or ``scenemtl.balancing``).
"""

from __future__ import annotations

from scenemtl.balancing.aggregators import (
    DBMTL,
    AlignedMTLBalancer,
    CAGradBalancer,
    GradDropBalancer,
    GradNorm,
    GradVacBalancer,
    IMTLGBalancer,
    MGDABalancer,
    NashMTLBalancer,
    PCGradBalancer,
    TorchJDAggregation,
    UPGradBalancer,
)
from scenemtl.balancing.jacobian import GradientBalancer
from scenemtl.balancing.min_norm import min_norm_weights

__all__ = [
    "DBMTL",
    "AlignedMTLBalancer",
    "CAGradBalancer",
    "GradDropBalancer",
    "GradNorm",
    "GradVacBalancer",
    "GradientBalancer",
    "IMTLGBalancer",
    "MGDABalancer",
    "NashMTLBalancer",
    "PCGradBalancer",
    "TorchJDAggregation",
    "UPGradBalancer",
    "min_norm_weights",
]
