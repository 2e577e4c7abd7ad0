"""Backbone adapters over timm: what the architectures ask of an encoder, and the one way timm models are built.

``factory``: ``create_timm_model`` (the one call of ``timm.create_model``, with
``model.backbone.weights``), ``backbone_family`` (timm's family of a model, from its registry) and
the activation-checkpointing guard; ``features``: ``Backbone``, any timm model as multi-scale
feature maps (``residual_layers`` for architectures that work inside a ResNet); ``vit``:
``ViTBackbone``, a timm Vision Transformer (or EVA) read at chosen blocks through ``forward_intermediates``
(InvPT), or run block by block (TaskPrompter's prompting).
"""

from scenemtl.models.backbones.factory import (
    SUGGESTED_BACKBONES,
    SWIN_FAMILIES,
    VIT_FAMILIES,
    backbone_family,
    check_known,
    create_timm_model,
    require_checkpointing_timm,
)
from scenemtl.models.backbones.features import PYRAMID_STRIDES, Backbone, MultiLevelNeck, ResidualLayer, Stage, behave_like_seg_hrnet
from scenemtl.models.backbones.vit import ViTBackbone, check_layers, default_layers

__all__ = [
    "SUGGESTED_BACKBONES",
    "SWIN_FAMILIES",
    "VIT_FAMILIES",
    "Backbone",
    "MultiLevelNeck",
    "PYRAMID_STRIDES",
    "ResidualLayer",
    "Stage",
    "ViTBackbone",
    "backbone_family",
    "behave_like_seg_hrnet",
    "check_known",
    "check_layers",
    "create_timm_model",
    "default_layers",
    "require_checkpointing_timm",
]
