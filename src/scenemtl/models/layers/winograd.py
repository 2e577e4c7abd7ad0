"""3×3 convolutions by Winograd's minimal filtering F(m×m, 3×3) on a CPU: the same function in fewer multiplies.

A 3×3 convolution (stride 1, zero padding 1) of a map cut into (m + 2)×(m + 2) tiles that overlap by 2 gives each
tile's m×m outputs as ``Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A`` (Lavin & Gray, CVPR 2016): per output and channel pair
(m + 2)²/m² multiplies instead of 9, 4 for F(2×2, 3×3) and 2.25 for F(4×4, 3×3). Over channels the (m + 2)²
element-wise products are as many matrix products ``[out, in] @ [in, tiles]``, which run at the CPU's
matrix-multiply speed; the input transform is a few additions over the map (written out per tile size), the
kernel and output transforms are small matrix products. PyTorch's CPU convolutions (oneDNN) compute 3×3
convolutions directly, 9 multiplies per output and channel pair, at about the matrix-multiply speed. The
backward pass is Winograd too: the input's gradient is the convolution of the output's gradient with the
flipped, transposed kernel, and the kernel's gradient is ``Gᵀ [Σ_tiles (A dY Aᵀ) · (Bᵀ d B)ᵀ] G``; the
transformed input is computed again there instead of being kept (it is (m + 2)²/m² times the input).

The same function up to float rounding: outputs and gradients equal ``F.conv2d``'s to 1e-12 in float64. In
float32 F(2×2) is within 1e-5 of the exact result's largest value, no more than 4× the direct convolution's own
error (often less). F(4×4) multiplies by up to 5 and divides by 24 in its transforms: within 2e-5 (about 5e-6 on
a 64 → 48-channel layer, 4–20× the direct convolution's error there; ``tests/models/test_layers.py``), and on
MTAN-SegNet's wide layers about the direct convolution's own error (1e-5 against 4e-6–9e-6;
``benchmarks/results/winograd_speed_cpu.md``).

``Conv3x3`` (an ``nn.Conv2d``, same parameters and state) takes this path in float32 on a CPU where it pays
(``tile_for``: the matrix products must outweigh the transforms) and computes as written otherwise: on other
devices, in other dtypes, under autocast, for channels-last inputs, under ``torch.compile`` (Inductor chooses its
own kernels) and inside ``layers.as_written`` (counting, export). ``set_max_tile(model, 2)`` keeps a model's
``Conv3x3`` to F(2×2) (rounding error below the direct convolution's), ``0`` to the direct convolution (the
config's ``train.winograd``: ``f4``, ``f2``, ``off``); ``MAX_TILE`` is the default of those not set.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.models.layers.conv import shortcuts_allowed

#: the kernel transforms G ((m + 2)×3) and output transforms Aᵀ (m×(m + 2)) of F(2×2, 3×3) and F(4×4, 3×3)
#: (Lavin & Gray); the input transforms Bᵀ are written out as additions in ``_input_rows``
_G = {
    2: ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
    4: ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
}
_A_T = {
    2: ((1, 1, 1, 0), (0, 1, -1, -1)),
    4: ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
}

#: the largest tile a ``Conv3x3`` uses unless set (``set_max_tile``): 4 (F(4×4) where it pays, F(2×2) on small
#: maps), 2 (F(2×2) only: rounding error below the direct convolution's) or 0 (the direct convolution always)
MAX_TILE = 4
#: ``train.winograd``'s values: the largest tile each allows
MODES = {"f4": 4, "f2": 2, "off": 0}
#: the least ``in·out / (in + out)`` (the matrix products' work per transformed value) at which Winograd beats
#: oneDNN's direct convolution on an AVX2 CPU, forward and backward together: 64 → 128 and 128 → 64 channels
#: (43) run at 0.96–1.0×, 128 → 128 (64) at 1.2–1.3×, 256 → 512 (171) at 2.3× (``benchmarks/winograd_speed.py``)
MIN_CHANNEL_RATIO = 60
#: the least ``in·out / (in + out) × pixels`` of a map: on small maps the transforms' fixed costs outweigh the saving
MIN_WORK = 32 * 1024
#: the fewest pixels per map for F(4×4): below, its few tiles make the matrix products too thin and F(2×2) is faster
#: (512 → 512 channels at 18×24: F(2×2) 1.5×, F(4×4) 1.2× the direct convolution)
MIN_PIXELS_TILE4 = 1024


@functools.lru_cache(maxsize=16)
def _constants(tile: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For F(tile×tile, 3×3): ``G ⊗ G`` ((tile + 2)² × 9, the kernel transform), the same for the flipped kernel, and
    ``Aᵀ ⊗ Aᵀ`` (tile² × (tile + 2)², the output transform; its transpose spreads an output tile's gradient)."""
    g, a_t = torch.tensor(_G[tile], dtype=torch.float64), torch.tensor(_A_T[tile], dtype=torch.float64)
    kernel = torch.einsum("ia,jb->ijab", g, g)
    outputs = torch.einsum("ia,jb->ijab", a_t, a_t).reshape(tile * tile, -1)
    return kernel.reshape(-1, 9).to(dtype), kernel.flip(2, 3).reshape(-1, 9).to(dtype), outputs.to(dtype)


def _tiles(height: int, width: int, tile: int) -> tuple[int, int]:
    return -(-height // tile), -(-width // tile)


def _input_rows(tile: int, d: list[torch.Tensor], out: list[torch.Tensor]) -> None:
    """``out[i] = Σ_r Bᵀ[i, r] d[r]``: the input transform along one axis, written out as additions."""
    if tile == 2:  # Bᵀ rows (1, 0, −1, 0), (0, 1, 1, 0), (0, −1, 1, 0), (0, 1, 0, −1)
        torch.sub(d[0], d[2], out=out[0])
        torch.add(d[1], d[2], out=out[1])
        torch.sub(d[2], d[1], out=out[2])
        torch.sub(d[1], d[3], out=out[3])
        return
    # Bᵀ rows (4, 0, −5, 0, 1, 0), (0, −4, −4, 1, 1, 0), (0, 4, −4, −1, 1, 0), (0, −2, −1, 2, 1, 0),
    # (0, 2, −1, −2, 1, 0), (0, 4, 0, −5, 0, 1)
    torch.add(d[4], d[2], alpha=-5, out=out[0]).add_(d[0], alpha=4)
    a, b = d[3] + d[4], d[1] + d[2]
    torch.add(a, b, alpha=-4, out=out[1])
    torch.sub(d[4], d[3], out=a)
    torch.sub(d[1], d[2], out=b)
    torch.add(a, b, alpha=4, out=out[2])
    torch.sub(d[4], d[2], out=a)
    torch.sub(d[3], d[1], out=b)
    torch.add(a, b, alpha=2, out=out[3])
    torch.add(a, b, alpha=-2, out=out[4])
    torch.add(d[5], d[3], alpha=-5, out=out[5]).add_(d[1], alpha=4)


def transform_input(x: torch.Tensor, tile: int = 2) -> torch.Tensor:
    """``Bᵀ d B`` of every (tile + 2)² tile (stride ``tile``) of ``x`` zero-padded by 1: ``[(tile + 2)², C, N·tiles]``,
    rows in the order (i, j) of the product, columns (n, tile row, tile column)."""
    n, channels, height, width = x.shape
    th, tw = _tiles(height, width, tile)
    size = tile + 2
    padded = F.pad(x, (1, 1 + tile * tw - width, 1, 1 + tile * th - height))
    rows = x.new_empty(size, n, channels, th, padded.shape[-1])  # the transform along the tiles' rows
    _input_rows(tile, [padded[:, :, r : r + tile * th : tile] for r in range(size)], list(rows))
    out = x.new_empty(size, size, channels, n, th, tw)
    columns = [rows[..., s : s + tile * tw : tile] for s in range(size)]  # [size, N, C, th, tw] each
    _input_rows(tile, columns, [out[:, j].transpose(1, 2) for j in range(size)])
    return out.view(size * size, channels, n * th * tw)


def transform_kernel(weight: torch.Tensor, tile: int = 2, flipped: bool = False) -> torch.Tensor:
    """``G w Gᵀ`` of every 3×3 kernel: ``[(tile + 2)², out, in]``; with ``flipped``, of the flipped, transposed kernel
    (the input gradient's convolution): ``[(tile + 2)², in, out]``."""
    out_channels, in_channels = weight.shape[:2]
    kernel, kernel_flipped, _ = _constants(tile, weight.dtype)
    matrix = (kernel_flipped if flipped else kernel).to(weight.device)
    u = torch.mm(matrix, weight.reshape(out_channels * in_channels, 9).t()).view(-1, out_channels, in_channels)
    return u.transpose(1, 2) if flipped else u


def _outputs(products: torch.Tensor, n: int, height: int, width: int, tile: int) -> torch.Tensor:
    """``Aᵀ m A`` of every tile's products ``[(tile + 2)², K, N·tiles]`` laid out as the ``[N, K, H, W]`` map."""
    k = products.shape[1]
    th, tw = _tiles(height, width, tile)
    matrix = _constants(tile, products.dtype)[2].to(products.device)
    tiles = torch.mm(matrix, products.view(products.shape[0], -1)).view(tile, tile, k, n, th, tw)
    out = tiles.permute(3, 2, 4, 0, 5, 1).reshape(n, k, tile * th, tile * tw)
    return out if (tile * th, tile * tw) == (height, width) else out[:, :, :height, :width].contiguous()


def _spread_output_gradient(grad: torch.Tensor, tile: int) -> torch.Tensor:
    """``A dY Aᵀ`` of every tile's output gradient: ``[(tile + 2)², K, N·tiles]`` (the adjoint of ``_outputs``)."""
    n, k, height, width = grad.shape
    th, tw = _tiles(height, width, tile)
    if (tile * th, tile * tw) != (height, width):
        grad = F.pad(grad, (0, tile * tw - width, 0, tile * th - height))
    tiles = grad.reshape(n, k, th, tile, tw, tile).permute(3, 5, 1, 0, 2, 4).reshape(tile * tile, -1)
    matrix = _constants(tile, grad.dtype)[2].to(grad.device)
    return torch.mm(matrix.t(), tiles).view(-1, k, n * th * tw)


def _convolve(x: torch.Tensor, kernels: torch.Tensor, tile: int) -> torch.Tensor:
    """The 3×3 convolution (stride 1, padding 1) of ``x`` with transformed kernels ``[(tile + 2)², out, in]``."""
    n, _, height, width = x.shape
    return _outputs(torch.bmm(kernels, transform_input(x, tile)), n, height, width, tile)


def _batched(t: torch.Tensor) -> bool:
    """Whether ``t`` carries vmap's batch dimension (``autograd.grad(..., is_grads_batched=True)``, ``torch.func.vmap``)."""
    functorch = torch._C._functorch
    return bool(functorch.is_legacy_batchedtensor(t) or functorch.is_batchedtensor(t) or functorch.maybe_current_level() is not None)


class _Winograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tile: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.tile = bias is not None, tile
        out = _convolve(x, transform_kernel(weight, tile), tile)
        return out if bias is None else out.add_(bias.view(1, -1, 1, 1))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        tile = ctx.tile
        if _batched(grad):  # a vmapped backward (torchjd's Jacobians): the direct convolution's rule
            mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
            bias_sizes = [weight.shape[0]] if ctx.has_bias else None
            grads = torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
            return (*grads, None)
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # the convolution of the gradient with the flipped, transposed kernel
            grad_x = _convolve(grad, transform_kernel(weight, tile, flipped=True), tile)
        if ctx.needs_input_grad[1]:  # Gᵀ [Σ_tiles (A dY Aᵀ) · (Bᵀ d B)ᵀ] G
            products = torch.bmm(_spread_output_gradient(grad, tile), transform_input(x, tile).transpose(1, 2))
            kernel = _constants(tile, weight.dtype)[0].to(weight.device)
            grad_w = torch.mm(kernel.t(), products.view(products.shape[0], -1)).t().reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, tile: int = 2) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3×3 ``weight`` (stride 1, no dilation or groups) by F(tile×tile,
    3×3), ``tile`` 2 or 4, forward and backward; any dtype and device, NCHW ``x`` of any size."""
    if weight.shape[-2:] != (3, 3) or x.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"winograd_conv3x3 takes an [N, C, H, W] input and a [out, C, 3, 3] kernel, got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if tile not in _G:
        raise ValueError(f"winograd_conv3x3 computes F(2×2, 3×3) or F(4×4, 3×3): tile 2 or 4, got {tile}")
    return _Winograd.apply(x.contiguous(), weight, bias, tile)


def tile_for(in_channels: int, out_channels: int, pixels: int | None = None, max_tile: int | None = None) -> int:
    """The Winograd tile that is fastest on a CPU for these channel counts and, given, this many pixels per map: 4
    (F(4×4, 3×3)), 2 (F(2×2, 3×3)) or 0 (the direct convolution), up to ``max_tile`` (default ``MAX_TILE``).
    Winograd pays for ``in·out / (in + out) ≥ MIN_CHANNEL_RATIO`` and maps of ``MIN_WORK``; F(4×4) on maps of at least
    ``MIN_PIXELS_TILE4`` pixels."""
    largest = MAX_TILE if max_tile is None else max_tile
    ratio = in_channels * out_channels / (in_channels + out_channels)
    if largest < 2 or ratio < MIN_CHANNEL_RATIO or (pixels is not None and ratio * pixels < MIN_WORK):
        return 0
    return 4 if largest >= 4 and (pixels is None or pixels >= MIN_PIXELS_TILE4) else 2


def pays(in_channels: int, out_channels: int, pixels: int | None = None) -> bool:
    """Whether Winograd beats the direct convolution on a CPU for these channels and, given, map size (``tile_for``)."""
    return tile_for(in_channels, out_channels, pixels) > 0


class Conv3x3(nn.Conv2d):
    """A 3×3 ``nn.Conv2d`` (stride 1, padding 1) that runs ``winograd_conv3x3`` where that is faster: float32 on a
    CPU, NCHW input, maps and channels for which it pays (``tile_for``), no autocast, compilation or vmap, outside
    ``as_written``. Same parameters, state and function as ``nn.Conv2d(in, out, 3, padding=1, bias=bias)``."""

    #: the largest Winograd tile of this convolution (``set_max_tile``); None: ``MAX_TILE``
    max_tile: int | None = None

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
            and x.is_contiguous()
            and not torch.is_autocast_enabled("cpu")
            and shortcuts_allowed()
            and not _batched(x)
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
        ):
            tile = tile_for(self.in_channels, self.out_channels, x.shape[-2] * x.shape[-1], self.max_tile)
            if tile:
                return _Winograd.apply(x, self.weight, self.bias, tile)
        return super().forward(x)


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def set_max_tile(model: ModuleT, max_tile: int | str) -> ModuleT:
    """Set the largest Winograd tile of every ``Conv3x3`` in ``model``: 4, 2 or 0, or a ``train.winograd`` value
    (``MODES``: ``f4``, ``f2``, ``off``); returns the model."""
    tile = MODES.get(max_tile, max_tile) if isinstance(max_tile, str) else max_tile
    if tile not in (0, 2, 4):
        raise ValueError(f"the largest Winograd tile is 4, 2 or 0 (train.winograd: f4, f2 or off), got {max_tile!r}")
    for module in model.modules():
        if isinstance(module, Conv3x3):
            module.max_tile = tile
    return model
