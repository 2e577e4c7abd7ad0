"""Backbones from timm as multi-scale feature extractors: feature maps with their channels and strides."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import timm
import torch
from timm.models import FeatureDictNet
from torch import nn

from scenemtl.config import BackboneConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones.presets import foundation, quarter_blocks
from scenemtl.models.backbones.factory import (
    SWIN_FAMILIES,
    VIT_FAMILIES,
    backbone_family,
    create_timm_model,
    require_checkpointing_timm,
)


#: the strides of the maps the multi-level neck gives a ViT, finest first
PYRAMID_STRIDES = (4, 8, 16, 32)


class MultiLevelNeck(nn.Module):
    """A ViT's maps at one stride as a pyramid: mmseg's ``MultiLevelNeck`` (its ViT + UPerNet configs).

    Map ``i`` of ``n`` (finest first) goes through a 1×1 convolution, is resized bilinearly to
    ⌈side / stride⌉ of the input for the ``i``-th of the last ``n`` strides of ``PYRAMID_STRIDES`` (4/8/16/32
    for four maps: ×4, ×2, ×1 and ×½ of a patch-16 grid), then through a 3×3 convolution; no norm or
    activation, mmseg's defaults. Sizes are taken from the input, not from scale factors, so patch 14
    (strides 3.5…28 by scale) lands on the same pyramid as patch 16. ``channels``: each map's, kept.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        if not 1 <= len(channels) <= len(PYRAMID_STRIDES):
            raise ConfigError(
                f"model.backbone.neck: multilevel makes a pyramid of 1 to {len(PYRAMID_STRIDES)} ViT blocks, got "
                f"{len(channels)}; set model.backbone.out_indices to at most four blocks"
            )
        self.strides = list(PYRAMID_STRIDES[-len(channels) :])
        self.lateral = nn.ModuleList(nn.Conv2d(c, c, 1) for c in channels)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for c in channels)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        out = []
        for x, lateral, conv, stride in zip(features, self.lateral, self.convs, self.strides):
            target = (-(-size[0] // stride), -(-size[1] // stride))
            out.append(conv(nn.functional.interpolate(lateral(x), size=target, mode="bilinear", align_corners=False)))
        return out


@dataclass(frozen=True)
class ResidualLayer:
    """One residual layer of a ResNet (``layer1`` … ``layer4``): its blocks, in order, and its input and output widths."""

    blocks: nn.Sequential
    in_channels: int
    out_channels: int


class Stage(NamedTuple):
    """One module of a backbone run stage by stage: its name in ``body``, the module, and the index of the feature map
    it returns (None: an inner module whose output only feeds the next one)."""

    name: str
    module: nn.Module
    level: int | None


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
    to ⌈side / stride⌉, so any image size works. Those cells cover up to a stride more than the input,
    which decoders that resize maps to the input stretch; resampling them onto the input first
    (``layers.regrid``) was measured and not kept: at 96×128 with patch 14 it cost hps about a point of
    mIoU (the extra interpolation) and moved nothing else
    (``benchmarks/results/backbones_synthetic_cpu.md``). InvPT, which moves maps between grids, uses it.
    timm's HRNet is made to compute as the seeds'
    segmentation HRNet (``behave_like_seg_hrnet``: bilinear fuse upsampling, norm momentum 0.01).

    Transformers: Swin's four stages come as NCHW maps at strides 4–32 (timm's NHWC outputs are
    permuted), at any size (timm's dynamic size and window padding; sides padded to a multiple
    of 32 inside as for HRNet). A ViT gives its blocks as maps at the patch's stride (timm's feature
    getter; position embeddings resampled to the input's grid, sides padded to a multiple of the patch).
    A foundation encoder (``presets.foundation``) gives the last block of each quarter unless
    ``out_indices`` says otherwise. ``model.backbone.neck`` turns those maps into a pyramid at strides
    4/8/16/32 (``MultiLevelNeck``): by default for the architectures that ask for one (``pyramid``: MTI-Net,
    PAD-Net, ATRC, whose decoders are built on multi-scale maps). The transformer architectures (``invpt``,
    ``taskprompter``) read ViTs through ``backbones/vit.py: ViTBackbone`` instead, which chooses the blocks.
    """

    def __init__(self, config: BackboneConfig, pyramid: bool = False) -> None:
        super().__init__()
        self.name = config.name
        #: timm's family of the model (``backbone_family``: resnet, hrnet, swin, vit, …)
        self.family = backbone_family(config.name)
        kwargs = dict(config.options)
        # HRNet's fuse layers upsample by fixed factors: it needs sides divisible by its coarsest stride
        self.pad_multiple: int | None = None
        if self.family == "hrnet":
            kwargs.setdefault("feature_location", "")
            self.pad_multiple = 32
        elif self.family in SWIN_FAMILIES:
            kwargs.setdefault("strict_img_size", False)
            kwargs.setdefault("dynamic_img_size", True)
            self.pad_multiple = 32
        elif self.family in VIT_FAMILIES:  # padded to the patch size, once the model says what it is
            kwargs.setdefault("dynamic_img_size", True)
        if config.out_indices is not None:
            kwargs["out_indices"] = config.out_indices
        elif self.family in VIT_FAMILIES and foundation(config.name) is not None:  # the last block of each quarter
            with torch.device("meta"):
                depth = len(timm.create_model(config.name, pretrained=False, **kwargs).blocks)
            kwargs["out_indices"] = quarter_blocks(depth)
        self.body = create_timm_model(config, features_only=True, **kwargs)
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())
        if self.family in VIT_FAMILIES:
            self.pad_multiple = max(self.strides)
        # Swin's features are channels-last
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        if self.family == "hrnet":
            behave_like_seg_hrnet(self.body.modules())
        self.neck: MultiLevelNeck | None = None
        if config.neck == "multilevel" and self.family not in VIT_FAMILIES:
            raise ConfigError(
                f"model.backbone.neck: multilevel makes a pyramid of a ViT's maps; '{config.name}' ({self.family}) has "
                "a pyramid of its own: set neck to auto or none"
            )
        if self.family in VIT_FAMILIES and (config.neck == "multilevel" or (config.neck == "auto" and pyramid)):
            self.neck = MultiLevelNeck(self.channels)
            self.strides = list(self.neck.strides)
        self.fuse_levels: list[int] | None = None
        if config.fuse == "concat":
            self.fuse_levels = [i for i, s in enumerate(self.strides) if s >= 4] or [len(self.strides) - 1]
            self.channels = [sum(self.channels[i] for i in self.fuse_levels)]
            self.strides = [self.strides[self.fuse_levels[0]]]

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """timm's gradient checkpointing of the backbone's stages (needs timm ≥ 1.0.31)."""
        require_checkpointing_timm(enabled)
        self.body.set_grad_checkpointing(enabled)

    def stages(self) -> list[Stage]:
        """``body``'s modules in the order its forward runs them, each with the feature map it returns.

        For architectures that run the backbone stage by stage (cross-stitch: one network per
        task, mixed between stages): running the modules in order on the image gives ``forward``'s
        maps at the stages with a ``level``. Only timm models whose ``features_only`` form is a plain
        sequence of modules (ResNets, RegNets, ConvNeXts: timm's ``FeatureDictNet``) without padding
        or ``fuse``; ConfigError otherwise.
        """
        body = self.body
        if not isinstance(body, FeatureDictNet) or self.pad_multiple is not None or self.fuse_levels is not None:
            raise ConfigError(
                f"running the backbone stage by stage needs a timm model whose features_only form is a sequence of "
                f"stages (ResNets, RegNets, ConvNeXts); 'model.backbone.name: {self.name}' gives {type(body).__name__}"
                + (" (padded inside)" if self.pad_multiple is not None else "")
            )
        levels = {name: int(index) for name, index in body.return_layers.items()}
        return [Stage(name, module, levels.get(name)) for name, module in body.items()]

    def residual_layers(self) -> tuple[list[nn.Module], list[ResidualLayer]]:
        """A ResNet's stem (its modules in order, whose output ``layer1`` reads) and its four residual layers.

        For architectures that work inside the layers (MTAN's attention over each layer's last
        block). The modules are ``body``'s own (with its options, e.g. ``output_stride``): running
        the stem and then each layer's blocks computes the maps ``forward`` returns. Only for timm's
        ResNet family (``backbone_family`` 'resnet') with all four layers in ``body`` (no
        ``out_indices`` that drop one, no ``fuse``); ConfigError otherwise.
        """
        body = self.body
        names = list(body.keys()) if self.family == "resnet" and self.fuse_levels is None else []
        if any(f"layer{i}" not in names for i in range(1, 5)):
            raise ConfigError(
                f"backbone '{self.name}' ({self.family}) does not give a ResNet's four residual layers: "
                "use timm's ResNet family (e.g. resnet50) with all layers (no model.backbone.out_indices "
                "that drop one, model.backbone.fuse 'none')"
            )
        # the widths of every stage, also those out_indices leave out of the outputs
        widths = {info["module"]: info["num_chs"] for info in body.feature_info.info}
        layers = [ResidualLayer(body[f"layer{i}"], body[f"layer{i}"][0].conv1.in_channels, widths[f"layer{i}"]) for i in range(1, 5)]
        return [body[name] for name in names[: names.index("layer1")]], layers

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
            features = [f[..., : -(-height // s), : -(-width // s)] for f, s in zip(features, self.body.feature_info.reduction())]
        if self.neck is not None:
            features = self.neck(features, (image.shape[-2], image.shape[-1]))
        if self.fuse_levels is None:
            return features
        selected = [features[i] for i in self.fuse_levels]
        size = selected[0].shape[-2:]
        resized = [
            f if f.shape[-2:] == size else nn.functional.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in selected
        ]
        return [torch.cat(resized, dim=1)]


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
