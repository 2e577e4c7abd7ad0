"""TaskPrompter's Swin variant (Ye & Xu, ICLR 2023), as the official ``taskprompter_swin.py``.

The official code trains it on Cityscapes-3D (``configs/cityscapes3d/cs_swinB_taskprompter.yml``:
Swin-B, window 12, semseg + disparity + 3D detection); here it serves every dense task
(``model.arch: taskprompter`` with a ``swin_*`` backbone). Structure:

- **Prompts in windows**: the task prompts (``embed_dim``-wide, one per task) are concatenated in
  front of the tokens of **every window** of every Swin block; the relative position bias and
  the shifted-window mask apply to the patch tokens only; each window's prompt outputs are
  averaged over the windows. The prompts' raw (unscaled, bias-free) scores over the window's
  patches, put back on the image grid, are the spatial prompt maps.
- **Channel prompting** per block: the (un-normalised) prompts → ``token_trans`` (to
  ``chan_embed_dim`` = D) → ``chan_q`` queries; the block's attention output, transposed to channel
  tokens, → ``chan_kv`` (a Linear from the stage's **h·w pixels**: the resolution is in the
  weights) → keys and values; raw scores over √D × √D windows (``chan_nheads``) are the channel
  prompt maps; softmax(·/√D)·v → ``chan_proj`` → ``token_trans1`` returns to the prompts (not in
  the last block, whose prompts are never read).
- **Patch merging** also downsamples the spatial maps (3×3 stride-2 conv over heads × tasks,
  ``spa_attn_ds``), widens the channel maps (``process_chan_attn``) and the prompts
  (``task_prompts_up``).
- After each stage (its merged output) and after the final norm, each task's feature is
  re-weighted spatially per head and per channel (plus the feature), each ×2 upsampled, 1×1 to
  ``embed_dim`` (``level_embed_dim``), concatenated and fused (1×1, 3×3 + BN + GELU, 3×3 to
  ``final_embed_dim``); the four levels are resized to the finest, summed and fused by a 3×3
  conv (``multi_scale_fuse``); heads (``DEConvHead`` as released, or ``ConvHead``) predict, bilinear
  to the input size.

Differences from the official code, and why:

- The input is resized to ``img_size`` (the official resizes by ``img_ds_ratio``: 0.75 of
  1024×2048 = 768×1536) and the predictions to the input size (official: to the label size
  ``dd_label_map_size``); the 3D-detection head (mmdet3d's FCOS3D) is not part of scenemtl.
- Attention through ``scaled_dot_product_attention`` with the bias and mask as an additive mask;
  the prompts' raw scores are computed apart (T × window rows).
- Pretrained Swin weights come from timm (a local file or the hub, in timm's layout, whose patch
  merging sits at the start of the next stage: renamed when copied); the official loads
  Microsoft's files, whose layout this module's names follow, so its checkpoints load by name.
- Relative position indices and shift masks are derived buffers, not stored in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from timm.models.swin_transformer import SwinTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from scenemtl.config import BackboneConfig, ModelConfig
from scenemtl.errors import ConfigError, ScenemtlError, key_mismatch
from scenemtl.models.backbones import _weights, require_checkpointing_timm
from scenemtl.models.heads import Mlp
from scenemtl.models.official import KeyMap, Rule, canonical_order
from scenemtl.models.output import ModelOutput
from scenemtl.models.taskprompter import HEAD_RULES, PROMPTING_RULES, ConvHead, PromptedModel, init_vit_weights
from scenemtl.tasks import Task


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

    def forward(self, x: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        additive = additive[None].expand(b, -1, -1, -1, -1).reshape(-1, self.heads, t + n, t + n) \
            if mask is not None else additive
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
        out = self.proj(out.transpose(1, 2).reshape(bw, t + n, c))
        return out[:, t:], raw, out[:, :t].reshape(b, windows, t, c).mean(dim=1)


class PromptedSwinBlock(nn.Module):
    """A Swin block carrying the task prompts, with TaskPrompter's channel prompting."""

    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int, mlp_ratio: float,
                 drop_path: float, chan_dim: int, chan_windows: int, last: bool) -> None:
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
        self.register_buffer("attn_mask", _shift_mask(h + self.pad[0], w + self.pad[1], window, shift) if shift else None,
                             persistent=False)
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
            mixed = self._unwindows((scores * self.chan_dim ** -0.5).softmax(dim=-1) @ self._windows(v))
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

    def forward(self, x: torch.Tensor, prompts: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
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

    def __init__(self, config: BackboneConfig, img_size: tuple[int, int], tasks: int, chan_dim: int,
                 chan_windows: int) -> None:
        super().__init__()
        options = dict(config.options)
        drop_path_rate = float(options.pop("drop_path_rate", 0.0))
        options.pop("img_size", None)
        if not timm.is_model(config.name):
            raise ConfigError(f"unknown backbone 'model.backbone.name: {config.name}' (e.g. swin_base_patch4_window12_384)")
        with torch.device("meta"):
            try:
                shape = timm.create_model(config.name, img_size=img_size, **options)
            except TypeError as error:
                raise ConfigError(f"backbone '{config.name}' rejects model.backbone.options: {error}") from None
        if type(shape) is not SwinTransformer:
            raise ConfigError(f"TaskPrompter's Swin variant is built on Swin (v1: swin_tiny/small/base/large_*), "
                              f"not '{config.name}' ({type(shape).__name__})")
        dim, patch = shape.embed_dim, shape.patch_embed.patch_size[0]
        depths = [len(layer.blocks) for layer in shape.layers]
        heads = [layer.blocks[0].attn.num_heads for layer in shape.layers]
        window = shape.layers[0].blocks[0].window_size[0]
        mlp_ratio = shape.layers[0].blocks[0].mlp.fc1.out_features / dim
        if img_size[0] % (patch * 8) or img_size[1] % (patch * 8):
            raise ConfigError(f"model.options.img_size {list(img_size)} must divide by {patch * 8} "
                              f"(patch {patch}, three 2×2 merges)")
        self.patch_embed = PatchEmbed(dim, patch)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        grid = (img_size[0] // patch, img_size[1] // patch)
        stages, start = [], 0
        self.channels, self.resolutions, self.heads = [], [], heads
        for i, depth in enumerate(depths):
            width = dim * 2 ** i
            res = (grid[0] // 2 ** i, grid[1] // 2 ** i)
            last_stage = i == len(depths) - 1
            blocks = [PromptedSwinBlock(width, res, heads[i], window, 0 if j % 2 == 0 else window // 2, mlp_ratio,
                                        rates[start + j], chan_dim, chan_windows, last=last_stage and j == depth - 1)
                      for j in range(depth)]
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
        pretrained, overlay = _weights(config)
        try:
            source = timm.create_model(config.name, pretrained=pretrained, pretrained_cfg_overlay=overlay,
                                       img_size=img_size, num_classes=0, **options)
        except (OSError, RuntimeError) as error:
            raise ScenemtlError(f"cannot load weights '{config.weights}' for backbone '{config.name}': {error}. "
                                "Give a local file in model.backbone.weights, or null.") from None
        state = {}
        for key, value in source.state_dict().items():
            parts = key.split(".")
            if key.startswith("layers.") and parts[2] == "downsample":
                key = ".".join(["layers", str(int(parts[1]) - 1), *parts[2:]])
            state[key] = value
        own = self.state_dict()
        # every Swin weight must come from the file; the prompting layers are TaskPrompter's own
        prompting = ("chan_q", "chan_kv", "token_trans", "chan_proj", "token_trans1", "process_chan_attn",
                     "task_prompts_up", "spa_attn_ds")
        swin = [k for k in own if not any(f".{name}." in f".{k}" for name in prompting)]
        missing = [k for k in swin if k not in state]
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in swin
                  if k in state and state[k].shape != own[k].shape]
        if missing or shapes:
            raise ScenemtlError(
                f"weights '{config.weights}' do not fit this Swin at img_size {list(img_size)} "
                f"({key_mismatch(missing, [], shapes)}); a window larger than a stage's grid is shrunk per side by "
                "timm, so choose an img_size whose last stage is at least a window wide")
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


class TaskPrompterSwin(PromptedModel):
    """TaskPrompter on a Swin Transformer: prompts in every window of every block, four levels fused."""

    def __init__(self, config: ModelConfig, tasks: Mapping[str, Task], img_size: Sequence[int], embed_dim: int,
                 final_embed_dim: int, chan_embed_dim: int, chan_nheads: int, head: str) -> None:
        super().__init__()
        self.task_names = canonical_order(tasks)
        names = self.task_names
        self.img_size = tuple(img_size)
        side, windows = math.isqrt(chan_embed_dim), math.isqrt(chan_nheads)
        if side * side != chan_embed_dim or windows * windows != chan_nheads or side % windows:
            raise ConfigError(f"model.options: chan_embed_dim ({chan_embed_dim}) and chan_nheads ({chan_nheads}) must be "
                              "squares, the root of chan_nheads dividing that of chan_embed_dim")
        self.backbone = PromptedSwin(config.backbone, self.img_size, len(names), chan_embed_dim, windows)
        bb = self.backbone
        for (h, w) in bb.resolutions:
            if h % windows or w % windows:
                raise ConfigError(f"model.options.chan_nheads {chan_nheads}: √ must divide every level's grid {h}×{w}")
        self.windows = windows
        self.prompts = nn.Parameter(torch.ones(len(names), bb.embed_dim))
        trunc_normal_(self.prompts, mean=1.0, std=1.0)
        f = final_embed_dim
        self.decode_spatial = nn.ModuleList(
            nn.ModuleDict({t: nn.Conv2d(c, embed_dim, 1) for t in names}) for c in bb.channels)
        self.decode_channel = nn.ModuleList(
            nn.ModuleDict({t: nn.Conv2d(c, embed_dim, 1) for t in names}) for c in bb.channels)
        self.fuse = nn.ModuleList(nn.ModuleDict({
            t: nn.Sequential(nn.Conv2d(2 * embed_dim, f, 1), nn.Conv2d(f, f, 3, padding=1), nn.BatchNorm2d(f), nn.GELU(),
                             nn.Conv2d(f, f, 3, padding=1))
            for t in names}) for _ in bb.channels)
        self.multi_scale_fuse = nn.ModuleDict({t: nn.Conv2d(f, f, 3, padding=1) for t in names})
        self.heads = nn.ModuleDict({t: ConvHead(f, tasks[t].out_channels, deconv=head == "deconv") for t in names})

    official_key_map: KeyMap  # set below

    def unbuilt_official_parameters(self) -> int:
        """None: the official Swin variant builds no layer its forward leaves unused."""
        return 0

    def _task_features(self, x: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor, level: int
                       ) -> list[torch.Tensor]:
        b, _, c = x.shape
        h, w = self.backbone.resolutions[level]
        xm = x.transpose(1, 2).reshape(b, c, h, w)
        heads, n = spatial.shape[1], self.windows
        out = []
        for ti, task in enumerate(self.task_names):
            spa = (xm.reshape(b, heads, c // heads, h, w) * spatial[:, :, ti, None]).reshape(b, c, h, w) + xm
            scale = channel[:, ti].repeat_interleave(h // n, dim=2).repeat_interleave(w // n, dim=3)
            chan = xm * scale + xm
            up = [F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False) for y in (spa, chan)]
            fused = torch.cat([self.decode_spatial[level][task](up[0]), self.decode_channel[level][task](up[1])], dim=1)
            out.append(self.fuse[level][task](fused))
        return out

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Logits of every task at the input size (computed at ``img_size``)."""
        size = image.shape[-2:]
        x = image if tuple(size) == self.img_size else F.interpolate(
            image, size=self.img_size, mode="bilinear", align_corners=False)
        bb = self.backbone
        tokens = bb.patch_embed(x)
        prompts = self.prompts[None].repeat(tokens.shape[0], 1, 1)
        levels: list[list[torch.Tensor]] = []
        for level, stage in enumerate(bb.layers):
            for block in stage.blocks:
                tokens, prompts, spatial, channel = bb.run_block(block, tokens, prompts)
            if stage.downsample is not None:
                tokens, prompts, spatial, channel = stage.downsample(tokens, prompts, spatial, channel)
                levels.append(self._task_features(tokens, spatial, channel, level))
        levels.append(self._task_features(bb.norm(tokens), spatial, channel, len(bb.layers) - 1))
        final = {}
        for k, task in enumerate(self.task_names):
            target = levels[0][k].shape[-2:]
            summed = sum(F.interpolate(level[k], size=target, mode="bilinear", align_corners=False) for level in levels)
            final[task] = F.interpolate(self.heads[task](self.multi_scale_fuse[task](summed)), size=size,
                                        mode="bilinear", align_corners=False)
        return ModelOutput(final=final)

    def task_only_modules(self) -> list[nn.Module]:
        """The per-task decoding, fusion and heads."""
        return [self.decode_spatial, self.decode_channel, self.fuse, self.multi_scale_fuse, self.heads]


OFFICIAL_KEYS = KeyMap(
    method="TaskPrompter (Swin)",
    signature="backbone.task_prompts",
    rules=[
        *PROMPTING_RULES,
        Rule("backbone.multi_scale_fuse.{t}.{rest}", "multi_scale_fuse.{t}.{rest}"),
        Rule("backbone.{rest}", "backbone.{rest}"),
        *HEAD_RULES,
    ],
    drop={"backbone.layers.{n}.blocks.{m}.attn.relative_position_index": "derived from the window size",
          "backbone.layers.{n}.blocks.{m}.attn_mask": "derived from the window size and shift"},
)
TaskPrompterSwin.official_key_map = OFFICIAL_KEYS
