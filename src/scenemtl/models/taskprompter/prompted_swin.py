"""The encoder of TaskPrompter's Swin variant: a Swin Transformer whose blocks carry the task prompts.

The official ``taskprompter_swin.py`` modifies Swin's blocks, so the encoder is written here (with
the shapes of the timm Swin of ``model.backbone.name``, and its pretrained weights copied in) rather
than run from timm; ``taskprompter/swin.py`` describes what it computes and builds the model on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.swin_transformer import SwinTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from scenemtl.config import BackboneConfig
from scenemtl.errors import ConfigError, ScenemtlError, key_mismatch
from scenemtl.models.backbones import create_timm_model, require_checkpointing_timm
from scenemtl.models.taskprompter.common import init_vit_weights


def _relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, H, W, C]`` → ``[B·nW, window², C]`` (windows in row-major order per image)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Swin's shifted-window mask ``[nW, window², window²]`` (0 within a region, −100 across)."""
    regions = torch.zeros(1, height, width, 1)
    count = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, hs, ws, :] = count
            count += 1
    windows = _partition(regions, window).squeeze(-1)
    mask = windows[:, None, :] - windows[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class PromptedWindowAttention(nn.Module):
    """Window attention over (prompts, window tokens) with relative position bias on the tokens."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", _relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Window outputs, the prompts' raw scores ``[B·nW, heads, T, N]`` and the window-averaged prompt outputs."""
        bw, n, c = x.shape
        b, t, _ = prompts.shape
        windows = bw // b
        tokens = torch.cat([prompts[:, None].expand(-1, windows, -1, -1).reshape(bw, t, c), x], dim=1)
        q, k, v = self.qkv(tokens).reshape(bw, t + n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        raw = q[:, :, :t] @ k[:, :, t:].transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        additive = torch.zeros(windows if mask is not None else 1, self.heads, t + n, t + n, dtype=q.dtype, device=q.device)
        additive[:, :, t:, t:] = bias + (mask[:, None] if mask is not None else 0)
        additive = additive[None].expand(b, -1, -1, -1, -1).reshape(-1, self.heads, t + n, t + n) if mask is not None else additive
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
        out = self.proj(out.transpose(1, 2).reshape(bw, t + n, c))
        return out[:, t:], raw, out[:, :t].reshape(b, windows, t, c).mean(dim=1)


class PromptedSwinBlock(nn.Module):
    """A Swin block carrying the task prompts, with TaskPrompter's channel prompting."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        drop_path: float,
        chan_dim: int,
        chan_windows: int,
        last: bool,
    ) -> None:
        super().__init__()
        if min(resolution) <= window:  # as Swin: no partition (and no shift) when a window covers the map
            window, shift = min(resolution), 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PromptedWindowAttention(dim, window, heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        h, w = resolution
        self.pad = (-h % window, -w % window)
        self.register_buffer("attn_mask", _shift_mask(h + self.pad[0], w + self.pad[1], window, shift) if shift else None, persistent=False)
        self.chan_dim, self.chan_windows = chan_dim, chan_windows
        self.chan_q = nn.Linear(chan_dim, chan_dim)
        self.chan_kv = nn.Linear(h * w, 2 * chan_dim)
        self.token_trans = nn.Linear(dim, chan_dim)
        self.last = last
        if not last:
            self.chan_proj = nn.Linear(chan_dim, chan_dim)
            self.token_trans1 = nn.Linear(chan_dim, dim)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, R, D]`` → ``[B, n·n, R, D/(n·n)]`` over the √D × √D grid of the channel embedding."""
        b, rows, _ = x.shape
        side, n = math.isqrt(self.chan_dim), self.chan_windows
        s = side // n
        return x.reshape(b, rows, n, s, n, s).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, rows, s * s)

    def _unwindows(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of ``_windows``: ``[B, n·n, R, D/(n·n)]`` → ``[B, R, D]``."""
        b, _, rows, _ = x.shape
        side, n = math.isqrt(self.chan_dim), self.chan_windows
        s = side // n
        return x.reshape(b, n, n, rows, s, s).permute(0, 3, 1, 4, 2, 5).reshape(b, rows, side * side)

    def forward(self, x: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Tokens, prompts, spatial maps ``[B, heads, T, H, W]`` and channel maps ``[B, T, C, n, n]``."""
        (h, w), window, shift = self.resolution, self.window, self.shift
        b, _, c = x.shape
        t = prompts.shape[1]
        chan_prompts = self.token_trans(prompts)
        y = F.pad(self.norm1(x).view(b, h, w, c), (0, 0, 0, self.pad[1], 0, self.pad[0]))
        hp, wp = y.shape[1:3]
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        out, raw, prompt_out = self.attn(_partition(y, window), self.norm1(prompts), self.attn_mask)
        nh, nw = hp // window, wp // window
        out = out.view(b, nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        heads = raw.shape[1]
        raw = raw.view(b, nh, nw, heads, t, window, window).permute(0, 3, 4, 1, 5, 2, 6).reshape(b, heads, t, hp, wp)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
            raw = torch.roll(raw, shifts=(shift, shift), dims=(3, 4))
        out = out[:, :h, :w].reshape(b, h * w, c)
        spatial = raw[..., :h, :w]

        k, v = self.chan_kv(out.transpose(1, 2)).reshape(b, c, 2, self.chan_dim).unbind(2)
        q = self._windows(self.chan_q(chan_prompts))
        k, n = self._windows(k), self.chan_windows
        scores = q @ k.transpose(-2, -1)  # [B, n·n, T, C]
        channel = scores.reshape(b, n, n, t, c).permute(0, 3, 4, 1, 2)

        x = x + self.drop_path(out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if not self.last:
            mixed = self._unwindows((scores * self.chan_dim**-0.5).softmax(dim=-1) @ self._windows(v))
            prompt_out = prompt_out + self.token_trans1(self.chan_proj(mixed))
            prompts = prompts + self.drop_path(prompt_out)
            prompts = prompts + self.drop_path(self.mlp(self.norm2(prompts)))
        return x, prompts, spatial, channel


class PromptedMerging(nn.Module):
    """Swin's patch merging, which also downsamples the spatial maps and widens channel maps and prompts."""

    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, tasks: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)
        self.process_chan_attn = nn.Linear(dim, 2 * dim, bias=False)
        self.task_prompts_up = nn.Linear(dim, 2 * dim, bias=False)
        self.spa_attn_ds = nn.Conv2d(heads * tasks, heads * tasks, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, prompts: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = self.resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = self.reduction(self.norm(x.reshape(b, -1, 4 * c)))
        _, heads, t, _, _ = spatial.shape
        spatial = self.spa_attn_ds(spatial.reshape(b, heads * t, h, w)).reshape(b, heads, t, h // 2, w // 2)
        channel = self.process_chan_attn(channel.transpose(2, -1)).transpose(2, -1)
        return x, self.task_prompts_up(prompts), spatial, channel


class Stage(nn.Module):
    """The blocks of one resolution, then (but in the last stage) the merging."""

    def __init__(self, blocks: Sequence[PromptedSwinBlock], downsample: PromptedMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class PatchEmbed(nn.Module):
    """4×4 patches, then a LayerNorm (Swin's patch embedding)."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(image).flatten(2).transpose(1, 2))


class PromptedSwin(nn.Module):
    """A Swin Transformer (shapes of a timm Swin) whose blocks carry the task prompts."""

    def __init__(self, config: BackboneConfig, img_size: tuple[int, int], tasks: int, chan_dim: int, chan_windows: int) -> None:
        super().__init__()
        options = dict(config.options)
        drop_path_rate = float(options.pop("drop_path_rate", 0.0))
        options.pop("img_size", None)
        with torch.device("meta"):  # timm's Swin of this name, for its shapes only
            shape = create_timm_model(config, weights=False, img_size=img_size, **options)
        if type(shape) is not SwinTransformer:
            raise ConfigError(
                f"TaskPrompter's Swin variant is built on Swin (v1: swin_tiny/small/base/large_*), "
                f"not '{config.name}' ({type(shape).__name__})"
            )
        dim, patch = shape.embed_dim, shape.patch_embed.patch_size[0]
        depths = [len(layer.blocks) for layer in shape.layers]
        heads = [layer.blocks[0].attn.num_heads for layer in shape.layers]
        window = shape.layers[0].blocks[0].window_size[0]
        mlp_ratio = shape.layers[0].blocks[0].mlp.fc1.out_features / dim
        if img_size[0] % (patch * 8) or img_size[1] % (patch * 8):
            raise ConfigError(f"model.options.img_size {list(img_size)} must divide by {patch * 8} (patch {patch}, three 2×2 merges)")
        self.patch_embed = PatchEmbed(dim, patch)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        grid = (img_size[0] // patch, img_size[1] // patch)
        stages, start = [], 0
        self.channels, self.resolutions, self.heads = [], [], heads
        for i, depth in enumerate(depths):
            width = dim * 2**i
            res = (grid[0] // 2**i, grid[1] // 2**i)
            last_stage = i == len(depths) - 1
            blocks = [
                PromptedSwinBlock(
                    width,
                    res,
                    heads[i],
                    window,
                    0 if j % 2 == 0 else window // 2,
                    mlp_ratio,
                    rates[start + j],
                    chan_dim,
                    chan_windows,
                    last=last_stage and j == depth - 1,
                )
                for j in range(depth)
            ]
            start += depth
            merge = None if last_stage else PromptedMerging(width, res, heads[i], tasks)
            stages.append(Stage(blocks, merge))
            self.channels.append(width if last_stage else 2 * width)
            self.resolutions.append(res if last_stage else (res[0] // 2, res[1] // 2))
        self.layers = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(dim * 2 ** (len(depths) - 1))
        self.embed_dim = dim
        self.apply(init_vit_weights)  # as the official TaskPrompterSwin applies to itself
        self.checkpointing = False
        if config.weights is not None:
            self._load_timm_weights(config, img_size, options)

    def _load_timm_weights(self, config: BackboneConfig, img_size: tuple[int, int], options: dict) -> None:
        """Copy a pretrained timm Swin (timm's layout: merging at the start of the next stage) into these modules."""
        source = create_timm_model(config, img_size=img_size, num_classes=0, **options)
        state = {}
        for key, value in source.state_dict().items():
            parts = key.split(".")
            if key.startswith("layers.") and parts[2] == "downsample":
                key = ".".join(["layers", str(int(parts[1]) - 1), *parts[2:]])
            state[key] = value
        own = self.state_dict()
        # every Swin weight must come from the file; the prompting layers are TaskPrompter's own
        prompting = ("chan_q", "chan_kv", "token_trans", "chan_proj", "token_trans1", "process_chan_attn", "task_prompts_up", "spa_attn_ds")
        swin = [k for k in own if not any(f".{name}." in f".{k}" for name in prompting)]
        missing = [k for k in swin if k not in state]
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in swin if k in state and state[k].shape != own[k].shape]
        if missing or shapes:
            raise ScenemtlError(
                f"weights '{config.weights}' do not fit this Swin at img_size {list(img_size)} "
                f"({key_mismatch(missing, [], shapes)}); a window larger than a stage's grid is shrunk per side by "
                "timm, so choose an img_size whose last stage is at least a window wide"
            )
        self.load_state_dict({k: state[k] for k in swin}, strict=False)

    def run_block(self, block: PromptedSwinBlock, x: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One block, checkpointed when activation checkpointing is on."""
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, prompts, use_reentrant=False)
        return block(x, prompts)

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass."""
        require_checkpointing_timm(enabled)
        self.checkpointing = enabled
