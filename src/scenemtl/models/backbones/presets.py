"""Foundation-model encoders: which timm models they are, their licence, the blocks the decoders read and the
input normalisation their weights expect. The one place that decides (``foundation``).

A timm model is a foundation encoder when its pretrained weights (timm's ``pretrained_cfg``: the tag of
the weights named, or the model's default) are those of one of these releases:

======================  =================================  ==========================================
family                  timm models (tag)                  licence (timm's ``pretrained_cfg``)
======================  =================================  ==========================================
DINOv2                  ``vit_*_patch14_dinov2`` (lvd142m)  Apache-2.0
DINOv2 with registers   ``vit_*_patch14_reg4_dinov2``       Apache-2.0
DINOv3                  ``vit_*_patch16_dinov3`` (lvd1689m, DINOv3 License
                        sat493m)
SigLIP 2                ``vit_*_siglip_gap_*`` (v2_webli)   Apache-2.0
EVA-02                  ``eva02_*``                         MIT
Perception Encoder      ``vit_pe_spatial_*`` (fb)           Apache-2.0
======================  =================================  ==========================================

For them ``model.backbone.normalisation: auto`` (the default) feeds the encoder images normalised as its
weights were trained (the ``pretrained_cfg`` mean and std: SigLIP 2 and PE 0.5/0.5, EVA-02 CLIP's, DINO
ImageNet's) instead of the dataset's, and a ``Backbone`` reads four evenly spaced blocks (the last of
each quarter: 3/6/9/12 of 12, 6/12/18/24 of 24, as ViT-Adapter and DPT) unless ``out_indices`` says
otherwise. Other models keep the dataset's normalisation (the seeds' ViTs use ImageNet's with weights
whose ``pretrained_cfg`` says 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import timm

from scenemtl.errors import ConfigError


@dataclass(frozen=True)
class Foundation:
    """What scenemtl knows of a foundation encoder (see the module docstring)."""

    family: str
    licence: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: where its weights come from (timm's hub id)
    source: str


#: (family, timm module, weight tags) — the families the module docstring lists
_TAGS = (
    ("DINOv3", "eva", ("lvd1689m", "sat493m")),
    ("DINOv2", "vision_transformer", ("lvd142m",)),
    ("SigLIP 2", "vision_transformer", ("v2_webli",)),
    ("Perception Encoder", "eva", ("fb",)),
)
#: releases known by their architecture (their weights carry several tags): EVA-02
_ARCHES = (("EVA-02", "eva", "eva02_"),)


def foundation(name: str) -> Foundation | None:
    """The foundation family of the timm model ``name`` (with or without a weight tag), or None."""
    if not timm.is_model(name):
        raise ConfigError(f"unknown backbone 'model.backbone.name: {name}'; see `scenemtl list backbones`")
    arch = timm.models.get_arch_name(name)
    module = timm.models.model_entrypoint(arch).__module__.rsplit(".", 1)[-1]
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    family = None
    for label, home, tags in _TAGS:
        if module == home and (cfg.tag or "") in tags:
            family = label
    for label, home, start in _ARCHES:
        if module == home and arch.startswith(start):
            family = label
    if family is None:
        return None
    if family == "DINOv2" and "_reg" in arch:
        family = "DINOv2 with registers"
    return Foundation(
        family=family,
        licence=str(cfg.license or "see the weights' model card"),
        mean=tuple(float(v) for v in cfg.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.std),  # type: ignore[arg-type]
        source=str(cfg.hf_hub_id or name),
    )


def quarter_blocks(depth: int) -> tuple[int, ...]:
    """0-based indices of the last block of each quarter (timm's ``out_indices``): 2/5/8/11 of 12."""
    return tuple(sorted({max(1, depth * k // 4) - 1 for k in range(1, 5)}))


#: one model per family, for `scenemtl list backbones` (the ViT-L of each where there is one)
EXAMPLES = (
    "vit_large_patch14_dinov2",
    "vit_large_patch14_reg4_dinov2",
    "vit_large_patch16_dinov3",
    "vit_large_patch16_siglip_gap_384.v2_webli",
    "eva02_large_patch14_448",
    "vit_pe_spatial_large_patch14_448",
)
