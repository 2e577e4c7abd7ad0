"""The streaming-metric protocol: ``update`` per batch, ``sync`` across processes, ``compute`` at the end."""

from __future__ import annotations

import torch
import torch.distributed as dist


#: how per-pixel errors are pooled (depth, normals), and the words that name each in ``variant``
POOLINGS = {"pixel": "pixel-pooled", "image": "per-image mean", "batch": "per-batch mean"}
#: pad value of evaluation targets (label images, whose real labels are ≥ 0)
EVAL_PAD = -1

#: fixed point of real-valued sums: two int64 limbs, 2⁻¹⁶ and 2⁻⁴⁰ (range ±1.4e14, resolution 9e-13)
_HIGH, _LOW = 2.0**16, 2.0**24


def fixed_point(values: torch.Tensor) -> torch.Tensor:
    """Sum over dim 0 of per-image reals as ``[..., 2]`` int64 limbs: integer addition is exact in any order."""
    scaled = values.double() * _HIGH
    high = torch.floor(scaled)
    low = torch.round((scaled - high) * _LOW)
    return torch.stack([high.to(torch.int64).sum(0), low.to(torch.int64).sum(0)], dim=-1)


def fixed_zero(*shape: int) -> torch.Tensor:
    """An empty fixed-point sum of the given shape (for ``add_state``)."""
    return torch.zeros(*shape, 2, dtype=torch.int64)


def from_fixed(limbs: torch.Tensor) -> torch.Tensor:
    """The real value(s) of a fixed-point sum, float64."""
    return (limbs[..., 0].double() + limbs[..., 1].double() / _LOW) / _HIGH


class StreamingMetric:
    """Accumulates sufficient statistics as tensors; ``sync`` sums them over all processes.

    Subclasses call ``add_state`` in ``__init__`` and implement ``update`` and ``compute``.
    ``directions`` maps each reported metric name to True when higher is better.

    Counts are integers. Real-valued sums are computed per image and added as int64 fixed point
    (``fixed_point``), so the totals do not depend on how images are split into batches or
    across processes: evaluation under torchrun gives the one-process numbers exactly.
    """

    directions: dict[str, bool] = {}
    #: the metric that stands for the task in Δm and model selection
    main: str = ""
    #: a short name of the protocol variant, written beside the numbers in reports
    variant: str = ""
    #: extra inputs ``update`` takes by keyword: ``ids`` (sample ids), ``eval_target`` (the task's
    #: evaluation ground truth, when the dataset provides one)
    wants: tuple[str, ...] = ()
    #: the named evaluation protocol the metric's options come from (set by the evaluation loop)
    eval_protocol: str | None = None

    def __init__(self) -> None:
        self._defaults: dict[str, torch.Tensor] = {}

    def add_state(self, name: str, default: torch.Tensor) -> None:
        """Register a summable state tensor (int64 fixed point for real sums, float64 for counts)."""
        self._defaults[name] = default.clone()
        setattr(self, name, default.clone())

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        for name, default in self._defaults.items():
            setattr(self, name, default.clone())

    def _to(self, device: torch.device) -> None:
        for name in self._defaults:
            value = getattr(self, name)
            if value.device != device:
                setattr(self, name, value.to(device))

    def _inputs(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The tensors on a device with float64 support (MPS has none: the CPU then); states follow."""
        device = tensors[0].device
        if device.type == "mps":
            device = torch.device("cpu")
        self._to(device)
        return [t.to(device) for t in tensors]

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate one batch: ``prediction`` from ``Task.predict``, ``target`` as in the data contract."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The metric values from the statistics accumulated so far."""
        raise NotImplementedError

    def sync(self) -> None:
        """Sum every state over all processes (no-op without an initialised process group)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        backend = dist.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        for name in self._defaults:
            value = getattr(self, name).to(device)
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            setattr(self, name, value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The accumulated statistics (for tests and for merging by hand)."""
        return {name: getattr(self, name).clone() for name in self._defaults}

    def merge(self, other: "StreamingMetric") -> None:
        """Add another metric's statistics into this one (what ``sync`` does across processes)."""
        for name in self._defaults:
            mine = getattr(self, name)
            setattr(self, name, mine + getattr(other, name).to(mine.device))
