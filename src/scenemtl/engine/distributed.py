"""One process per device, started by torchrun: process-group set-up and rank helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from scenemtl.engine.builder import select_device
from scenemtl.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1


def setup(device_name: str, option: str = "train.device") -> DistInfo:
    """Read torchrun's environment; with ``WORLD_SIZE`` > 1 join the process group (NCCL on CUDA, Gloo on CPU).

    Without torchrun this is one process on ``device_name``. Under torchrun each process takes
    ``cuda:LOCAL_RANK`` when the device is CUDA (``auto`` on a GPU machine).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name, option)
    if world == 1:
        return DistInfo(0, 1, 0, device)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started {world} processes on this machine but it has {torch.cuda.device_count()} CUDA "
                "device(s): lower --nproc_per_node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise ConfigError(f"{option}: several processes on MPS are not supported; use one process or cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, device)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def any_process(info: DistInfo, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (so all stop together instead of hanging)."""
    if not info.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _communicable(info: DistInfo, tensor: torch.Tensor) -> torch.Tensor:
    # Gloo reduces CPU tensors, NCCL CUDA ones
    return tensor.to(info.device) if info.device.type == "cuda" else tensor.cpu()


def all_reduce_mean(info: DistInfo, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` averaged over processes (itself in one process), on its own device."""
    if not info.distributed:
        return tensor
    value = _communicable(info, tensor.detach()).clone()
    dist.all_reduce(value)
    return value.div_(info.world_size).to(tensor.device)


def all_reduce_grads(info: DistInfo, params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over processes in one flat buffer (a missing gradient counts as zero)."""
    if not info.distributed or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _communicable(info, torch.cat([g.reshape(-1).float() for g in grads]))
    dist.all_reduce(flat)
    flat.div_(info.world_size)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset : offset + p.numel()].view_as(p).to(device=p.device, dtype=p.dtype)
        offset += p.numel()


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
