"""TaskPrompter's Swin variant (Ye & Xu, ICLR 2023), as the official ``taskprompter_swin.py``.

The official code trains it on Cityscapes-3D (``configs/cityscapes3d/cs_swinB_taskprompter.yml``:
Swin-B, window 12, semseg + disparity + 3D detection); here it serves every dense task
(``model.arch: taskprompter`` with a Swin backbone). Structure (the prompted encoder is
``taskprompter/prompted_swin.py``):

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
  ``dd_label_map_size``).
- An instance task (``det3d``: 3D detection) reads the four levels' task features at the stages'
  resolutions (not upsampled ×2, not resized to the finest level nor fused, as the official
  ``3ddet`` branch: strides 8, 16, 32, 32) with the head its
  task builds (an FPN and an FCOS3D-style head, ``scenemtl.detection.head``), in the pixels of the
  input image.
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

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.official import KeyMap, Rule, canonical_order
from scenemtl.models.output import ModelOutput
from scenemtl.models.taskprompter.common import HEAD_RULES, PROMPTING_RULES, ConvHead, PromptedModel, level_fusion
from scenemtl.models.taskprompter.prompted_swin import PromptedSwin
from scenemtl.tasks import Task


class TaskPrompterSwin(PromptedModel):
    """TaskPrompter on a Swin Transformer: prompts in every window of every block, four levels fused."""

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        img_size: Sequence[int],
        embed_dim: int,
        final_embed_dim: int,
        chan_embed_dim: int,
        chan_nheads: int,
        head: str,
    ) -> None:
        super().__init__()
        self.task_names = canonical_order(tasks)
        names = self.task_names
        self.img_size = tuple(img_size)
        side, windows = math.isqrt(chan_embed_dim), math.isqrt(chan_nheads)
        if side * side != chan_embed_dim or windows * windows != chan_nheads or side % windows:
            raise ConfigError(
                f"model.options: chan_embed_dim ({chan_embed_dim}) and chan_nheads ({chan_nheads}) must be "
                "squares, the root of chan_nheads dividing that of chan_embed_dim"
            )
        self.backbone = PromptedSwin(config.backbone, self.img_size, len(names), chan_embed_dim, windows)
        bb = self.backbone
        for h, w in bb.resolutions:
            if h % windows or w % windows:
                raise ConfigError(f"model.options.chan_nheads {chan_nheads}: √ must divide every level's grid {h}×{w}")
        self.windows = windows
        self.prompts = nn.Parameter(torch.ones(len(names), bb.embed_dim))
        trunc_normal_(self.prompts, mean=1.0, std=1.0)
        f = final_embed_dim
        self.decode_spatial = nn.ModuleList(nn.ModuleDict({t: nn.Conv2d(c, embed_dim, 1) for t in names}) for c in bb.channels)
        self.decode_channel = nn.ModuleList(nn.ModuleDict({t: nn.Conv2d(c, embed_dim, 1) for t in names}) for c in bb.channels)
        self.fuse = nn.ModuleList(nn.ModuleDict({t: level_fusion(embed_dim, f, 3) for t in names}) for _ in bb.channels)
        self.instance = [t for t in names if not tasks[t].is_map]
        maps = [t for t in names if t not in self.instance]
        self.multi_scale_fuse = nn.ModuleDict({t: nn.Conv2d(f, f, 3, padding=1) for t in maps})
        # an instance task reads each stage's token grid (the 2D tasks' features are upsampled ×2)
        strides = [self.img_size[0] // h for h, _ in bb.resolutions]
        self.heads = nn.ModuleDict(
            {
                t: tasks[t].build_head([f] * len(bb.channels), strides)
                if t in self.instance
                else ConvHead(f, tasks[t].out_channels, deconv=head == "deconv")
                for t in names
            }
        )

    official_key_map: KeyMap  # set below

    def unbuilt_official_parameters(self) -> int:
        """None: the official Swin variant builds no layer its forward leaves unused."""
        return 0

    def _task_features(self, x: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor, level: int) -> list[torch.Tensor]:
        b, _, c = x.shape
        h, w = self.backbone.resolutions[level]
        xm = x.transpose(1, 2).reshape(b, c, h, w)
        heads, n = spatial.shape[1], self.windows
        out = []
        for ti, task in enumerate(self.task_names):
            spa = (xm.reshape(b, heads, c // heads, h, w) * spatial[:, :, ti, None]).reshape(b, c, h, w) + xm
            scale = channel[:, ti].repeat_interleave(h // n, dim=2).repeat_interleave(w // n, dim=3)
            chan = xm * scale + xm
            # the 2D tasks' features are upsampled ×2; the 3D detection's are not (the official 3ddet branch)
            up = [
                y if task in self.instance else F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False) for y in (spa, chan)
            ]
            fused = torch.cat([self.decode_spatial[level][task](up[0]), self.decode_channel[level][task](up[1])], dim=1)
            out.append(self.fuse[level][task](fused))
        return out

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Logits of every task at the input size (computed at ``img_size``)."""
        size = image.shape[-2:]
        x = image if tuple(size) == self.img_size else F.interpolate(image, size=self.img_size, mode="bilinear", align_corners=False)
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
            if task in self.instance:  # its head on the four levels, in the input's pixels
                scale = size[1] / self.img_size[1]
                final[task] = self.heads[task]([level[k] for level in levels], tuple(size), scale=scale)
                continue
            target = levels[0][k].shape[-2:]
            summed = sum(F.interpolate(level[k], size=target, mode="bilinear", align_corners=False) for level in levels)
            final[task] = F.interpolate(
                self.heads[task](self.multi_scale_fuse[task](summed)), size=size, mode="bilinear", align_corners=False
            )
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
    drop={
        "backbone.layers.{n}.blocks.{m}.attn.relative_position_index": "derived from the window size",
        "backbone.layers.{n}.blocks.{m}.attn_mask": "derived from the window size and shift",
    },
)
TaskPrompterSwin.official_key_map = OFFICIAL_KEYS
