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


def _bilinear_weights(cells: int, out: int, stride: float, target: float, like: torch.Tensor) -> torch.Tensor:
    """``[out, cells]``: output cell ``j`` (centre at (j + ½)·target pixels) as a blend of the two source cells
    (centres at (i + ½)·stride) around it, clamped at the borders as bilinear ``interpolate`` is."""
    centre = ((torch.arange(out, dtype=torch.float64) + 0.5) * target / stride - 0.5).clamp(0, cells - 1)
    low = centre.floor().long()
    high = (low + 1).clamp(max=cells - 1)
    frac = centre - low
    weights = torch.zeros(out, cells, dtype=torch.float64)
    weights[torch.arange(out), low] += 1 - frac
    weights[torch.arange(out), high] += frac
    return weights.to(device=like.device, dtype=like.dtype)


def regrid(x: torch.Tensor, stride: float | Sequence[float], target: float | Sequence[float], size: Sequence[int]) -> torch.Tensor:
    """A map whose cell ``i`` covers pixels ``[stride·i, stride·(i+1))``, bilinearly sampled at the centres of
    ``size`` cells of ``target`` pixels (``stride`` and ``target``: one number, or one per axis).

    ``resize`` stretches a map over the output, which is only right when both cover the same pixels: a patch-14
    ViT's ⌈side / 14⌉ cells cover up to 13 pixels more than the side (or than InvPT's 1/16 grid of a 64-padded
    input), and stretching them shifts features by up to that much towards the top-left. Here each output cell
    is read where it lies (source cell (j + ½)·target / stride − ½, clamped at the borders as ``interpolate``),
    as two small matrix products, so any ratio of strides works. A map that covers exactly the output's
    pixels gets ``resize`` itself.
    """
    sh, sw = (stride, stride) if isinstance(stride, (int, float)) else stride
    th, tw = (target, target) if isinstance(target, (int, float)) else target
    height, width = x.shape[-2:]
    if height * sh == size[0] * th and width * sw == size[1] * tw:
        return resize(x, size)
    rows = _bilinear_weights(height, size[0], sh, th, x)
    cols = _bilinear_weights(width, size[1], sw, tw, x)
    return torch.einsum("ih,...hw,jw->...ij", rows, x, cols)
