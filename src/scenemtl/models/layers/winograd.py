"""3×3 convolutions by Winograd's minimal filtering F(2×2, 3×3) on a CPU: the same function in 4/9 of the multiplies.

A 3×3 convolution (stride 1, zero padding 1) of a map cut into 4×4 tiles that overlap by 2 gives each tile's
2×2 outputs as ``Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A`` (Lavin & Gray, CVPR 2016): per tile and channel pair 16
multiplies instead of 36. Over channels the 16 element-wise products are 16 matrix products
``[out, in] @ [in, tiles]``, which run at the CPU's matrix-multiply speed, and the transforms are a few
additions over the maps. PyTorch's CPU convolutions (oneDNN) compute 3×3 convolutions directly, 9 multiplies
per output and channel pair, at about the matrix-multiply speed. The backward pass is Winograd too: the
input's gradient is the convolution of the output's gradient with the flipped, transposed kernel, and the
kernel's gradient is ``Gᵀ [Σ_tiles (A dY Aᵀ) · (Bᵀ d B)ᵀ] G``; the transformed input is computed again there
instead of being kept (it is four times the input).

The same function up to float rounding: outputs and gradients equal ``F.conv2d``'s to 1e-12 in float64; in
float32 they are within 1e-5 of the exact result's largest value and 4× the direct float32 convolution's error
(``tests/models/test_layers.py``). ``Conv3x3`` (an ``nn.Conv2d``, same parameters and state) takes this path in
float32 on a CPU where it pays (``pays``: the matrix products must outweigh the transforms;
``benchmarks/results/winograd_speed_cpu.md``) and computes as written otherwise: on other devices, in other
dtypes, under autocast, for channels-last inputs, under ``torch.compile`` (Inductor chooses its own kernels)
and inside ``layers.as_written`` (counting, export).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.models.layers.conv import shortcuts_allowed

#: F(2×2, 3×3)'s transforms (Lavin & Gray): kernels G (4×3), outputs Aᵀ (2×4); the input transform Bᵀ, rows
#: (1, 0, −1, 0), (0, 1, 1, 0), (0, −1, 1, 0), (0, 1, 0, −1), is written out as additions in ``transform_input``
_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_A_T = ((1, 1, 1, 0), (0, 1, -1, -1))

#: the least ``in·out / (in + out)`` (the matrix products' work per transformed value) at which Winograd beats
#: oneDNN's direct convolution on an AVX2 CPU, forward and backward together: 64 → 128 and 128 → 64 channels
#: (43) lose a little, 128 → 128 (64) gains 1.2×, 256 → 512 (171) 1.7× (``benchmarks/winograd_speed.py``)
MIN_CHANNEL_RATIO = 60
#: the least ``in·out / (in + out) × pixels`` of a map: on small maps the transforms' fixed costs outweigh the
#: saving (128 → 128 channels at 32×32 runs at 0.74× the direct convolution, 256 → 256 there at 1.14×, 512 → 512
#: at 18×24 at 0.94×, at 36×48 at 1.6×)
MIN_WORK = 128 * 1024


@functools.lru_cache(maxsize=8)
def _constants(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """G (4×3) and the 16×4 matrix ``A ⊗ A`` that spreads a 2×2 output tile's gradient over the 4×4 products
    (its transpose gathers the products into the outputs)."""
    a_t = torch.tensor(_A_T, dtype=torch.float64)
    spread = torch.einsum("ai,bj->ijab", a_t, a_t).reshape(16, 4)
    return torch.tensor(_G, dtype=dtype), spread.to(dtype)


def _tiles(height: int, width: int) -> tuple[int, int]:
    return (height + 1) // 2, (width + 1) // 2


def transform_input(x: torch.Tensor) -> torch.Tensor:
    """``Bᵀ d B`` of every 4×4 tile (stride 2) of ``x`` zero-padded by 1: ``[16, C, N·tiles]``, rows in the order
    (i, j) of the 4×4 product, columns (n, tile row, tile column)."""
    n, channels, height, width = x.shape
    th, tw = _tiles(height, width)
    padded = F.pad(x, (1, 1 + 2 * tw - width, 1, 1 + 2 * th - height))
    rows = [padded[:, :, r : r + 2 * th : 2] for r in range(4)]  # the tiles' row r: [N, C, th, W + 2]
    out = x.new_empty(4, 4, channels, n, th, tw)
    for i, row in enumerate((rows[0] - rows[2], rows[1] + rows[2], rows[2] - rows[1], rows[1] - rows[3])):
        cols = [row[..., s : s + 2 * tw : 2] for s in range(4)]
        torch.sub(cols[0], cols[2], out=out[i, 0].transpose(0, 1))
        torch.add(cols[1], cols[2], out=out[i, 1].transpose(0, 1))
        torch.sub(cols[2], cols[1], out=out[i, 2].transpose(0, 1))
        torch.sub(cols[1], cols[3], out=out[i, 3].transpose(0, 1))
    return out.view(16, channels, n * th * tw)


def transform_kernel(weight: torch.Tensor) -> torch.Tensor:
    """``G w Gᵀ`` of every 3×3 kernel: ``[16, out, in]``."""
    g = _constants(weight.dtype)[0].to(weight.device)
    return torch.einsum("ia,kcab,jb->ijkc", g, weight, g).reshape(16, *weight.shape[:2])


def _outputs(products: torch.Tensor, n: int, height: int, width: int) -> torch.Tensor:
    """``Aᵀ m A`` of every tile's 4×4 products ``[16, K, N·tiles]`` laid out as the ``[N, K, H, W]`` map."""
    k = products.shape[1]
    th, tw = _tiles(height, width)
    spread = _constants(products.dtype)[1].to(products.device)
    tiles = torch.mm(spread.t(), products.view(16, -1)).view(2, 2, k, n, th, tw)
    out = tiles.permute(3, 2, 4, 0, 5, 1).reshape(n, k, 2 * th, 2 * tw)
    return out if (2 * th, 2 * tw) == (height, width) else out[:, :, :height, :width].contiguous()


def _spread_output_gradient(grad: torch.Tensor) -> torch.Tensor:
    """``A dY Aᵀ`` of every tile's 2×2 output gradient: ``[16, K, N·tiles]`` (the adjoint of ``_outputs``)."""
    n, k, height, width = grad.shape
    th, tw = _tiles(height, width)
    if (2 * th, 2 * tw) != (height, width):
        grad = F.pad(grad, (0, 2 * tw - width, 0, 2 * th - height))
    tiles = grad.reshape(n, k, th, 2, tw, 2).permute(3, 5, 1, 0, 2, 4).reshape(4, -1)
    spread = _constants(grad.dtype)[1].to(grad.device)
    return torch.mm(spread, tiles).view(16, k, n * th * tw)


def _convolve(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """The 3×3 convolution (stride 1, padding 1) of ``x`` with transformed kernels ``[16, out, in]``."""
    n, _, height, width = x.shape
    return _outputs(torch.bmm(kernels, transform_input(x)), n, height, width)


def _batched(t: torch.Tensor) -> bool:
    """Whether ``t`` carries vmap's batch dimension (``autograd.grad(..., is_grads_batched=True)``, ``torch.func.vmap``)."""
    functorch = torch._C._functorch
    return bool(functorch.is_legacy_batchedtensor(t) or functorch.is_batchedtensor(t) or functorch.maybe_current_level() is not None)


class _Winograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = _convolve(x, transform_kernel(weight))
        return out if bias is None else out.add_(bias.view(1, -1, 1, 1))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        if _batched(grad):  # a vmapped backward (torchjd's Jacobians): the direct convolution's rule
            mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
            bias_sizes = [weight.shape[0]] if ctx.has_bias else None
            return torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # the convolution of the gradient with the flipped, transposed kernel
            grad_x = _convolve(grad, transform_kernel(weight.flip(2, 3).transpose(0, 1)))
        if ctx.needs_input_grad[1]:
            products = torch.bmm(_spread_output_gradient(grad), transform_input(x).transpose(1, 2))  # [16, out, in]
            g = _constants(weight.dtype)[0].to(weight.device)
            grad_w = torch.einsum("ia,ijkc,jb->kcab", g, products.view(4, 4, *products.shape[1:]), g)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3×3 ``weight`` (stride 1, no dilation or groups) by F(2×2, 3×3),
    forward and backward; any dtype and device, NCHW ``x`` of any size."""
    if weight.shape[-2:] != (3, 3) or x.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"winograd_conv3x3 takes an [N, C, H, W] input and a [out, C, 3, 3] kernel, got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    return _Winograd.apply(x.contiguous(), weight, bias)


def pays(in_channels: int, out_channels: int, pixels: int | None = None) -> bool:
    """Whether F(2×2, 3×3) beats the direct convolution on a CPU for these channel counts (``MIN_CHANNEL_RATIO``)
    and, given, this many pixels per map (``MIN_WORK``)."""
    ratio = in_channels * out_channels / (in_channels + out_channels)
    return ratio >= MIN_CHANNEL_RATIO and (pixels is None or ratio * pixels >= MIN_WORK)


class Conv3x3(nn.Conv2d):
    """A 3×3 ``nn.Conv2d`` (stride 1, padding 1) that runs ``winograd_conv3x3`` where that is faster: float32 on a
    CPU, NCHW input, maps and channels for which it ``pays``, no autocast, compilation or vmap, outside
    ``as_written``. Same parameters, state and function as ``nn.Conv2d(in, out, 3, padding=1, bias=bias)``."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)

    @property
    def winograd(self) -> bool:
        """Whether the channels make Winograd pay on maps of some size."""
        return pays(self.in_channels, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution, by Winograd where that applies."""
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.dim() == 4
            and pays(self.in_channels, self.out_channels, x.shape[-2] * x.shape[-1])
            and x.is_contiguous()
            and not torch.is_autocast_enabled("cpu")
            and shortcuts_allowed()
            and not _batched(x)
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
        ):
            return _Winograd.apply(x, self.weight, self.bias)
        return super().forward(x)
