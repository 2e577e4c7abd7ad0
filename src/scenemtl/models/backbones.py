"""Backbones from timm: multi-scale features with their channels and strides."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
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
)


class Backbone(nn.Module):
    """A timm ``features_only`` network; ``channels`` and ``strides`` describe its outputs."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.name = config.name
        if not timm.is_model(config.name):
            near = timm.list_models(f"*{config.name.split('.')[0][:6]}*")[:8]
            hint = f" Similar timm models: {', '.join(near)}." if near else ""
            raise ConfigError(f"unknown backbone 'model.backbone.name: {config.name}'.{hint} See `scenemtl list`.")
        kwargs = dict(config.options)
        if config.out_indices is not None:
            kwargs["out_indices"] = config.out_indices
        pretrained, overlay = _weights(config)
        try:
            self.body = timm.create_model(
                config.name, features_only=True, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs
            )
        except TypeError as error:
            raise ConfigError(f"backbone '{config.name}' rejects model.backbone.options: {error}") from None
        except (OSError, RuntimeError) as error:
            if pretrained:
                raise ScenemtlError(
                    f"cannot load weights '{config.weights}' for backbone '{config.name}': {error}. "
                    "Give a local file in model.backbone.weights, or null for random initialisation."
                ) from None
            raise ConfigError(
                f"backbone '{config.name}' cannot serve as a dense feature extractor ({error}); "
                "see `scenemtl list backbones`"
            ) from None
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """timm's gradient checkpointing of the backbone's stages (needs timm ≥ 1.0.31)."""
        # timm 1.0.29 and 1.0.30 checkpoint feature stages after an in-place ReLU, and backward
        # then fails ("modified by an inplace operation"); 1.0.31 works (both seen here)
        if enabled and _version(timm.__version__) < (1, 0, 31):
            raise ConfigError(
                f"train.activation_checkpointing needs timm ≥ 1.0.31 (installed: {timm.__version__}): "
                "pip install -U timm, or set it to false"
            )
        self.body.set_grad_checkpointing(enabled)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps, finest first."""
        return self.body(image)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def _weights(config: BackboneConfig) -> tuple[bool, dict | None]:
    if config.weights is None:
        return False, None
    if config.weights == "timm":
        return True, None
    path = Path(config.weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.backbone.weights: file not found: {path}. Give a local weight file, 'timm' to download, or null."
        )
    return True, {"file": str(path)}

