"""The streaming-metric protocol: ``update`` per batch, ``sync`` across processes, ``compute`` at the end."""

from __future__ import annotations

import torch
import torch.distributed as dist


class StreamingMetric:
    """Accumulates sufficient statistics as tensors; ``sync`` sums them over all processes.

    Subclasses call ``add_state`` in ``__init__`` and implement ``update`` and ``compute``.
    ``directions`` maps each reported metric name to True when higher is better.
    """

    directions: dict[str, bool] = {}
    #: the metric that stands for the task in Δm and model selection
    main: str = ""
    #: a short name of the protocol variant, written beside the numbers in reports
    variant: str = ""

    def __init__(self) -> None:
        self._defaults: dict[str, torch.Tensor] = {}

    def add_state(self, name: str, default: torch.Tensor) -> None:
        """Register a summable state tensor (float64 for exact accumulation)."""
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
