"""Convolution blocks and the resampling every decoder uses."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
    (``nn.Sequential(*conv_norm_act(...), ...)``) to put the layers into a longer Sequential. A 3×3
    convolution with stride 1 is a ``winograd.Conv3x3``: an ``nn.Conv2d`` that a CPU runs by Winograd's
    F(4×4, 3×3) or F(2×2, 3×3) where that is faster (the same function up to float rounding).
    """
    conv: nn.Conv2d
    if kernel_size == 3 and stride == 1 and dilation == 1 and groups == 1:
        from scenemtl.models.layers.winograd import Conv3x3  # (winograd imports this module)

        conv = Conv3x3(in_channels, out_channels, bias=bias)
    else:
        padding = dilation * (kernel_size // 2)
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias
        )
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(out_channels, affine=affine)]
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


#: set by ``as_written``: layers compute as the architecture writes them, no algebraic shortcut
_AS_WRITTEN: contextvars.ContextVar[bool] = contextvars.ContextVar("scenemtl_as_written", default=False)


@contextmanager
def as_written() -> Iterator[None]:
    """Inside it, models compute every layer as the architecture writes it (e.g. InvPT's fusion as a 3×3
    convolution at 1/4, not ``conv3x3_of_resized``), so that counted multiply-adds are the architecture's."""
    token = _AS_WRITTEN.set(True)
    try:
        yield
    finally:
        _AS_WRITTEN.reset(token)


def shortcuts_allowed() -> bool:
    """False inside ``as_written``."""
    return not _AS_WRITTEN.get()


@functools.lru_cache(maxsize=64)
def _shifted_resize(source: int, target: int, columns: bool) -> torch.Tensor:
    """The bilinear resize ``source → target`` along one axis (PyTorch's own weights: the identity resized)
    followed by the three shifts ``d − 1`` (d = 0, 1, 2) of a 3×3 kernel with zero padding, side by side:
    ``[target, 3·source]``; entry ``[y, d·source + j]`` (``[y, 3·j + d]`` for ``columns``) is the weight of
    source cell ``j`` at output position ``y + d − 1`` (zero outside the map)."""
    eye = torch.eye(source, dtype=torch.float64)[None, None]
    weights = F.interpolate(eye, size=(target, source), mode="bilinear", align_corners=False)[0, 0]
    padded = F.pad(weights, (0, 0, 1, 1))
    shifted = torch.stack([padded[d : d + target] for d in range(3)])  # [3, target, source]
    return (shifted.permute(1, 2, 0) if columns else shifted.permute(1, 0, 2)).reshape(target, 3 * source)


def conv3x3_of_resized(conv: nn.Conv2d, inputs: Sequence[tuple[torch.Tensor, nn.Conv2d | None]], size: Sequence[int]) -> torch.Tensor:
    """``conv(Σᵢ resize(reduceᵢ(xᵢ), size))`` for a 3×3 convolution (stride 1, padding 1), computed at the
    inputs' own resolutions: the same function (equal up to float rounding), a fraction of the work when the
    inputs are coarser than ``size``.

    A 3×3 convolution is ``Σₖ shiftₖ(Wₖ · x)`` over its nine taps, ``Wₖ`` a channel mixing and ``shiftₖ`` a
    zero-padded shift. A channel mixing commutes with a bilinear resize (which acts on each channel alike and
    keeps constants, so a 1×1 ``reduce``'s bias goes through too) and with the shift, so every ``Wₖ`` (and
    ``reduce``, folded into it where that is cheaper) runs at the input's resolution as one matrix product
    with ``9·C_out`` outputs; the resize (separable) and the shifts are then two small matrix products per
    input, rows and columns, one kernel row at a time (no intermediate holds all nine taps), with nothing larger
    than the inputs kept for the backward pass. The output is ``[B, C_out, *size]`` with channels-last strides.
    """
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.dilation != (1, 1):
        raise ValueError("conv3x3_of_resized needs a 3×3 convolution with stride 1, padding 1 and dilation 1")
    if conv.groups != 1 or conv.padding_mode != "zeros":
        raise ValueError("conv3x3_of_resized needs an ungrouped, zero-padded convolution")
    if not inputs:
        raise ValueError("conv3x3_of_resized needs at least one input")
    out_channels = conv.out_channels
    height, width = int(size[0]), int(size[1])
    taps = conv.weight.permute(2, 3, 0, 1).reshape(9 * out_channels, conv.in_channels)  # rows: (kh, kw, out)
    out: torch.Tensor | None = None  # [B·H, W, C_out]
    for x, reduce in inputs:
        batch, _, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).contiguous()  # [B, h, w, C] (a view for channels-last maps), kept once
        weight, bias = taps, None
        if reduce is not None:
            if reduce.kernel_size != (1, 1) or reduce.stride != (1, 1) or reduce.groups != 1:
                raise ValueError("conv3x3_of_resized: a reduce must be an ungrouped 1×1 convolution with stride 1")
            matrix = reduce.weight.flatten(1)
            pixels = batch * h * w
            folded = 9 * out_channels * matrix.shape[1] * (conv.in_channels + pixels)
            if folded < matrix.shape[0] * matrix.shape[1] * pixels + 9 * out_channels * conv.in_channels * pixels:
                weight = taps @ matrix
                bias = None if reduce.bias is None else taps @ reduce.bias
            else:
                tokens = F.linear(tokens, matrix, reduce.bias)
        weight = weight.view(3, 3 * out_channels, -1)  # per kernel row: (kw, out) × C'
        rows = _shifted_resize(h, height, False).to(device=x.device)  # [H, (kh, h)]
        cols = _shifted_resize(w, width, True).to(device=x.device)  # [W, (w, kw)]
        along_rows: torch.Tensor | None = None  # [B, H, (w, kw, out)]: resized and shifted along the rows
        for kh in range(3):  # one kernel row at a time: no intermediate holds all nine taps
            taps_out = F.linear(tokens, weight[kh], None if bias is None else bias.view(3, -1)[kh]).view(
                batch, h, w * 3 * out_channels
            )  # [B, h, (w, kw, out)]
            shifted = rows[:, kh * h : (kh + 1) * h].to(taps_out.dtype).expand(batch, height, h)
            along_rows = torch.bmm(shifted, taps_out) if along_rows is None else along_rows.baddbmm_(shifted, taps_out)
        assert along_rows is not None
        part = torch.matmul(cols.to(along_rows.dtype), along_rows.view(batch * height, 3 * w, out_channels))  # [B·H, W, out]
        out = part if out is None else out.add_(part)
    assert out is not None
    if conv.bias is not None:
        out.add_(conv.bias.to(out.dtype))
    return out.view(-1, height, width, out_channels).permute(0, 3, 1, 2)


class ConvPointwise(nn.Sequential):
    """A convolution followed directly by a 1×1 convolution, nothing between (MTAN's prediction head: 3×3 then
    1×1 to the task's outputs); children ``0`` and ``1``, as the ``nn.Sequential`` it is.

    Both are linear, so where the 1×1 narrows the channels (a task's few outputs from 64 features) the pair runs
    as one convolution with the composed weights ``W₁·W₀`` and bias ``W₁·b₀ + b₁`` (the zero padding of the
    first is the padding of the composite): the same function and gradients up to float rounding, for the
    multiply-adds of a convolution straight to the outputs. Inside ``as_written`` (counting, export) the two
    run as written.
    """

    def __init__(self, first: nn.Conv2d, second: nn.Conv2d) -> None:
        if second.kernel_size != (1, 1) or second.stride != (1, 1) or second.padding != (0, 0) or second.groups != 1:
            raise ValueError("ConvPointwise: the second convolution must be an ungrouped 1×1 with stride 1 and no padding")
        super().__init__(first, second)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self[0], self[1]
        mid, out = first.out_channels, second.out_channels
        kernel = first.kernel_size[0] * first.kernel_size[1] * first.in_channels // first.groups
        if not shortcuts_allowed() or first.groups != 1 or first.padding_mode != "zeros" or kernel * out >= kernel * mid + mid * out:
            return super().forward(x)
        pointwise = second.weight.flatten(1)  # [out, mid]
        weight = (pointwise @ first.weight.flatten(1)).view(out, *first.weight.shape[1:])
        bias = second.bias
        if first.bias is not None:
            bias = pointwise @ first.bias if bias is None else torch.addmv(bias, pointwise, first.bias)
        return F.conv2d(x, weight, bias, stride=first.stride, padding=first.padding, dilation=first.dilation)
