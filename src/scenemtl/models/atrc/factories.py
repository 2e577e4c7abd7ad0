"""The registered ATRC architectures: ``atrc`` (a fixed genotype) and ``atrc_search`` (the search space)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import PositiveInt

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.atrc.genotype import load_genotype
from scenemtl.models.atrc.model import ATRC
from scenemtl.models.atrc.search import ATRCSearch
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task


@register_model("atrc", tiny={"channels": 8})
def atrc(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    genotype: str | Mapping | None = None,
    channels: PositiveInt | None = None,
    window: PositiveInt = 9,
    dropout: float = 0.05,
    aux_bins: PositiveInt = 40,
    depth_range: Sequence[float] = (0.7, 10.0),
    decoder_stride: PositiveInt = 8,
) -> ATRC:
    """ATRC with a genotype (a released/searched JSON file, a context name, or null: every pair global);
    the heads read the backbone levels of stride ≥ ``decoder_stride`` (4 with HRNet: all four branches)."""
    return ATRC(
        config,
        tasks,
        load_genotype(genotype, list(tasks)),
        channels=channels,
        window=window,
        dropout=dropout,
        aux_bins=aux_bins,
        depth_range=depth_range,
        decoder_stride=decoder_stride,
    )


@register_model("atrc_search", tiny={"channels": 8})
def atrc_search(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    channels: PositiveInt | None = None,
    window: PositiveInt = 9,
    aux_bins: PositiveInt = 40,
    depth_range: Sequence[float] = (0.7, 10.0),
    temperature: Sequence[float] = (1.0, 0.05),
    entropy_weight: Sequence[float] = (-0.02, 0.06),
    freeze_margin: float = 0.3,
    arch_lr: float = 5e-4,
    decoder_stride: PositiveInt = 8,
) -> ATRCSearch:
    """ATRC's architecture search space; train it with ``scenemtl search`` to get a genotype."""
    if not 0 < freeze_margin <= 1:
        raise ConfigError(f"model.options.freeze_margin must be in (0, 1], got {freeze_margin!r}")
    return ATRCSearch(
        config,
        tasks,
        temperature=temperature,
        entropy_weight=entropy_weight,
        arch_lr=arch_lr,
        channels=channels,
        window=window,
        dropout=0.0,
        aux_bins=aux_bins,
        depth_range=depth_range,
        freeze_margin=freeze_margin,
        decoder_stride=decoder_stride,
    )
