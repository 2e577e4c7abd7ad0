"""The one path from ``model.backbone`` to a timm network, and the family a timm model belongs to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import nn

from scenemtl.config import BackboneConfig
from scenemtl.errors import ConfigError, ScenemtlError

#: backbones known to work as dense feature extractors (any timm model with ``features_only`` does)
SUGGESTED_BACKBONES = (
    "test_resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "regnetx_002",
    "mobilenetv3_large_100",
    "efficientnet_b0",
    "convnext_tiny",
    "hrnet_w18_small_v2",
    "hrnet_w48",
    "vit_small_patch16_384",
    "vit_base_patch16_384",
    "vit_large_patch16_384",
    "swin_tiny_patch4_window7_224",
    "swin_small_patch4_window7_224",
    "swin_base_patch4_window12_384",
    "swin_large_patch4_window12_384",
)

#: timm modules (``timm.models.<module>``) whose models form one family under a shorter name
_FAMILIES = {
    "vision_transformer": "vit",
    "vision_transformer_hybrid": "vit",
    "deit": "vit",
    "swin_transformer": "swin",
    "swin_transformer_v2": "swinv2",
    "swin_transformer_v2_cr": "swinv2_cr",
}
#: the Swin Transformer families (v1, v2, v2 as in timm's ``swin_transformer_v2_cr``)
SWIN_FAMILIES = ("swin", "swinv2", "swinv2_cr")
#: the plain Vision Transformer families: timm's ``VisionTransformer`` (DINOv2, SigLIP 2, the seeds' ViTs) and
#: ``Eva`` (EVA-02, DINOv3, Perception Encoder: RoPE), both read through ``forward_intermediates``
VIT_FAMILIES = ("vit", "eva")


def check_known(name: str) -> None:
    """ConfigError, with similar names, unless timm knows the model ``name`` (``resnet50`` or ``resnet50.tv_in1k``)."""
    if not timm.is_model(name):
        near = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        hint = f" Similar timm models: {', '.join(near)}." if near else ""
        raise ConfigError(f"unknown backbone 'model.backbone.name: {name}'.{hint} See `scenemtl list`.")


def backbone_family(name: str) -> str:
    """The family of the timm model ``name``, read from timm's registry rather than guessed from the name.

    It is the module of ``timm.models`` that defines the model's architecture: ``resnet`` (every
    ResNet variant, ``test_resnet`` too), ``hrnet``, ``convnext``, ``regnet``, ``efficientnet``, …;
    with ``vit`` for timm's ``VisionTransformer`` models (``vision_transformer``, its hybrids and
    DeiT; ``test_vit`` too) and ``swin`` for Swin v1 (``swinv2``, ``swinv2_cr`` for v2). ConfigError
    for a name timm does not know.
    """
    check_known(name)
    module = timm.models.model_entrypoint(timm.models.get_arch_name(name)).__module__.rsplit(".", 1)[-1]
    return _FAMILIES.get(module, module)


def create_timm_model(config: BackboneConfig, *, weights: bool = True, **kwargs: Any) -> nn.Module:
    """``timm.create_model(config.name, **kwargs)`` with the weights ``model.backbone.weights`` names.

    ``config.weights``: None (random initialisation), ``timm`` (timm's hub) or a local file
    (timm's ``pretrained_cfg_overlay``); ``weights=False`` builds without them whatever the config
    says (a model only measured, e.g. on the meta device). ``kwargs`` are the caller's (its options
    and ``config.options``). Failures are one-line errors naming the option to change: a
    ConfigError for an unknown name, a missing weight file or options timm rejects, a
    ScenemtlError for weights that do not load.
    """
    check_known(config.name)
    pretrained, overlay = _weights(config) if weights else (False, None)
    try:
        return timm.create_model(config.name, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)
    except TypeError as error:
        raise ConfigError(f"backbone '{config.name}' rejects model.backbone.options: {error}") from None
    except (OSError, RuntimeError) as error:
        if pretrained:
            raise ScenemtlError(
                f"cannot load weights '{config.weights}' for backbone '{config.name}': {error}. "
                "Give a local file in model.backbone.weights, or null for random initialisation."
            ) from None
        if kwargs.get("features_only"):
            raise ConfigError(
                f"backbone '{config.name}' cannot serve as a dense feature extractor ({error}); see `scenemtl list backbones`"
            ) from None
        raise ConfigError(f"backbone '{config.name}' cannot be built with model.backbone.options ({error})") from None


def require_checkpointing_timm(enabled: bool) -> None:
    """ConfigError when activation checkpointing is asked for with a timm older than 1.0.31."""
    # earlier timm releases checkpoint feature stages after an in-place ReLU, whose backward fails
    # ("modified by an inplace operation"); 1.0.31 is the oldest release this guard admits
    if enabled and _version(timm.__version__) < (1, 0, 31):
        raise ConfigError(
            f"train.activation_checkpointing needs timm ≥ 1.0.31 (installed: {timm.__version__}): pip install -U timm, or set it to false"
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def _weights(config: BackboneConfig) -> tuple[bool, dict | None]:
    if config.weights is None:
        return False, None
    if config.weights == "timm":
        return True, None
    path = Path(config.weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.backbone.weights: file not found: {path}. Give a local weight file, 'timm' to download, or null.")
    return True, {"file": str(path)}
