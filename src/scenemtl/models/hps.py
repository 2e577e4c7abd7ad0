"""Hard parameter sharing and single-task baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import PositiveInt
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import FPNHead, resize
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task


class HardSharing(MultiTaskModel):
    """One shared backbone and one decoder head per task (Caruana, 1997: "Multitask Learning")."""

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], head_channels: int = 64, decoder_stride: int = 8) -> None:
        super().__init__()
        self.backbone = Backbone(config.backbone)
        # an instance task (3D detection) brings its own head on the backbone's feature maps
        self.instance = {name for name, task in tasks.items() if not task.is_map}
        self.heads = nn.ModuleDict(
            {
                name: task.build_head(list(self.backbone.channels), list(self.backbone.strides))
                if name in self.instance
                else FPNHead(
                    self.backbone.channels,
                    self.backbone.strides,
                    head_channels,
                    task.out_channels,
                    min_stride=decoder_stride,
                )
                for name, task in tasks.items()
            }
        )

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The backbone's feature maps."""
        return tuple(self.backbone(image))

    def decode(self, shared: Sequence[torch.Tensor], size: Sequence[int]) -> ModelOutput:
        """Logits of every task at ``size``."""
        features = list(shared)
        return ModelOutput(
            final={
                name: head(features, tuple(size)) if name in self.instance else resize(head(features), size)
                for name, head in self.heads.items()
            }
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task's loss reaches (what gradient balancers act on)."""
        return list(self.backbone.parameters())

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's classifier."""
        return {name: [head.classifier] for name, head in self.heads.items() if name not in self.instance}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the backbone (the heads are small)."""
        self.backbone.set_activation_checkpointing(enabled)


class SingleTaskNetworks(MultiTaskModel):
    """One independent network per task: the single-task baselines, trained side by side.

    With several tasks this is exactly as many separate networks (no parameter is shared), so one
    run gives every single-task reference for Δm. Each network is the registered architecture
    ``per_task`` (default ``hps``: backbone + head) built for its one task, with ``options`` (its
    architecture's options, checked by it).
    """

    def __init__(
        self, config: ModelConfig, tasks: Mapping[str, Task], per_task: str = "hps", options: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        from scenemtl.models.registry import build_model

        if per_task == "stl":
            raise ConfigError("model.options.per_task cannot be 'stl' itself; name an architecture such as hps or segnet")
        single = config.model_copy(update={"arch": per_task, "options": dict(options or {})})
        self.networks = nn.ModuleDict({name: build_model(single, {name: task}) for name, task in tasks.items()})

    #: ``forward(image, tasks=[...])`` runs only those tasks' networks
    routes_tasks = True

    def forward(self, image: torch.Tensor, tasks: Sequence[str] | None = None) -> ModelOutput:
        """Each task's logits from its own network (``tasks``: only these tasks' networks run)."""
        final: dict[str, torch.Tensor] = {}
        for name, network in self.networks.items():
            if tasks is None or name in tasks:
                final.update(network(image).final)
        return ModelOutput(final=final)

    def shared_parameters(self) -> list[nn.Parameter]:
        """None: nothing is shared."""
        return []

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each single-task network's classifier."""
        return {name: network.output_layers()[name] for name, network in self.networks.items()}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint every network's backbone."""
        for network in self.networks.values():
            network.set_activation_checkpointing(enabled)


@register_model("hps", tiny={"head_channels": 8}, instance_tasks=True)
def hps(config: ModelConfig, tasks: Mapping[str, Task], head_channels: PositiveInt = 64, decoder_stride: PositiveInt = 8) -> HardSharing:
    """Hard parameter sharing: shared backbone, per-task FPN heads of ``head_channels`` reading the
    backbone levels of stride ≥ ``decoder_stride`` (8 suits the small synthetic images; the seeds'
    decoders work at 4 on their 448×576 / 512×512 images)."""
    return HardSharing(config, tasks, head_channels, decoder_stride)


@register_model("stl", tiny={"head_channels": 8})
def stl(
    config: ModelConfig, tasks: Mapping[str, Task], per_task: str = "hps", per_task_options: Mapping[str, Any] | None = None, **options: Any
) -> SingleTaskNetworks:
    """Single-task learning: one independent network (architecture ``per_task``) per task.

    Every other option is ``per_task``'s (so ``model.arch=stl`` on a config written for that
    architecture keeps its widths); ``per_task_options`` is the same as a mapping.
    """
    both = set(options) & set(per_task_options or {})
    if both:
        raise ConfigError(f"model.options.{sorted(both)[0]} is given twice (also in model.options.per_task_options); keep one")
    return SingleTaskNetworks(config, tasks, per_task, {**options, **(per_task_options or {})})
