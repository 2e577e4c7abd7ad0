"""Hard parameter sharing and single-task baselines."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.heads import FPNHead, upsample_to
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task


class HardSharing(MultiTaskModel):
    """One shared backbone and one decoder head per task (Caruana, 1997: "Multitask Learning")."""

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task]) -> None:
        super().__init__()
        self.backbone = Backbone(config.backbone)
        self.heads = nn.ModuleDict(
            {
                name: FPNHead(
                    self.backbone.channels, self.backbone.strides, config.head_channels, task.out_channels,
                    min_stride=config.decoder_stride,
                )
                for name, task in tasks.items()
            }
        )

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Logits of every task at the input size."""
        sources = self.backbone(image)
        size = image.shape[-2:]
        features = [f.detach().requires_grad_() for f in sources] if self.cut_features else sources
        final = {name: upsample_to(head(features), size) for name, head in self.heads.items()}
        if self.cut_features:
            return ModelOutput(final=final, features=tuple(features), feature_sources=tuple(sources))
        return ModelOutput(final=final)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task's loss reaches (what gradient balancers act on)."""
        return list(self.backbone.parameters())

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's classifier."""
        return {name: [head.classifier] for name, head in self.heads.items()}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the backbone (the heads are small)."""
        self.backbone.set_activation_checkpointing(enabled)


class SingleTaskNetworks(MultiTaskModel):
    """One independent network per task: the single-task baselines, trained side by side.

    With several tasks this is exactly as many separate networks (no parameter is shared), so one
    run gives every single-task reference for Δm. Each network is the registered architecture
    ``per_task`` (default ``hps``: backbone + head) built for its one task, with ``per_task_options``.
    """

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], per_task: str = "hps",
                 per_task_options: Mapping | None = None) -> None:
        super().__init__()
        from scenemtl.models.registry import build_model

        if per_task == "stl":
            raise ConfigError("model.options.per_task cannot be 'stl' itself; name an architecture such as hps or segnet")
        single = config.model_copy(update={"arch": per_task, "options": dict(per_task_options or {})})
        self.networks = nn.ModuleDict({name: build_model(single, {name: task}) for name, task in tasks.items()})

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Each task's logits from its own network."""
        final: dict[str, torch.Tensor] = {}
        for network in self.networks.values():
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


@register_model("hps")
def hps(config: ModelConfig, tasks: Mapping[str, Task]) -> HardSharing:
    """Hard parameter sharing: shared backbone, per-task FPN heads."""
    return HardSharing(config, tasks)


@register_model("stl")
def stl(config: ModelConfig, tasks: Mapping[str, Task], per_task: str = "hps",
        per_task_options: Mapping | None = None) -> SingleTaskNetworks:
    """Single-task learning: one independent network (architecture ``per_task``) per task."""
    return SingleTaskNetworks(config, tasks, per_task, per_task_options)
