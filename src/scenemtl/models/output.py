"""What every architecture returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """``final``: task → logits at the input size; ``aux``: stage name → task → logits (deep supervision).

    The training loop applies each task's loss to every entry of ``final`` and of each ``aux``
    stage (times ``aux_weights[stage]``, default 1); evaluation and prediction read ``final`` only.

    ``features`` and ``feature_sources`` are filled only when the model runs inside ``SharedCut``
    (for gradient balancers): ``feature_sources`` are the shared representation (e.g. the
    backbone's feature maps) and ``features`` detached copies of them that the task heads read, so
    a balancer can take each task's gradient with respect to the representation without going
    back through the shared part, then back-propagate into it from ``feature_sources`` once.
    """

    final: dict[str, torch.Tensor]
    aux: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    #: stage → factor on that stage's losses (default 1; DiffusionMTL weighs its preliminary
    #: predictions 0.5)
    aux_weights: dict[str, float] = field(default_factory=dict)
    features: tuple[torch.Tensor, ...] = ()
    feature_sources: tuple[torch.Tensor, ...] = ()
