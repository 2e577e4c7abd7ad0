"""TaskPrompter (Ye & Xu, ICLR 2023: "TaskPrompter: Spatial-Channel Multi-Task Prompting for Dense Scene
Understanding"), on a ViT.

Structure, as the official code (``prismformore/Multi-Task-Transformer``, ``TaskPrompter/models/
transformers/taskprompter.py``, ``models/taskprompter_wrapper.py``, configs
``TaskPrompter/configs/{pascal,nyud}/*_taskprompter.yml``):

- **Task prompts**: one learnable token per task (``prompt_len`` 1; initialised N(1, 1) truncated
  to [−2, 2]) concatenated in front of the patch tokens in **every** ViT block: the prompts go
  through the block's norm, attention and MLP with the patch tokens (its weights are shared);
  the ViT's class token is not used (its position slot is kept, unused, as the official does).
- **Spatial prompting**: each task's prompt-to-patch scores (the raw ``q·kᵀ`` of the block,
  before scaling and softmax) re-weight the channel group of each head of the patch features
  (plus the features) → 1×1 conv (``fea_decode_spa``) to ``embed_dim``.
- **Channel prompting**: each prompt, projected to one value per pixel (``token_trans``: a
  Linear to the h·w of the **training grid**), is a query over the channel tokens (the patch
  features transposed), in ``chan_nheads`` windows (√n × √n); the raw scores scale each
  window's channels (plus the features) → 1×1 conv (``fea_decode_chan``). The projected prompt
  returns to the prompt through ``token_trans1``.
- At blocks 6/12/18 and after the final norm (ViT-L; 3/6/9 and the final norm for ViT-B,
  ``layers``) both are concatenated and fused (``fea_fuse``: 1×1, 3×3 + BN + GELU, 1×1 to
  ``final_embed_dim``); optionally **cross-task reweighting** (``use_ctr``: each task's
  prompt-to-prompt scores → 1×1 conv, GELU, 1×1 conv → a weight per task, mixing the tasks'
  features); the four are summed, ×4 upsampled (1/4), and each task's head (``ConvHead``: 3×3
  conv + BN + GELU, 1×1; ``DEConvHead`` with ``head: deconv``) predicts, bilinear to the input.

Configs of the releases: PASCAL ViT-L ``embed_dim`` 300, ``final_embed_dim`` 350, ``chan_nheads``
1, CTR on; PASCAL ViT-B 780/1024, 16, on; NYUD ViT-L 768/768, 16, off.

Faithfulness: the released checkpoints load through ``OFFICIAL_KEYS`` (``scenemtl convert``,
``scenemtl eval --checkpoint *.pth.tar``) and this module computes the official forward.

Differences from the official code, and why:

- **Resolution**: ``token_trans`` maps a prompt to the h·w values of the training grid, so the
  weights fix the size (``img_size``). Inputs of another size are resized (bilinear) to it and
  the predictions resized back to the input, as the official inference script resizes images to
  the training size; this keeps every input valid, at the cost of the aspect ratio.
- **Attention** through ``scaled_dot_product_attention``: the raw scores the prompting reads are
  only the prompts' rows (T × (T + N) per head), computed apart, so the N × N score matrix is
  never materialised. The official channel attention also computes a softmax and a product with
  the values whose result it never reads; that is skipped.
- The line ``chan_prompts = self.chan_proj(chan_x)`` is commented out in the official code, and
  its checkpoints have no such layer (MTT#32): so here too the projected prompt itself, not the
  attention output, returns through ``token_trans1``.
- The last block's ``token_trans1`` (and the prompts' update after the last block) is not built:
  its output reaches nothing (1,049,600 parameters for ViT-L at 512×512, which get no gradient
  in the official training either); the key map lists it as dropped.
- ``prompt_len`` is 1, as every released config (the official channel indexing and CTR assume 1).
- Tasks are processed in the official order (semseg, depth, human_parts, saliency, normals,
  edge; others after) so the prompt rows line up with checkpoints. Saliency's head is one logit
  (official: two-class softmax; ``w₁ − w₀`` is exact; ``final_embed_dim`` + 1 parameters fewer).
- Batch norms are ``BatchNorm2d`` (official ``convert_sync_batchnorm``: ``train.sync_bn``).
- The Swin variant of the official code is ``taskprompter/swin.py`` (chosen by a Swin backbone,
  ``backbone_family`` 'swin').
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import ViTBackbone, backbone_family, check_layers, default_layers
from scenemtl.models.layers import resize
from scenemtl.models.official import KeyMap, Rule, canonical_order
from scenemtl.models.output import ModelOutput
from scenemtl.models.taskprompter.common import HEAD_RULES, PROMPTING_RULES, ConvHead, PromptedModel, init_vit_weights, level_fusion
from scenemtl.tasks import Task


class TaskPrompter(PromptedModel):
    """A ViT whose every block carries one prompt per task; spatial and channel prompting at four depths."""

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        img_size: Sequence[int],
        embed_dim: int,
        final_embed_dim: int,
        chan_nheads: int,
        use_ctr: bool,
        layers: Sequence[int] | None,
        head: str,
    ) -> None:
        super().__init__()
        family = backbone_family(config.backbone.name)
        if family != "vit":
            raise ConfigError(
                f"taskprompter runs on a ViT (e.g. vit_large_patch16_384) or a Swin "
                f"(swin_base_patch4_window12_384), not '{config.backbone.name}' (timm family '{family}')"
            )
        self.task_names = canonical_order(tasks)
        names = self.task_names
        self.img_size = tuple(img_size)
        self.backbone = ViTBackbone(config.backbone, img_size, class_token=False)
        vit = self.backbone
        if vit.patch_size != 16:
            raise ConfigError(
                f"taskprompter reads its ViT at the strides of 16-pixel patches (its decoder's ×2 steps and the official "
                f"layout); '{config.backbone.name}' has {vit.patch_size}-pixel patches: use a patch-16 ViT, or invpt/hps, "
                "which take patch-14 encoders (DINOv2, EVA-02)"
            )
        self.layers = check_layers(default_layers(vit.depth, 4)[:3] if layers is None else layers, vit.depth - 1, 3, "layers")
        self.grid = vit.grid
        windows = math.isqrt(chan_nheads)
        if windows * windows != chan_nheads or self.grid[0] % windows or self.grid[1] % windows:
            raise ConfigError(
                f"model.options.chan_nheads must be a square whose root divides the token grid "
                f"{self.grid[0]}×{self.grid[1]} of img_size {list(self.img_size)}, got {chan_nheads}"
            )
        self.windows = windows
        c, heads, pixels = vit.embed_dim, vit.num_heads, self.grid[0] * self.grid[1]
        self.prompts = nn.Parameter(torch.ones(len(names), c))
        trunc_normal_(self.prompts, mean=1.0, std=1.0)
        self.chan_query = nn.ModuleList(nn.Linear(c, pixels) for _ in range(vit.depth))
        # the last block's feedback would only reach prompts that are never read again
        self.chan_feedback = nn.ModuleList(nn.Linear(pixels, c) for _ in range(vit.depth - 1))
        levels = range(4)
        self.decode_spatial = nn.ModuleList(nn.ModuleDict({t: nn.Conv2d(c, embed_dim, 1) for t in names}) for _ in levels)
        self.decode_channel = nn.ModuleList(nn.ModuleDict({t: nn.Conv2d(c, embed_dim, 1) for t in names}) for _ in levels)
        f = final_embed_dim
        self.fuse = nn.ModuleList(nn.ModuleDict({t: level_fusion(embed_dim, f, 1) for t in names}) for _ in levels)
        self.ctr = (
            nn.ModuleList(
                nn.ModuleDict({t: nn.Sequential(nn.Conv2d(heads, heads, 1), nn.GELU(), nn.Conv2d(heads, 1, 1)) for t in names})
                for _ in levels
            )
            if use_ctr
            else None
        )
        for module in [
            self.chan_query,
            self.chan_feedback,
            self.decode_spatial,
            self.decode_channel,
            self.fuse,
            *([self.ctr] if use_ctr else []),
        ]:
            module.apply(init_vit_weights)
        self.heads = nn.ModuleDict({t: ConvHead(f, tasks[t].out_channels, deconv=head == "deconv") for t in names})

    official_key_map: KeyMap  # set below

    def unbuilt_official_parameters(self) -> int:
        """The official last block's ``token_trans1``, which reaches no output (not built here)."""
        feedback = self.chan_feedback[0]
        return feedback.weight.numel() + feedback.bias.numel()

    def _block(self, index: int, x: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One prompted ViT block: new tokens and prompts, raw prompt scores ``[B,H,T,T+N]`` and channel scores."""
        # timm's Block and Attention run step by step: the prompting reads the raw q·kᵀ of the prompts' rows,
        # which no timm method returns (a ViTBackbone method would only move this code, not the coupling)
        blk = self.backbone.vit.blocks[index]
        attn = blk.attn
        xn, pn = blk.norm1(x), blk.norm1(prompts)
        t = pn.shape[1]
        tokens = torch.cat([pn, xn], dim=1)
        b, n, c = tokens.shape
        heads = attn.num_heads
        q, k, v = attn.qkv(tokens).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(q), attn.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if self.training else 0.0)
        spatial_scores = q[:, :, :t] @ k.transpose(-2, -1)  # raw q·kᵀ of the prompts' rows
        out = attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(b, n, c))))
        prompt_out, x_out = out[:, :t], out[:, t:]

        chan_prompts = self.chan_query[index](pn)  # [B, T, h·w]
        channel_scores = self._channel_scores(chan_prompts, xn)
        x = x + blk.drop_path1(blk.ls1(x_out))
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        if index < len(self.chan_feedback):  # the last block's prompts are not read again
            prompt_out = prompt_out + self.chan_feedback[index](chan_prompts)
            prompts = prompts + blk.drop_path1(blk.ls1(prompt_out))
            prompts = prompts + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(prompts))))
        return x, prompts, spatial_scores, channel_scores

    def _channel_scores(self, chan_prompts: torch.Tensor, xn: torch.Tensor) -> torch.Tensor:
        """Raw prompt-to-channel scores per window: ``[B, T, C, nh, nw]``."""
        b, t, _ = chan_prompts.shape
        c = xn.shape[-1]
        (h, w), n = self.grid, self.windows
        wh, ww = h // n, w // n

        def windows(x: torch.Tensor) -> torch.Tensor:  # [B, R, h·w] → [B, n·n, R, wh·ww]
            rows = x.shape[1]
            return x.reshape(b, rows, n, wh, n, ww).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, rows, wh * ww)

        scores = windows(chan_prompts) @ windows(xn.transpose(1, 2)).transpose(-2, -1)  # [B, n·n, T, C]
        return scores.reshape(b, n, n, t, c).permute(0, 3, 4, 1, 2)

    def _task_features(self, x: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor, level: int) -> list[torch.Tensor]:
        b, _, c = x.shape
        (h, w), n = self.grid, self.windows
        t = len(self.task_names)
        xm = x.transpose(1, 2).reshape(b, c, h, w)
        heads = spatial.shape[1]
        features = []
        for ti, task in enumerate(self.task_names):
            weight = spatial[:, :, ti, t:].reshape(b, heads, 1, h, w)
            spa = (xm.reshape(b, heads, c // heads, h, w) * weight).reshape(b, c, h, w) + xm
            scale = channel[:, ti].repeat_interleave(h // n, dim=2).repeat_interleave(w // n, dim=3)
            chan = xm * scale + xm
            fused = torch.cat([self.decode_spatial[level][task](spa), self.decode_channel[level][task](chan)], dim=1)
            features.append(self.fuse[level][task](fused))
        if self.ctr is not None:
            mixed = []
            for ti, task in enumerate(self.task_names):
                weights = self.ctr[level][task](spatial[:, :, ti : ti + 1, :t])  # [B, 1, 1, T]
                mixed.append(sum(weights[..., si : si + 1] * f for si, f in enumerate(features)))
            features = mixed
        return features

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Logits of every task at the input size (computed at ``img_size``)."""
        size = image.shape[-2:]
        x = image if tuple(size) == self.img_size else F.interpolate(image, size=self.img_size, mode="bilinear", align_corners=False)
        tokens, _ = self.backbone.embed(x)  # patch tokens only: the class token was removed
        # a copy, not an expanded view: FlopCounterMode's module hooks reject no-grad views of parameters
        prompts = self.prompts[None].repeat(tokens.shape[0], 1, 1)
        totals: list[torch.Tensor | float] = [0.0] * len(self.task_names)
        level = 0
        for index in range(self.backbone.depth):
            if self.backbone.checkpointing and torch.is_grad_enabled():
                tokens, prompts, spatial, channel = checkpoint(self._block, index, tokens, prompts, use_reentrant=False)
            else:
                tokens, prompts, spatial, channel = self._block(index, tokens, prompts)
            if index + 1 in self.layers:
                for k, feature in enumerate(self._task_features(tokens, spatial, channel, level)):
                    totals[k] = totals[k] + feature
                level += 1
        tokens = self.backbone.vit.norm(tokens)
        quarter = (4 * self.grid[0], 4 * self.grid[1])
        final = {}
        for k, feature in enumerate(self._task_features(tokens, spatial, channel, 3)):
            task = self.task_names[k]
            feature = F.interpolate(totals[k] + feature, size=quarter, mode="bilinear", align_corners=False)
            final[task] = resize(self.heads[task](feature), size)
        return ModelOutput(final=final)

    def task_only_modules(self) -> list[nn.Module]:
        """The per-task decoding (shared through the cross-task reweighting when it is on) and heads."""
        if self.ctr is not None:
            return [self.ctr, self.heads]
        return [self.decode_spatial, self.decode_channel, self.fuse, self.heads]


OFFICIAL_KEYS = KeyMap(
    method="TaskPrompter",
    signature="backbone.task_prompts",
    rules=[
        *PROMPTING_RULES,
        Rule("backbone.blocks.{n}.attn.token_trans.{rest}", "chan_query.{n}.{rest}"),
        Rule("backbone.blocks.{n}.attn.token_trans1.{rest}", "chan_feedback.{n}.{rest}"),
        Rule("backbone.ctr_attn_conv.{n}.{t}.{rest}", "ctr.{n}.{t}.{rest}"),
        Rule("backbone.{rest}", "backbone.vit.{rest}"),
        *HEAD_RULES,
    ],
    drop={"backbone.blocks.{n}.attn.token_trans1.{rest}": "the last block's: its prompts are never read again"},
)
TaskPrompter.official_key_map = OFFICIAL_KEYS
