"""ATRC's network: backbone, per-task bottlenecks and auxiliary region maps, relational context, logits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.atrc.context import ContextModule, SearchContextModule
from scenemtl.models.atrc.genotype import Genotype
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import conv_norm_act, fp32_conv, resize
from scenemtl.models.output import ModelOutput
from scenemtl.tasks import Task


class AuxDecoder(nn.Module):
    """Turns an auxiliary head's ATRC-width logits into the task's output format (see the module docstring)."""

    def __init__(self, task: Task, bins: int, depth_range: Sequence[float]) -> None:
        super().__init__()
        # at least two region maps: a label context over one region would be a global average,
        # and its batch norm would see a single value per image
        self.out_channels = task.out_channels
        self.kind, self.channels = "identity", max(task.out_channels, 2)
        kind = task.output_kind
        if kind == "classes":
            pass
        elif kind == "probability":
            self.kind, self.channels = "binary", 2
        elif kind == "metric_depth":  # ATRC's log-spaced bins (inverse depth has other units)
            low, high = float(depth_range[0]), float(depth_range[1])
            fractions = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
            self.kind, self.channels = "bins", bins
            self.register_buffer("centres", (low * (high / low) ** fractions).float(), persistent=False)
        elif kind == "direction":
            self.kind, self.channels = "directions", bins
            self.register_buffer("directions", fibonacci_sphere(bins), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits in the task's format."""
        if self.kind == "binary":
            return logits[:, 1:2] - logits[:, 0:1]
        if self.kind == "bins":
            return torch.einsum("bkhw,k->bhw", logits.float().softmax(1), self.centres).unsqueeze(1)
        if self.kind == "directions":
            return torch.einsum("bkhw,kc->bchw", logits.float().softmax(1), self.directions)
        return logits[:, : self.out_channels]

    @torch.no_grad()
    def init_bias(self, conv: nn.Conv2d, prior: torch.Tensor) -> None:
        """Start the head at the task's prior where the decoding is linear."""
        prior = prior.to(conv.bias)
        if self.kind == "identity":
            conv.bias[: prior.numel()].copy_(prior)
        elif self.kind == "binary":
            conv.bias.copy_(torch.cat([torch.zeros_like(prior), prior]))


def fibonacci_sphere(count: int) -> torch.Tensor:
    """``count`` unit vectors spread evenly over the sphere, ``[count, 3]``."""
    i = torch.arange(count, dtype=torch.float64)
    z = 1 - (2 * i + 1) / count
    radius = (1 - z * z).sqrt()
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([radius * phi.cos(), radius * phi.sin(), z], dim=1).float()


class RelationalContextNet(MultiTaskModel):
    """Backbone → per-task features and auxiliary region maps → relational context → per-task logits."""

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        search: bool,
        genotype: Genotype | None,
        channels: int | None,
        window: int,
        dropout: float,
        aux_bins: int,
        depth_range: Sequence[float],
        freeze_margin: float = 0.3,
        decoder_stride: int = 8,
    ) -> None:
        super().__init__()
        _check(channels, window, dropout, aux_bins, depth_range)
        self.backbone = Backbone(config.backbone, pyramid=True)  # a ViT's maps through the multi-level neck
        strides = self.backbone.strides
        self.levels = [i for i, s in enumerate(strides) if s >= decoder_stride] or [len(strides) - 1]
        in_channels = sum(self.backbone.channels[i] for i in self.levels)
        width = channels if channels is not None else in_channels // 4
        if width < 2:
            raise ConfigError(
                f"atrc: head width {width} (backbone channels {in_channels} // 4) is too narrow; set model.options.channels ≥ 2"
            )
        att = width // 2
        names = list(tasks)
        self.bottleneck = nn.ModuleDict({t: conv_norm_act(in_channels, width, 3) for t in names})
        if search:
            self.context: nn.Module = SearchContextModule(names, width, att, window, freeze_margin)
        else:
            self.context = ContextModule(names, genotype, width, att, window, dropout)
        region_tasks = self.context.region_tasks()
        self.aux_decode = nn.ModuleDict({t: AuxDecoder(tasks[t], aux_bins, depth_range) for t in region_tasks})
        self.aux_conv = nn.ModuleDict({t: conv_norm_act(in_channels, in_channels, 1) for t in region_tasks})
        self.aux_logits = nn.ModuleDict({t: nn.Conv2d(in_channels, self.aux_decode[t].channels, 1) for t in region_tasks})
        self.final_logits = nn.ModuleDict({t: nn.Conv2d(width, task.out_channels, 1) for t, task in tasks.items()})
        for conv in [*self.aux_logits.values(), *self.final_logits.values()]:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The backbone's feature maps."""
        return tuple(self.backbone(image))

    def decode(self, shared: Sequence[torch.Tensor], size: Sequence[int]) -> ModelOutput:
        """Final logits of every task and the auxiliary ("initial") predictions, at ``size``."""
        features = list(shared)
        selected = [features[i] for i in self.levels]
        grid = selected[0].shape[-2:]
        x = torch.cat([selected[0]] + [F.interpolate(f, size=grid, mode="bilinear", align_corners=False) for f in selected[1:]], dim=1)
        task_features = {t: block(x) for t, block in self.bottleneck.items()}
        detached = x.detach()  # the auxiliary heads do not train the backbone (ATRC)
        aux_logits = {t: fp32_conv(self.aux_logits[t], self.aux_conv[t](detached)) for t in self.aux_logits}
        regions = {t: torch.softmax(logits.flatten(2), dim=-1) for t, logits in aux_logits.items()}
        fused = self.context(task_features, regions)
        final = {t: resize(fp32_conv(conv, fused[t]), size) for t, conv in self.final_logits.items()}
        aux = {t: resize(self.aux_decode[t](logits), size) for t, logits in aux_logits.items()}
        return ModelOutput(final=final, aux={"initial": aux} if aux else {})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone (every task's loss reaches it)."""
        return list(self.backbone.parameters())

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's final output (the auxiliary outputs decode bins: ``init_output_bias`` sets them)."""
        return {name: [layer] for name, layer in self.final_logits.items()}

    @torch.no_grad()
    def init_output_bias(self, priors: Mapping[str, torch.Tensor]) -> None:
        """Start each final output (and auxiliary output where linear) at the task's prior."""
        super().init_output_bias(priors)
        for name, prior in priors.items():
            if name in self.aux_logits:
                self.aux_decode[name].init_bias(self.aux_logits[name], prior)

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the backbone."""
        self.backbone.set_activation_checkpointing(enabled)


class ATRC(RelationalContextNet):
    """ATRC with a fixed genotype (see the module docstring)."""

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], genotype: Genotype, **options: Any) -> None:
        super().__init__(config, tasks, search=False, genotype=genotype, **options)

    def genotype(self) -> Genotype:
        """The context code of every (target, source) pair."""
        return {t: dict(row) for t, row in self.context.genotype.items()}


def _check(channels: int | None, window: int, dropout: float, aux_bins: int, depth_range: Sequence[float]) -> None:
    if channels is not None and (not isinstance(channels, int) or channels < 2):
        raise ConfigError(f"model.options.channels must be an integer ≥ 2 (or null for ATRC's backbone width / 4), got {channels!r}")
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ConfigError(f"model.options.window (local attention) must be an odd positive integer, got {window!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.options.dropout must be in [0, 1), got {dropout!r}")
    if not isinstance(aux_bins, int) or aux_bins < 2:
        raise ConfigError(f"model.options.aux_bins must be an integer ≥ 2, got {aux_bins!r}")
    try:
        low, high = (float(v) for v in depth_range)
    except (TypeError, ValueError):
        raise ConfigError(f"model.options.depth_range must be [low, high] in metres, got {depth_range!r}") from None
    if not 0 < low < high:
        raise ConfigError(f"model.options.depth_range must satisfy 0 < low < high, got {[low, high]}")
