"""What every architecture returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """``final``: task → logits at the input size; ``aux``: stage name → task → logits (deep supervision).

    The training loop applies each task's loss to every entry of ``final`` and of each ``aux``
    stage; evaluation and prediction read ``final`` only.
    """

    final: dict[str, torch.Tensor]
    aux: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
