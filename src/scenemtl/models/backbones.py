"""Backbones from timm: multi-scale features with their channels and strides."""

from __future__ import annotations

from collections.abc import Iterable
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
    "vit_small_patch16_384",
    "vit_base_patch16_384",
    "vit_large_patch16_384",
    "swin_tiny_patch4_window7_224",
    "swin_small_patch4_window7_224",
    "swin_base_patch4_window12_384",
    "swin_large_patch4_window12_384",
)


class Backbone(nn.Module):
    """A timm ``features_only`` network; ``channels`` and ``strides`` describe its outputs.

    Dilated ResNets: ``options: {output_stride: 8}`` (or 16), timm's dilation of the last stages
    (strides then read 2, 4, 8, 8, 8). HRNets return their raw branches (timm's
    ``feature_location=''``, 18/36/72/144 channels for W18) unless ``options.feature_location`` says
    otherwise: timm's default ('incre') adds the classification head's channel-increase blocks,
    which the dense-prediction HRNets of the seeds (ATRC, MTI-Net) do not have. ``fuse: concat``
    upsamples every level of stride ≥ 4 to 1/4 (bilinear) and concatenates them into one map, the
    representation those seeds' heads read (270 channels for W18, 720 for W48). HRNets need sides
    divisible by 32: other inputs are zero-padded at the bottom and right and the maps cropped back
    to ⌈side / stride⌉, so any image size works. timm's HRNet is made to compute as the seeds'
    segmentation HRNet (``behave_like_seg_hrnet``: bilinear fuse upsampling, norm momentum 0.01).

    Transformers: Swin's four stages come as NCHW maps at strides 4–32 (timm's NHWC outputs are
    permuted), at any size (timm's dynamic size and window padding; sides padded to a multiple
    of 32 inside as for HRNet). A ViT gives its blocks as maps at stride 16 (timm's feature getter;
    position embeddings resampled to the input's grid, sides padded to a multiple of the patch).
    The transformer architectures (``invpt``, ``taskprompter``) read ViTs through
    ``models/vit.ViTBackbone`` instead, which chooses the blocks and runs them itself.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.name = config.name
        if not timm.is_model(config.name):
            near = timm.list_models(f"*{config.name.split('.')[0][:6]}*")[:8]
            hint = f" Similar timm models: {', '.join(near)}." if near else ""
            raise ConfigError(f"unknown backbone 'model.backbone.name: {config.name}'.{hint} See `scenemtl list`.")
        kwargs = dict(config.options)
        # HRNet's fuse layers upsample by fixed factors: it needs sides divisible by its coarsest stride
        self.pad_multiple: int | None = None
        family = config.name.split(".")[0]
        if family.startswith("hrnet"):
            kwargs.setdefault("feature_location", "")
            self.pad_multiple = 32
        elif family.startswith("swin"):
            kwargs.setdefault("strict_img_size", False)
            kwargs.setdefault("dynamic_img_size", True)
            self.pad_multiple = 32
        elif family.startswith(("vit_", "test_vit", "deit")):
            kwargs.setdefault("dynamic_img_size", True)
            self.pad_multiple = 16
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
        # Swin's features are channels-last
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        if family.startswith("hrnet"):
            behave_like_seg_hrnet(self.body.modules())
        self.fuse_levels: list[int] | None = None
        if config.fuse == "concat":
            self.fuse_levels = [i for i, s in enumerate(self.strides) if s >= 4] or [len(self.strides) - 1]
            self.channels = [sum(self.channels[i] for i in self.fuse_levels)]
            self.strides = [self.strides[self.fuse_levels[0]]]

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """timm's gradient checkpointing of the backbone's stages (needs timm ≥ 1.0.31)."""
        require_checkpointing_timm(enabled)
        self.body.set_grad_checkpointing(enabled)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps, finest first (one map with ``fuse: concat``)."""
        if self.pad_multiple is None:
            features = self.body(image)
        else:  # pad bottom/right to the multiple, then crop each map to ⌈side / stride⌉
            height, width = image.shape[-2:]
            m = self.pad_multiple
            padded = nn.functional.pad(image, (0, -width % m, 0, -height % m))
            features = self.body(padded)
            if self.channels_last:
                features = [f.permute(0, 3, 1, 2) for f in features]
            features = [f[..., : -(-height // s), : -(-width // s)]
                        for f, s in zip(features, self.body.feature_info.reduction())]
        if self.fuse_levels is None:
            return features
        selected = [features[i] for i in self.fuse_levels]
        size = selected[0].shape[-2:]
        resized = [f if f.shape[-2:] == size else
                   nn.functional.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in selected]
        return [torch.cat(resized, dim=1)]


def require_checkpointing_timm(enabled: bool) -> None:
    """ConfigError when activation checkpointing is asked for with a timm older than 1.0.31."""
    # earlier timm releases checkpoint feature stages after an in-place ReLU, whose backward fails
    # ("modified by an inplace operation"); 1.0.31 is the oldest release this guard admits
    if enabled and _version(timm.__version__) < (1, 0, 31):
        raise ConfigError(
            f"train.activation_checkpointing needs timm ≥ 1.0.31 (installed: {timm.__version__}): "
            "pip install -U timm, or set it to false"
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
        raise ConfigError(
            f"model.backbone.weights: file not found: {path}. Give a local weight file, 'timm' to download, or null."
        )
    return True, {"file": str(path)}


def behave_like_seg_hrnet(modules: Iterable[nn.Module]) -> None:
    """Make timm's (classification) HRNet compute as the segmentation HRNet the seeds use.

    The weights are the same layer for layer; two things differ. The fuse layers of timm's
    HRNet upsample the coarser branches with nearest neighbours, those of the segmentation code
    (``models/seg_hrnet.py`` of the MTI-Net re-implementation) bilinearly (align_corners False);
    and its batch norms use momentum 0.1, the segmentation code 0.01 (``BN_MOMENTUM``).
    """
    for module in modules:
        if isinstance(module, nn.Upsample):
            module.mode = "bilinear"
            module.align_corners = False
        elif isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.01

