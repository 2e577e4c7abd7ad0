"""How the seeds' official code names and lays out our tasks (for converting their checkpoints and genotypes).

The InvPT/TaskPrompter/ATRC/MTI-Net code lists tasks in one order (``utils/config.py``) and keeps
per-task tensors (prompts, channel blocks of joint norms, per-task module lists) in it; it spells
saliency ``sal`` and predicts it as a two-class softmax where our binary tasks have one logit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: the order in which the InvPT/TaskPrompter code lists tasks (``utils/config.py``); per-task
#: tensors (prompts, channel blocks of joint norms) are laid out in it
OFFICIAL_ORDER = ("semseg", "depth", "human_parts", "saliency", "normals", "edge")
#: our task names that the official code spells differently
OFFICIAL_NAMES = {"saliency": "sal"}
#: tasks whose official output is a two-class softmax where ours is one sigmoid logit
TWO_CLASS = ("saliency",)


def official_name(task: str) -> str:
    """The official spelling of one of our task names."""
    return OFFICIAL_NAMES.get(task, task)


def canonical_order(tasks: Iterable[str]) -> list[str]:
    """Tasks in the official order, others after it in the given order (per-task layouts then line up)."""
    tasks = list(tasks)
    return [t for t in OFFICIAL_ORDER if t in tasks] + [t for t in tasks if t not in OFFICIAL_ORDER]


def official_channels(task: str, out_channels: int) -> int:
    """Output channels of the official head: 2 for the two-class tasks, else ours."""
    return 2 if task in TWO_CLASS and out_channels == 1 else out_channels


def two_class_to_logit(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Our one-logit output from an official-width output (``z₁ − z₀`` for two-class tasks)."""
    if task in TWO_CLASS and logits.shape[1] == 2:
        return logits[:, 1:2] - logits[:, 0:1]
    return logits
