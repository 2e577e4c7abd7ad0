"""ATRC: Brüggemann et al., "Exploring Relational Context for Multi-Task Dense Prediction", ICCV 2021.

Structure (``atrc``), as brdav/atrc's ``src/model/heads/relationalcontext.py`` builds it:

- backbone → the feature maps at strides ≥ ``model.decoder_stride`` (HRNet: the four branches,
  18/36/72/144 channels for HRNet-18) upsampled to the finest of them and concatenated
  (``heads/base.py:_transform_inputs``, ``in_index 0,1,2,3``): ``in`` channels;
- per task a 3×3 conv-BN-ReLU bottleneck to ``C = in // 4`` channels (67 on HRNet-18);
- per task that some context needs labels from, an auxiliary ("initial") head on the
  **detached** concatenated features (``aux_inp = inp.detach()``): 1×1 conv-BN-ReLU (in → in)
  and 1×1 logits; its maps, softmaxed over space per channel, are the task's label regions. The
  final losses still reach these heads through the label contexts; only the backbone is cut off;
- for every ordered pair (target t, source s) one context block chosen by the genotype, each
  with ``a = C // 2`` channels: 0 none, 1 **global** (linear attention: query/key 1×1 conv-BN-ReLU,
  1×1 conv-BN, softplus; ``out = (V Kᵀ) Q / (Σ K)ᵀ Q``), 2 **local** (softmax(q·k / √a) over a
  9×9 window around each pixel at the head's resolution; positions outside the map score 0 and
  carry 0 values, as the CUDA kernels ``heads/ops/locatt_ops`` compute), 3 **t-label** (source
  features pooled by the *target's* auxiliary region maps, then attended to by every target
  pixel), 4 **s-label** (pooled by the *source's* maps); query/key of local and label contexts
  are two 1×1 conv-BN-ReLU, values one (``heads/attention.py``);
- per target: the context outputs concatenated → 1×1 conv-BN whose BN starts at zero (weight
  and bias, ``zero_init``: the head starts as if there were no context) → concatenated with the
  target's features → 1×1 conv-BN-ReLU → Dropout2d(0.05) → 1×1 logits. Context blocks use
  Xavier-uniform convolutions, the logits N(0, 0.01) weights and zero bias (``base.py``).

The search space (``atrc_search``, ``relationalcontextsearch.py``): every pair holds all its
candidates {none, global, local, t-label, and s-label when t ≠ s}, mixed by weights over
learnable logits (``arch_param``, zeros at start, one per choice, index = genotype code); in
training the weights are a Gumbel-softmax sample at temperature τ, in evaluation the one-hot of
the arg-max. Once the softmax of a pair's logits has top-1 − top-2 ≥ 0.3 in a training step the
pair is frozen for good to that one-hot choice. Values' last BN has no affine parameters, the
fused context goes to a 1×1 conv-BN-ReLU without dropout, and every task has an auxiliary head.
``scenemtl search`` (the ``ArchitectureSearch`` training extension) trains it as
``src/main_search.py`` does: τ linear 1.0 → 0.05 and entropy weight linear −0.02 → 0.06 over the steps (``utils_main.py``), the mean
entropy of the pairs' softmaxes added to the loss, the architecture logits under Adam (lr 5e-4,
no weight decay) beside the weights' optimiser; the genotype is the arg-max of every pair.

Genotypes are JSON files in the format of ATRC's released ``genotypes/*.json``:
``{"data": {target: {source: code}}, "step": N}`` with ATRC's task names (``sal`` is
saliency), so those files load as they are and ``scenemtl search`` writes files ATRC's code
loads. ``genotype: null`` gives every pair global context: ATRC's own code has no default (its
ATRC head asserts a genotype file); all-global is its ``GlobalRelationalContextHead`` baseline,
and ``global``, ``local``, ``t-label``, ``s-label`` (or ``none``) name the other fixed-context
baselines. Parameter counts equal the official head's (HRNet-18 NYUD with the released
genotype: 1,200,274 head + 3,860,720 backbone; ``tests/models/test_atrc.py``).

Differences from the official code, and why:

- The auxiliary heads have ATRC's widths (semseg/parts: classes; edge and saliency: 2; depth and
  normals: 40), but the training loop applies each task's own loss to ``aux`` outputs, so the
  outputs are decoded to the task's format: two-class logits to their difference (a sigmoid
  logit; the task's balanced BCE then equals ATRC's weighted two-class cross-entropy exactly),
  depth bins to the expected depth over 40 log-spaced bin centres in ``depth_range`` (ATRC's
  binning: 0.7–10 m), normal clusters to the expected direction over 40 fixed, evenly spread
  unit vectors. ATRC instead trains those two with cross-entropy against binned depth and
  against 40 k-means centroids of its training normals (``criterion.py``, a data file of its
  repository). Other tasks (e.g. ``inverse_depth``) get an auxiliary head of their own width
  (at least 2 region maps; the first channels are the auxiliary prediction).
- Saliency's final output is one logit (ATRC: two, softmax); the same function with one
  fewer output channel (68 parameters fewer at C = 67).
- Local attention is plain PyTorch (81 shifted products, no unfolded copy) instead of the CUDA
  extension, so it runs on any device; the results are the same function.
- ATRC's spatial softmax skips positions where the normalised image equals 255; its images are
  padded with 0, so that never happens, and it is left out.
- Frozen and arg-max choices of the search compute only the chosen block (ATRC computes every
  candidate and multiplies the others by 0): the same outputs, less time; the unchosen blocks of
  a frozen pair (which the genotype drops) then get no gradient, so weight decay leaves them be.
- ``channels`` overrides ``C`` (``model.head_channels`` is not read: ATRC derives its width from
  the backbone); ``window``, ``dropout`` and the search schedules are options with ATRC's values.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.extension import TrainingExtension
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.heads import conv_bn_relu, fp32_conv, upsample_to
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import TASKS, DepthTask, NormalsTask, SegmentationTask, Task
from scenemtl.tasks.binary import BinaryTask

#: genotype codes of ATRC's released files
CONTEXTS = {0: "none", 1: "global", 2: "local", 3: "t-label", 4: "s-label"}
_CONTEXT_NAMES = {"none": 0, "global": 1, "local": 2, "t-label": 3, "tlabel": 3, "s-label": 4, "slabel": 4}
#: our task names that ATRC's files spell differently
_OFFICIAL_NAMES = {"saliency": "sal"}
_FROM_OFFICIAL = {v: k for k, v in _OFFICIAL_NAMES.items()}
_CODES_TEXT = "0 none, 1 global, 2 local, 3 t-label, 4 s-label"

Genotype = dict[str, dict[str, int]]


# --------------------------------------------------------------------------------------------
# genotypes


def official_name(task: str) -> str:
    """The task's name in ATRC's genotype files (``saliency`` is ``sal``)."""
    return _OFFICIAL_NAMES.get(task, task)


def load_genotype(spec: str | os.PathLike | Mapping | None, tasks: Sequence[str]) -> Genotype:
    """The context code of every (target, source) pair of ``tasks`` from a genotype file, mapping or name.

    ``spec``: a JSON file in ATRC's released format, the same content as a mapping, one of the
    context names (every pair the same), or None (every pair global). Errors name the file and key.
    """
    if spec is None:
        spec = "global"
    if isinstance(spec, str) and spec in _CONTEXT_NAMES:
        return {t: {s: _CONTEXT_NAMES[spec] for s in tasks} for t in tasks}
    if isinstance(spec, Mapping):
        content, where = spec, "model.options.genotype"
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.options.genotype: genotype file not found: {path}. Give a JSON file in the format of ATRC's "
                "released genotypes (e.g. written by `scenemtl search`), one of "
                f"{', '.join(sorted(set(_CONTEXT_NAMES) - {'tlabel', 'slabel'}))}, or null (every pair global)"
            )
        try:
            content = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"genotype file {path} is not valid JSON ({error})") from None
        where = f"genotype file {path}"
    else:
        raise ConfigError(f"model.options.genotype must be a file path, a mapping or a context name, got {spec!r}")
    if not isinstance(content, Mapping):
        raise ConfigError(f"{where}: expected a JSON object {{\"data\": {{target: {{source: code}}}}}}")
    table, prefix = (content["data"], "data.") if "data" in content else (content, "")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: '{prefix or 'data'}' must map target tasks to their sources")

    def normalise(mapping: Mapping, key_path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in mapping.items():
            name = _FROM_OFFICIAL.get(key, key)
            if name not in TASKS:
                raise ConfigError(f"{where}: unknown task '{key_path}{key}'; tasks are named as in ATRC's files "
                                  f"({', '.join(official_name(t) for t in TASKS.names())})")
            if name in out:
                raise ConfigError(f"{where}: task '{name}' appears twice in '{key_path.rstrip('.') or 'data'}'")
            out[name] = (key, value)
        return out

    rows = normalise(table, prefix)
    genotype: Genotype = {}
    for target in tasks:
        if target not in rows:
            raise ConfigError(f"{where}: no entry '{prefix}{official_name(target)}' for the target task '{target}'")
        key, row = rows[target]
        if not isinstance(row, Mapping):
            raise ConfigError(f"{where}: '{prefix}{key}' must map source tasks to context codes")
        sources = normalise(row, f"{prefix}{key}.")
        genotype[target] = {}
        for source in tasks:
            if source not in sources:
                raise ConfigError(f"{where}: '{prefix}{key}' has no source '{official_name(source)}'")
            skey, code = sources[source]
            if isinstance(code, bool) or not isinstance(code, int) or code not in CONTEXTS:
                raise ConfigError(f"{where}: '{prefix}{key}.{skey}' = {code!r} is not a context code ({_CODES_TEXT})")
            genotype[target][source] = code
    return genotype


def genotype_json(genotype: Genotype, step: int) -> dict[str, Any]:
    """A genotype in ATRC's released file format (its task names)."""
    data = {official_name(t): {official_name(s): int(c) for s, c in row.items()} for t, row in genotype.items()}
    return {"data": data, "step": int(step)}


def format_genotype(genotype: Genotype) -> str:
    """A target × source table of context names."""
    tasks = list(genotype)
    width = max(len(t) for t in tasks + ["target\\source"])
    cell = max(8, *(len(t) for t in tasks))
    lines = ["target\\source".ljust(width) + "".join(s.rjust(cell + 1) for s in tasks)]
    for t in tasks:
        lines.append(t.ljust(width) + "".join(CONTEXTS[genotype[t][s]].rjust(cell + 1) for s in tasks))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# context blocks


def conv_bn(in_channels: int, out_channels: int, relu: bool, affine: bool = True) -> nn.Sequential:
    """1×1 conv (no bias) → BatchNorm (optionally without affine parameters) → optional ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=False),
                               nn.BatchNorm2d(out_channels, affine=affine)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


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
    scores = torch.stack(
        [(query * padded_key[..., dy:dy + height, dx:dx + width]).sum(1) for dy, dx in offsets], dim=1
    )
    weights = torch.softmax(scores / math.sqrt(key.shape[1]), dim=1)
    out = weights[:, 0:1] * padded_value[..., 0:height, 0:width]
    for i, (dy, dx) in enumerate(offsets[1:], start=1):
        out = out + weights[:, i:i + 1] * padded_value[..., dy:dy + height, dx:dx + width]
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
                return nn.Sequential(conv_bn(channels, att_channels, True), conv_bn(att_channels, att_channels, False),
                                     nn.Softplus())
            return nn.Sequential(conv_bn(channels, att_channels, True), conv_bn(att_channels, att_channels, True))

        self.query_project = projection()
        self.key_project = projection()
        self.value_project = conv_bn(channels, att_channels, True, affine=affine)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, target: torch.Tensor, source: torch.Tensor, target_regions: torch.Tensor | None,
                source_regions: torch.Tensor | None) -> torch.Tensor:
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
        project = conv_bn(att_channels * sources, channels, relu=False)
        nn.init.zeros_(project[1].weight)  # the context starts switched off (ATRC's zero_init)
        nn.init.zeros_(project[1].bias)
    layers: list[nn.Module] = [conv_bn(channels * (2 if sources else 1), channels, relu=True)]
    if dropout is not None:
        layers.append(nn.Dropout2d(dropout))
    return project, nn.Sequential(*layers)


class ContextModule(nn.Module):
    """Fixed genotype: one block per (target, source) pair whose code is not 0, fused per target."""

    def __init__(self, tasks: Sequence[str], genotype: Genotype, channels: int, att_channels: int,
                 window: int, dropout: float) -> None:
        super().__init__()
        self.genotype = {t: dict(genotype[t]) for t in tasks}
        self.blocks = nn.ModuleDict()
        self.project = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        for t in tasks:
            row = nn.ModuleDict({s: ContextBlock(code, channels, att_channels, window)
                                 for s, code in self.genotype[t].items() if code != 0})
            self.blocks[t] = row
            project, fuse = _fusion(channels, att_channels, len(row), dropout)
            if project is not None:
                self.project[t] = project
            self.fuse[t] = fuse

    def region_tasks(self) -> list[str]:
        """Tasks whose label regions some block reads (only these get an auxiliary head, as in ATRC)."""
        tasks = list(self.genotype)
        return [t for t in tasks if any(self.genotype[t][s] == 3 for s in tasks)
                or any(self.genotype[u][t] == 4 for u in tasks)]

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

    def forward(self, target: torch.Tensor, source: torch.Tensor, target_regions: torch.Tensor,
                source_regions: torch.Tensor, temperature: float) -> torch.Tensor:
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
                {s: ContextChoice([1, 2, 3] if s == t else [1, 2, 3, 4], channels, att_channels, window, margin)
                 for s in self.tasks}
            )
            self.project[t], self.fuse[t] = _fusion(channels, att_channels, len(self.tasks), None)

    def region_tasks(self) -> list[str]:
        """Every task: any pair may choose a label context."""
        return list(self.tasks)

    def forward(self, features: Mapping[str, torch.Tensor], regions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each target's features after adding the mixed context of every source."""
        out = {}
        for t in self.tasks:
            contexts = [choice(features[t], features[s], regions[t], regions[s], self.temperature)
                        for s, choice in self.choices[t].items()]
            out[t] = self.fuse[t](torch.cat([features[t], self.project[t](torch.cat(contexts, dim=1))], dim=1))
        return out


# --------------------------------------------------------------------------------------------
# auxiliary ("initial") predictions


class AuxDecoder(nn.Module):
    """Turns an auxiliary head's ATRC-width logits into the task's output format (see the module docstring)."""

    def __init__(self, task: Task, bins: int, depth_range: Sequence[float]) -> None:
        super().__init__()
        # at least two region maps: a label context over one region would be a global average,
        # and its batch norm would see a single value per image
        self.out_channels = task.out_channels
        self.kind, self.channels = "identity", max(task.out_channels, 2)
        if isinstance(task, SegmentationTask):
            pass
        elif isinstance(task, BinaryTask):
            self.kind, self.channels = "binary", 2
        elif type(task) is DepthTask:  # metric depth: ATRC's log-spaced bins (inverse depth has other units)
            low, high = float(depth_range[0]), float(depth_range[1])
            fractions = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
            self.kind, self.channels = "bins", bins
            self.register_buffer("centres", (low * (high / low) ** fractions).float(), persistent=False)
        elif isinstance(task, NormalsTask):
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
        return logits[:, :self.out_channels]

    @torch.no_grad()
    def init_bias(self, conv: nn.Conv2d, prior: torch.Tensor) -> None:
        """Start the head at the task's prior where the decoding is linear."""
        prior = prior.to(conv.bias)
        if self.kind == "identity":
            conv.bias[:prior.numel()].copy_(prior)
        elif self.kind == "binary":
            conv.bias.copy_(torch.cat([torch.zeros_like(prior), prior]))


def fibonacci_sphere(count: int) -> torch.Tensor:
    """``count`` unit vectors spread evenly over the sphere, ``[count, 3]``."""
    i = torch.arange(count, dtype=torch.float64)
    z = 1 - (2 * i + 1) / count
    radius = (1 - z * z).sqrt()
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([radius * phi.cos(), radius * phi.sin(), z], dim=1).float()


# --------------------------------------------------------------------------------------------
# the network


class RelationalContextNet(MultiTaskModel):
    """Backbone → per-task features and auxiliary region maps → relational context → per-task logits."""

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], search: bool, genotype: Genotype | None,
                 channels: int | None, window: int, dropout: float, aux_bins: int, depth_range: Sequence[float],
                 freeze_margin: float = 0.3) -> None:
        super().__init__()
        _check(channels, window, dropout, aux_bins, depth_range)
        self.backbone = Backbone(config.backbone)
        strides = self.backbone.strides
        self.levels = [i for i, s in enumerate(strides) if s >= config.decoder_stride] or [len(strides) - 1]
        in_channels = sum(self.backbone.channels[i] for i in self.levels)
        width = channels if channels is not None else in_channels // 4
        if width < 2:
            raise ConfigError(f"atrc: head width {width} (backbone channels {in_channels} // 4) is too narrow; "
                              "set model.options.channels ≥ 2")
        att = width // 2
        names = list(tasks)
        self.bottleneck = nn.ModuleDict({t: conv_bn_relu(in_channels, width, 3) for t in names})
        if search:
            self.context: nn.Module = SearchContextModule(names, width, att, window, freeze_margin)
        else:
            self.context = ContextModule(names, genotype, width, att, window, dropout)
        region_tasks = self.context.region_tasks()
        self.aux_decode = nn.ModuleDict({t: AuxDecoder(tasks[t], aux_bins, depth_range) for t in region_tasks})
        self.aux_conv = nn.ModuleDict({t: conv_bn_relu(in_channels, in_channels, 1) for t in region_tasks})
        self.aux_logits = nn.ModuleDict({t: nn.Conv2d(in_channels, self.aux_decode[t].channels, 1) for t in region_tasks})
        self.final_logits = nn.ModuleDict({t: nn.Conv2d(width, task.out_channels, 1) for t, task in tasks.items()})
        for conv in [*self.aux_logits.values(), *self.final_logits.values()]:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Final logits of every task and the auxiliary ("initial") predictions, at the input size."""
        sources = self.backbone(image)
        size = image.shape[-2:]
        features = [f.detach().requires_grad_() for f in sources] if self.cut_features else sources
        selected = [features[i] for i in self.levels]
        grid = selected[0].shape[-2:]
        x = torch.cat([selected[0]] + [F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
                                       for f in selected[1:]], dim=1)
        task_features = {t: block(x) for t, block in self.bottleneck.items()}
        detached = x.detach()  # the auxiliary heads do not train the backbone (ATRC)
        aux_logits = {t: fp32_conv(self.aux_logits[t], self.aux_conv[t](detached)) for t in self.aux_logits}
        regions = {t: torch.softmax(logits.flatten(2), dim=-1) for t, logits in aux_logits.items()}
        fused = self.context(task_features, regions)
        final = {t: upsample_to(fp32_conv(conv, fused[t]), size) for t, conv in self.final_logits.items()}
        aux = {t: upsample_to(self.aux_decode[t](logits), size) for t, logits in aux_logits.items()}
        output = ModelOutput(final=final, aux={"initial": aux} if aux else {})
        if self.cut_features:
            output.features, output.feature_sources = tuple(features), tuple(sources)
        return output

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


class ATRCSearch(RelationalContextNet):
    """ATRC's search space: every pair mixes all its candidate contexts (see the module docstring).

    ``set_search_progress(step, total)`` sets the Gumbel temperature and the entropy weight of
    ``search_loss`` on their linear schedules; ``scenemtl search`` calls it before every step.
    """

    needs_unused_parameters = True  # frozen choices: their logits and unchosen blocks get no gradient

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], temperature: Sequence[float],
                 entropy_weight: Sequence[float], arch_lr: float, **options: Any) -> None:
        super().__init__(config, tasks, search=True, genotype=None, **options)
        self.temperature_schedule = _pair(temperature, "temperature", positive=True)
        self.entropy_schedule = _pair(entropy_weight, "entropy_weight")
        if not arch_lr > 0:
            raise ConfigError(f"model.options.arch_lr must be > 0, got {arch_lr}")
        self.arch_lr = float(arch_lr)
        self.entropy_weight = self.entropy_schedule[0]
        self.context.temperature = self.temperature_schedule[0]

    @property
    def temperature(self) -> float:
        """The current Gumbel-softmax temperature."""
        return self.context.temperature

    def set_search_progress(self, step: int, total: int) -> None:
        """Temperature and entropy weight at ``step`` (0-based, before it is taken) of ``total``."""
        left = 1.0 - step / max(total, 1)
        (t0, t1), (e0, e1) = self.temperature_schedule, self.entropy_schedule
        self.context.temperature = left * (t0 - t1) + t1
        self.entropy_weight = left * (e0 - e1) + e1

    def choices(self) -> dict[str, dict[str, ContextChoice]]:
        """The ``ContextChoice`` of every (target, source) pair."""
        return {t: dict(row.items()) for t, row in self.context.choices.items()}

    def arch_parameters(self) -> list[nn.Parameter]:
        """The choice logits (ATRC trains them with their own optimiser)."""
        return [c.arch_param for row in self.choices().values() for c in row.values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def entropy(self) -> torch.Tensor:
        """Mean over pairs of the entropy of the softmax of their logits."""
        terms = [-(c.arch_param.softmax(-1) * c.arch_param.log_softmax(-1)).sum()
                 for row in self.choices().values() for c in row.values()]
        return torch.stack(terms).mean()

    def search_loss(self) -> torch.Tensor:
        """The entropy term added to the loss: ``entropy_weight × entropy`` (negative weight: explore)."""
        return self.entropy_weight * self.entropy()

    def genotype(self) -> Genotype:
        """The arg-max choice of every pair."""
        return {t: {s: c.choice() for s, c in row.items()} for t, row in self.choices().items()}

    def frozen(self) -> int:
        """How many pairs are frozen."""
        return sum(c.frozen for row in self.choices().values() for c in row.values())

    def training_extension(self) -> ArchitectureSearch:
        """ATRC's search step (one instance per model)."""
        if "_search" not in self.__dict__:
            self.__dict__["_search"] = ArchitectureSearch(self)  # not a submodule
        return self.__dict__["_search"]


GENOTYPE_FILE = "genotype.json"


class ArchitectureSearch(TrainingExtension):
    """ATRC's search as ``src/main_search.py`` and ``src/model/search_pl_model.py`` run it.

    The network's weights train with the experiment's optimiser and schedule (ATRC: SGD, poly,
    gradient clipping 10), the choice logits of every (target, source) pair with Adam
    (``model.options.arch_lr``, 5e-4, no weight decay), both from the same loss in the same step;
    the loss adds ``entropy_weight × mean entropy`` of the pairs' softmaxes; before each step the
    Gumbel temperature and the entropy weight move linearly (1.0 → 0.05 and −0.02 → 0.06 over
    ``train.steps``). Evaluation uses the arg-max architecture. The genotype (the arg-max of every
    pair, in the format of ATRC's released ``genotypes/*.json``) is written to
    ``<run>/genotype.json`` at every checkpoint and at the end; train ``atrc`` with it through
    ``model.options.genotype``. The choice logits' optimiser state is saved for ``--resume``.
    """

    name = "search"

    def __init__(self, model: ATRCSearch) -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=model.arch_lr, weight_decay=0.0)

    def check(self, config: Any) -> None:
        """fp16 and torch.compile are not supported (the choices change the graph)."""
        if config.train.precision == "fp16":
            raise ConfigError("ATRC's search runs in train.precision fp32 or bf16 (not fp16)")
        if config.train.compile:
            raise ConfigError("ATRC's search does not support train.compile (the choices change the graph); set it "
                              "to false")

    def parameters(self) -> list[nn.Parameter]:
        """The choice logits."""
        return self.model.arch_parameters()

    def before_step(self, step: int, total: int) -> torch.Tensor:
        """Schedules at this step; the entropy term (it depends on the logits only)."""
        self.model.set_search_progress(step, total)
        return self.model.search_loss()

    def step(self) -> None:
        """Adam on the choice logits."""
        self.optimizer.step()

    def zero_grad(self) -> None:
        """Clear the choice logits' gradients."""
        self.optimizer.zero_grad(set_to_none=True)

    def log_values(self) -> dict[str, Any]:
        """Temperature, entropy weight and entropy, and how many pairs are frozen."""
        model = self.model
        return {"temperature": model.temperature, "entropy_weight": model.entropy_weight,
                "entropy": float(model.entropy().detach()), "frozen_pairs": model.frozen()}

    def state_dict(self) -> dict[str, Any]:
        """The choice logits' optimiser."""
        return {"arch_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the choice logits' optimiser."""
        if "arch_optimizer" in state:
            self.optimizer.load_state_dict(state["arch_optimizer"])

    def write_artifacts(self, run_dir: Path, step: int, out: Path | None = None) -> list[Path]:
        """The genotype in ATRC's released format, atomically, to ``<run>/genotype.json`` (and ``out``)."""
        text = json.dumps(genotype_json(self.model.genotype(), step), indent=4) + "\n"
        paths = [run_dir / GENOTYPE_FILE] + ([Path(out)] if out is not None else [])
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)
        return paths

    def summary(self, run_dir: Path) -> list[str]:
        """The genotype table and how to train ATRC with it."""
        path = run_dir / GENOTYPE_FILE
        return [format_genotype(self.model.genotype()), f"genotype: {path}",
                f"train ATRC with it: --set model.arch=atrc --set model.options.genotype={path}"]


def _pair(value: Sequence[float], name: str, positive: bool = False) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"model.options.{name} must be [start, end] (linear over the steps), got {value!r}") from None
    if positive and (start <= 0 or end <= 0):
        raise ConfigError(f"model.options.{name} must be positive, got {[start, end]}")
    return start, end


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


@register_model("atrc", tiny={"channels": 8})
def atrc(config: ModelConfig, tasks: Mapping[str, Task], genotype: str | Mapping | None = None,
         channels: int | None = None, window: int = 9, dropout: float = 0.05, aux_bins: int = 40,
         depth_range: Sequence[float] = (0.7, 10.0)) -> ATRC:
    """ATRC with a genotype (a released/searched JSON file, a context name, or null: every pair global)."""
    return ATRC(config, tasks, load_genotype(genotype, list(tasks)), channels=channels, window=window,
                dropout=dropout, aux_bins=aux_bins, depth_range=depth_range)


@register_model("atrc_search", tiny={"channels": 8})
def atrc_search(config: ModelConfig, tasks: Mapping[str, Task], channels: int | None = None, window: int = 9,
                aux_bins: int = 40, depth_range: Sequence[float] = (0.7, 10.0),
                temperature: Sequence[float] = (1.0, 0.05), entropy_weight: Sequence[float] = (-0.02, 0.06),
                freeze_margin: float = 0.3, arch_lr: float = 5e-4) -> ATRCSearch:
    """ATRC's architecture search space; train it with ``scenemtl search`` to get a genotype."""
    if not 0 < freeze_margin <= 1:
        raise ConfigError(f"model.options.freeze_margin must be in (0, 1], got {freeze_margin!r}")
    return ATRCSearch(config, tasks, temperature=temperature, entropy_weight=entropy_weight, arch_lr=arch_lr,
                      channels=channels, window=window, dropout=0.0, aux_bins=aux_bins, depth_range=depth_range,
                      freeze_margin=freeze_margin)
