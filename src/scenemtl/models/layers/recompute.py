"""Activation checkpointing of blocks that hold batch norms, without counting their batches twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from torch import nn
from torch.utils.checkpoint import checkpoint


@contextmanager
def _frozen_statistics(modules: list[nn.Module]) -> Iterator[None]:
    """Batch norms keep their running statistics and batch count while the block is recomputed."""
    norms = [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = running·(1 − 0) + batch·0: unchanged (training still normalises by the batch)
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def recomputed(function: Callable[..., Any], modules: list[nn.Module], *inputs: Any) -> Any:
    """``function(*inputs)`` whose activations are recomputed in the backward pass instead of stored.

    The same outputs and gradients as calling it (non-reentrant ``torch.utils.checkpoint``); the batch
    norms among ``modules`` update their running statistics once, in the forward pass, as without
    checkpointing (a plain checkpoint would count the batch twice)."""
    return checkpoint(function, *inputs, use_reentrant=False, context_fn=lambda: (nullcontext(), _frozen_statistics(modules)))
