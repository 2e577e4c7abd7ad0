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
