"""Task balancing: loss weighting and gradient aggregation behind one interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scenemtl.balancing import aggregators, weighting  # noqa: F401  (registers the methods)
from scenemtl.balancing.base import (
    BALANCERS,
    Balancer,
    EqualWeights,
    FixedWeights,
    LossWeighting,
    StepContext,
    register_balancer,
)
from scenemtl.balancing.jacobian import GradientBalancer
from scenemtl.registry import check_options

__all__ = [
    "BALANCERS",
    "Balancer",
    "EqualWeights",
    "FixedWeights",
    "GradientBalancer",
    "LossWeighting",
    "StepContext",
    "build_balancer",
    "register_balancer",
]


def build_balancer(name: str, tasks: Sequence[str], weights: Mapping[str, float], options: Mapping[str, Any]) -> Balancer:
    """Create the balancer ``name``; unknown options name the nearest valid one."""
    cls = BALANCERS.get(name)
    check_options(cls, options, "balancer.options", ("tasks", "weights"), owner=name)
    return cls(tasks=tasks, weights=weights, **options)
