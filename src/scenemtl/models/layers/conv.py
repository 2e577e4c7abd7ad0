"""Convolution blocks and the resampling every decoder uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

#: the default activation of ``conv_norm_act``: an in-place ReLU
relu_inplace: Callable[[], nn.Module] = partial(nn.ReLU, inplace=True)


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
    affine: bool = True,
    act: Callable[[], nn.Module] | None = relu_inplace,
) -> nn.Sequential:
    """Conv → BatchNorm → activation, with 'same' padding (``dilation · (kernel_size // 2)``).

    The children are ``0`` (the convolution, no bias unless ``bias``), ``1`` (the norm, without
    affine parameters unless ``affine``) and ``2`` (``act()``: an in-place ReLU by default, e.g.
    ``nn.ReLU`` for an out-of-place one, ``nn.GELU``, ``nn.Sigmoid``; no child with ``act=None``), so
    state-dict keys read ``<name>.0.weight``, ``<name>.1.running_mean``. Unpack it
    (``nn.Sequential(*conv_norm_act(...), ...)``) to put the layers into a longer Sequential.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=groups,
            bias=bias,
        ),
        nn.BatchNorm2d(out_channels, affine=affine),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def fp32_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply an output convolution in float32 even under autocast: bf16 logits would round depth by ~0.4 %."""
    if x.device.type == "meta":  # (shapes only, e.g. `scenemtl info --meta`: no autocast there)
        return conv(x.float())
    with torch.autocast(device_type=x.device.type, enabled=False):
        return conv(x.float())


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of ``[B, C, H, W]`` maps to ``size``; ``x`` itself if already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def regrid(x: torch.Tensor, stride: float, target: int, size: Sequence[int]) -> torch.Tensor:
    """A map whose cell ``i`` covers pixels ``[stride·i, stride·(i+1))`` of the input, bilinearly sampled at the
    centres of ``size`` cells of ``target`` pixels.

    ``resize`` stretches a map over the output, which is only right when both cover the same pixels: a patch-14
    ViT's ⌈side / 14⌉ cells over an input padded to a multiple of 64 cover up to 13 pixels more than its 1/16
    grid, and stretching them shifts features by up to that much towards the top-left. Sampling by the strides'
    ratio (``scale_factor`` with ``recompute_scale_factor=False``: source = (j + ½)·target / stride − ½) keeps
    them in place; the extra cells at the bottom and right are dropped (a short side is edge-padded). A map that
    covers exactly ``size``·``target`` pixels gets ``resize`` itself.
    """
    height, width = x.shape[-2:]
    if height * stride == size[0] * target and width * stride == size[1] * target:
        return resize(x, size)
    scale = stride / target
    y = F.interpolate(x, scale_factor=(scale, scale), mode="bilinear", align_corners=False, recompute_scale_factor=False)
    short_h, short_w = max(0, size[0] - y.shape[-2]), max(0, size[1] - y.shape[-1])
    if short_h or short_w:
        y = F.pad(y, (0, short_w, 0, short_h), mode="replicate")
    return y[..., : size[0], : size[1]]
