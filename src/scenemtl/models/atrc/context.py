"""ATRC's context blocks (global, local, t-label, s-label), their per-target fusion, and the search space's mixtures of them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.models.atrc.genotype import Genotype
from scenemtl.models.layers import conv_norm_act


def local_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, window: int) -> torch.Tensor:
    """Softmax(q·k / √d) over the ``window``² positions around each pixel, applied to ``value``.

    Positions outside the map score 0 and carry a zero value (ATRC's local-attention kernels).
    Computed as shifted products so that no ``window``²-fold copy of key or value is stored.
    """
    r = window // 2
    height, width = query.shape[-2:]
    padded_key = F.pad(key, (r, r, r, r))
    padded_value = F.pad(value, (r, r, r, r))
    offsets = [(dy, dx) for dy in range(window) for dx in range(window)]
    scores = torch.stack([(query * padded_key[..., dy : dy + height, dx : dx + width]).sum(1) for dy, dx in offsets], dim=1)
    weights = torch.softmax(scores / math.sqrt(key.shape[1]), dim=1)
    out = weights[:, 0:1] * padded_value[..., 0:height, 0:width]
    for i, (dy, dx) in enumerate(offsets[1:], start=1):
        out = out + weights[:, i : i + 1] * padded_value[..., dy : dy + height, dx : dx + width]
    return out


class ContextBlock(nn.Module):
    """One of ATRC's context blocks (global, local, t-label, s-label) from source to target features."""

    def __init__(self, kind: int, channels: int, att_channels: int, window: int = 9, affine: bool = True) -> None:
        super().__init__()
        if kind not in (1, 2, 3, 4):
            raise ValueError(f"context code {kind} has no block")
        self.kind, self.window = kind, window

        def projection() -> nn.Sequential:
            if kind == 1:  # global: non-negative query/key features for linear attention
                return nn.Sequential(
                    conv_norm_act(channels, att_channels, 1), conv_norm_act(att_channels, att_channels, 1, act=None), nn.Softplus()
                )
            return nn.Sequential(conv_norm_act(channels, att_channels, 1), conv_norm_act(att_channels, att_channels, 1))

        self.query_project = projection()
        self.key_project = projection()
        self.value_project = conv_norm_act(channels, att_channels, 1, affine=affine)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)

    def forward(
        self, target: torch.Tensor, source: torch.Tensor, target_regions: torch.Tensor | None, source_regions: torch.Tensor | None
    ) -> torch.Tensor:
        """Context for the target's pixels, ``[B, att_channels, H, W]``; regions: ``[B, K, H·W]`` spatial softmaxes."""
        batch, _, height, width = target.shape
        if self.kind == 1:
            key = self.key_project(source).flatten(2).float()  # B×d×N
            value = self.value_project(source).flatten(2).float()  # B×m×N
            query = self.query_project(target).flatten(2).float()  # B×d×N
            with torch.autocast(device_type=target.device.type, enabled=False):
                summary = value @ key.transpose(1, 2)  # B×m×d
                norm = key.sum(2).unsqueeze(1) @ query  # B×1×N
                out = (summary @ query) / norm.clamp_min(1e-12)
            return out.view(batch, -1, height, width).to(target.dtype)
        if self.kind == 2:
            query, key = self.query_project(target), self.key_project(source)
            return local_attention(query, key, self.value_project(source), self.window)
        regions = target_regions if self.kind == 3 else source_regions
        # region descriptors: the source's features averaged under each region map, as a K×1 "image"
        pooled = regions.to(source.dtype) @ source.flatten(2).transpose(1, 2)  # B×K×C
        context = pooled.transpose(1, 2).unsqueeze(3)  # B×C×K×1
        key = self.key_project(context).flatten(2)  # B×a×K
        value = self.value_project(context).flatten(2).transpose(1, 2)  # B×K×a
        query = self.query_project(target).flatten(2).transpose(1, 2)  # B×N×a
        attention = torch.softmax(query @ key / math.sqrt(query.shape[-1]), dim=-1)  # B×N×K
        return (attention @ value).transpose(1, 2).reshape(batch, -1, height, width)


def _fusion(channels: int, att_channels: int, sources: int, dropout: float | None) -> tuple[nn.Module | None, nn.Module]:
    """ATRC's per-target fusion: zero-started projection of the contexts, then 1×1 conv-BN-ReLU (+ dropout)."""
    project = None
    if sources:
        project = conv_norm_act(att_channels * sources, channels, 1, act=None)
        nn.init.zeros_(project[1].weight)  # the context starts switched off (ATRC's zero_init)
        nn.init.zeros_(project[1].bias)
    layers: list[nn.Module] = [conv_norm_act(channels * (2 if sources else 1), channels, 1)]
    if dropout is not None:
        layers.append(nn.Dropout2d(dropout))
    return project, nn.Sequential(*layers)


class ContextModule(nn.Module):
    """Fixed genotype: one block per (target, source) pair whose code is not 0, fused per target."""

    def __init__(self, tasks: Sequence[str], genotype: Genotype, channels: int, att_channels: int, window: int, dropout: float) -> None:
        super().__init__()
        self.genotype = {t: dict(genotype[t]) for t in tasks}
        self.blocks = nn.ModuleDict()
        self.project = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        for t in tasks:
            row = nn.ModuleDict(
                {s: ContextBlock(code, channels, att_channels, window) for s, code in self.genotype[t].items() if code != 0}
            )
            self.blocks[t] = row
            project, fuse = _fusion(channels, att_channels, len(row), dropout)
            if project is not None:
                self.project[t] = project
            self.fuse[t] = fuse

    def region_tasks(self) -> list[str]:
        """Tasks whose label regions some block reads (only these get an auxiliary head, as in ATRC)."""
        tasks = list(self.genotype)
        return [t for t in tasks if any(self.genotype[t][s] == 3 for s in tasks) or any(self.genotype[u][t] == 4 for u in tasks)]

    def forward(self, features: Mapping[str, torch.Tensor], regions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each target's features after adding its sources' context."""
        out = {}
        for t, row in self.blocks.items():
            contexts = [block(features[t], features[s], regions.get(t), regions.get(s)) for s, block in row.items()]
            fused = features[t]
            if contexts:
                fused = torch.cat([fused, self.project[t](torch.cat(contexts, dim=1))], dim=1)
            out[t] = self.fuse[t](fused)
        return out


class ContextChoice(nn.Module):
    """Every candidate context of one pair, mixed by Gumbel-softmax weights over learnable logits.

    ``arch_param[i]`` is the logit of genotype code ``i`` (0 none, 1 global, 2 local, 3 t-label,
    4 s-label where offered). Training: a Gumbel-softmax sample at ``temperature``, until the
    softmax's top-1 − top-2 reaches ``margin``; the pair is then frozen to that one-hot choice
    for good (``fixed_weights``, saved with the weights). Evaluation: the one-hot of the arg-max.
    """

    def __init__(self, codes: Sequence[int], channels: int, att_channels: int, window: int, margin: float) -> None:
        super().__init__()
        self.codes = list(codes)
        if self.codes != list(range(1, len(self.codes) + 1)):
            raise ValueError(f"candidate codes must be 1..n in order, got {self.codes}")
        self.att_channels, self.margin = att_channels, margin
        self.candidates = nn.ModuleList(ContextBlock(c, channels, att_channels, window, affine=False) for c in self.codes)
        self.arch_param = nn.Parameter(torch.zeros(len(self.codes) + 1))
        self.register_buffer("fixed_weights", torch.zeros(len(self.codes) + 1))

    @property
    def frozen(self) -> bool:
        """Whether the choice is fixed for good."""
        return bool(self.fixed_weights.any())

    def choice(self) -> int:
        """The genotype code of this pair: the arg-max of the logits."""
        return int(self.arch_param.detach().argmax())

    def mixture(self, temperature: float) -> tuple[torch.Tensor, int | None]:
        """The weights of none and each candidate, and the chosen index when they are one-hot."""
        if self.frozen:
            return self.fixed_weights, int(self.fixed_weights.argmax())
        if not self.training:
            index = self.choice()
            return F.one_hot(torch.tensor(index, device=self.arch_param.device), len(self.codes) + 1).float(), index
        top = torch.softmax(self.arch_param.detach().float(), dim=-1).topk(2)
        if float(top.values[0] - top.values[1]) >= self.margin:
            index = int(top.indices[0])
            self.fixed_weights.zero_()
            self.fixed_weights[index] = 1.0
            return self.fixed_weights, index
        return F.gumbel_softmax(self.arch_param, tau=temperature, hard=False, dim=-1), None

    def forward(
        self, target: torch.Tensor, source: torch.Tensor, target_regions: torch.Tensor, source_regions: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """The weighted sum of the candidates' contexts (none contributes zero)."""
        weights, index = self.mixture(temperature)
        if index is not None:  # one-hot: only the chosen block matters
            if index == 0:
                return target.new_zeros(target.shape[0], self.att_channels, *target.shape[-2:])
            return self.candidates[index - 1](target, source, target_regions, source_regions)
        weights = weights.to(target.dtype)
        out = None
        for i, block in enumerate(self.candidates, start=1):
            term = weights[i] * block(target, source, target_regions, source_regions)
            out = term if out is None else out + term
        return out


class SearchContextModule(nn.Module):
    """ATRC's search space: a ``ContextChoice`` for every pair, fused per target (no dropout)."""

    def __init__(self, tasks: Sequence[str], channels: int, att_channels: int, window: int, margin: float) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.temperature = 1.0
        self.choices = nn.ModuleDict()
        self.project = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        for t in self.tasks:
            self.choices[t] = nn.ModuleDict(
                {s: ContextChoice([1, 2, 3] if s == t else [1, 2, 3, 4], channels, att_channels, window, margin) for s in self.tasks}
            )
            self.project[t], self.fuse[t] = _fusion(channels, att_channels, len(self.tasks), None)

    def region_tasks(self) -> list[str]:
        """Every task: any pair may choose a label context."""
        return list(self.tasks)

    def forward(self, features: Mapping[str, torch.Tensor], regions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each target's features after adding the mixed context of every source."""
        out = {}
        for t in self.tasks:
            contexts = [choice(features[t], features[s], regions[t], regions[s], self.temperature) for s, choice in self.choices[t].items()]
            out[t] = self.fuse[t](torch.cat([features[t], self.project[t](torch.cat(contexts, dim=1))], dim=1))
        return out
