"""InvPT (Ye & Xu, ECCV 2022: "Inverted Pyramid Multi-task Transformer for Dense Scene Understanding").

Structure, as the official code (``prismformore/Multi-Task-Transformer``, ``InvPT/models/
transformer_net.py``, ``models/transformers/{vit,transformer_decoder,invpt}.py``, configs
``InvPT/configs/{pascal,nyud}/*_vitLp16.yml``):

- **Encoder**: a ViT (``vit_large_patch16_384``, drop path 0.15) at the training size; the
  outputs of blocks 6 and 12 and the normed output of block 24 (``layers``: 3/6/12 of ViT-B)
  as maps at 1/16.
- **Preliminary decoder** (``TransformerDecoder``): the last map bilinearly resized to 1/32
  (``mtt_resolution_downsample_rate: 2``), per task two 3×3 conv-BN-ReLU blocks (C → C →
  ``embed_dim`` 512) and a 1×1 conv giving the preliminary prediction (``aux["preliminary"]``,
  intermediate supervision with the task's own loss and weight, as ``intermediate_supervision:
  True``); feature and prediction concatenated → 1×1 ``mix_proj`` to D₀ = 512 + 64 = 576.
- **UP-Transformer** (``InvPT``): three stages of dims D₀, D₀/2, D₀/4 at 1/32, 1/16, 1/8, each
  one block over the tokens of **all tasks concatenated** (task × space): pre-norm, joint
  attention with 2 heads whose queries come from a per-task depthwise 3×3 stride-2 conv + BN and
  keys/values from average pooling with kernel = stride 2, 4, 8 (ceil mode) and shared linear
  projections (with bias), softmax(q·kᵀ / √D) with D the stage's full width (as the official
  ``scale = dim_out ** -0.5``), the output resized back to the stage's grid; then the MLP (ratio
  4). **Attention message passing**: each stage's pre-softmax scores are resized ×2 over the
  query grid and fused with the next stage's scores by a 1×1 conv over the heads (``fuse_attn``).
  Stages 1 and 2 first upsample each task's map ×2 (``UpEmbed``: bilinear, two 3×3 convs with
  dilation 2 + BN + ReLU) and add a backbone skip: block 12 through a 3×3 conv (1/16), block 6
  through a stride-2 transposed conv (1/8). After each stage a LayerNorm over the concatenated
  channels of all tasks (``norm_mts``).
- **Multi-scale aggregation**: each stage's per-task features (stages 1, 2 reduced to D₀ by a
  1×1 conv) resized to 1/4 and summed; 3×3 conv-BN-ReLU (``mt_proj``); a 1×1 head (``MLPHead``);
  bilinear to the input size.

Faithfulness: with ``scenemtl convert`` / ``scenemtl eval --checkpoint *.pth.tar`` the released
``InvPT_{pascal,nyud}_vitLp16`` checkpoints load through ``OFFICIAL_KEYS`` (every key mapped or
listed as unused) and this module computes the official forward.

Differences from the official code, and why:

- **Unused official parameters are not built**: the stage-0 skip conv (``scale_embed.2``,
  computed but never added: stage 0 has no ``UpEmbed``), the stage-0 ``redu_chan`` and
  ``fuse_attn`` (never called), and ``norm_mt`` (never called): 6,972,202 parameters for ViT-L on
  PASCAL, 6,639,562 on NYUD. They get no gradient in the official training either (hence its
  ``find_unused_parameters=True``); the key map lists them as dropped. Saliency's final head is
  one logit where the official has a two-class softmax (``w₁ − w₀``, exact; 577 parameters
  fewer); its preliminary head keeps two channels because ``mix_proj`` reads both.
- **Task order**: tasks are processed in the official order (semseg, depth, human_parts,
  saliency, normals, edge; others after), whatever order the config lists them in, so the
  per-task layouts of the joint norms and of checkpoints line up.
- **Any input size**: the official code fixes the token grid in its rearranges. Here the input
  is zero-padded at the bottom/right to a multiple of 64 (so the 1/32 grid is even, as the
  message passing needs), the ViT's position embedding is resampled to the grid, and the outputs
  are cropped back. A patch-14 ViT (DINOv2, EVA-02) pads that input once more to a multiple of 14; its
  maps are sampled onto the stages' grids where their cells lie (``layers.regrid``), not stretched
  over them (which would shift features by up to 13 pixels); with patch 16 both are the same. The
  official sizes (512×512, 448×576) are multiples of 64: no padding there.
  Message and skip resizes are written with target sizes instead of scale factors (identical on
  those grids).
- **Any backbone**: besides ViTs (``layers``: timm's ``VisionTransformer`` and ``Eva`` classes alike, so
  DINOv2, DINOv3, SigLIP 2, EVA-02 and PE encoders give the same blocks), any timm backbone (Swin,
  ConvNeXt, ResNet) gives
  its last three levels; a skip at the stage's stride uses a 3×3 conv, one at twice the stride
  the transposed conv, others are resized first.
- The decoder's stochastic depth is 0, as the official schedule ``linspace(0, 0.15, depth=1)``
  makes it; the joint attention materialises its scores (the message passing needs them), so it
  does not use ``scaled_dot_product_attention``; the encoder's attention does (timm).
- Batch norms are ``BatchNorm2d`` (the official ``SyncBatchNorm``: ``train.sync_bn`` converts).
- **Factored fusion** (``model.options.fusion``): every input of the 3×3 fusion at 1/4 is a bilinear resize of a
  coarser map, so the reduction, resize, sum and convolution are computed at the stages' resolutions
  (``layers.conv3x3_of_resized``): the same function, parameters and gradients (equal up to float rounding,
  ``tests/models/test_transformers.py``), about a tenth of the multiply-adds of the convolution that is two
  thirds of a CPU training step. ``auto`` (the default) factors on a CPU and keeps the dense convolution on
  other devices (where it is unmeasured yet); ``factored`` and ``dense`` force either. ``scenemtl info`` counts
  the dense architecture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import VIT_FAMILIES, Backbone, ViTBackbone, backbone_family, check_layers, default_layers
from scenemtl.models.base import MultiTaskModel, check_positive_ints
from scenemtl.models.layers import conv3x3_of_resized, conv_norm_act, fp32_conv, recomputed, regrid, resize, shortcuts_allowed
from scenemtl.models.official import (
    KeyMap,
    Rule,
    canonical_order,
    official_channels,
    two_class_to_logit,
)
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task

#: decoder stages: key/value pooling kernel = stride, and the stride of each stage's grid
KV_STRIDES = (2, 4, 8)
STAGE_STRIDES = (32, 16, 8)
#: inputs are padded to a multiple of this: the 1/32 grid must be even for the message passing
PAD_MULTIPLE = 64
#: ``model.options.fusion``: how the 1/4 fusion is computed (the same function; see the module docstring)
FUSIONS = ("auto", "factored", "dense")
#: and to at least this: stage 0's query grid (1/64) then has 2×2 positions (batch norm in
#: training needs more than one value per channel at batch 1)
MIN_SIDE = 128


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def _map(tokens: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *size)


class JointAttention(nn.Module):
    """Attention over every task's tokens at once, with the previous stage's scores fused in."""

    def __init__(self, tasks: Sequence[str], dim: int, heads: int, kv_stride: int, message: bool) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.heads = heads
        self.scale = dim**-0.5  # the official scale: the stage's full width, not the head width
        self.q_conv = nn.ModuleDict({t: conv_norm_act(dim, dim, 3, stride=2, groups=dim, act=None) for t in tasks})
        self.pool = nn.AvgPool2d(kv_stride, kv_stride, ceil_mode=True)
        self.proj_q = nn.Linear(dim, dim)
        self.proj_k = nn.Linear(dim, dim)
        self.proj_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.fuse_attn = nn.Conv2d(2 * heads, heads, 1) if message else None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, maps: Sequence[torch.Tensor], message: torch.Tensor | None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-task outputs on the query grid (half the input grid) and the pre-softmax scores."""
        queries = [self.q_conv[t](m) for t, m in zip(self.tasks, maps)]
        q_size = queries[0].shape[-2:]
        q = self._heads(self.proj_q(torch.cat([_tokens(x) for x in queries], dim=1)))
        pooled = torch.cat([_tokens(self.pool(m)) for m in maps], dim=1)  # keys and values: the same pooling
        k = self._heads(self.proj_k(pooled))
        v = self._heads(self.proj_v(pooled))
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if message is not None:
            b, heads, rows, keys = message.shape
            per_task = rows // len(self.tasks)
            source = _source_grid(per_task, q_size)
            parts = []
            for chunk in message.split(per_task, dim=2):
                grid = chunk.transpose(2, 3).reshape(b * heads, keys, *source)
                grid = resize(grid, q_size)
                parts.append(grid.reshape(b, heads, keys, -1).transpose(2, 3))
            scores = self.fuse_attn(torch.cat([scores, torch.cat(parts, dim=2)], dim=1))
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(q.shape[0], -1, self.heads * v.shape[-1])
        out = self.proj(out)
        n = q_size[0] * q_size[1]
        return [_map(part, q_size) for part in out.split(n, dim=1)], scores


def _source_grid(tokens: int, q_size: Sequence[int]) -> tuple[int, int]:
    """The previous stage's query grid: half of this one's in each side (rounded up)."""
    h, w = -(-q_size[0] // 2), -(-q_size[1] // 2)
    if h * w != tokens:
        raise RuntimeError(f"attention message of {tokens} tokens does not fit a {h}×{w} grid")
    return h, w


class JointBlock(nn.Module):
    """Pre-norm joint attention (output resized back to the grid) and MLP over all tasks' tokens."""

    def __init__(self, tasks: Sequence[str], dim: int, heads: int, mlp_ratio: float, kv_stride: int, message: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = JointAttention(tasks, dim, heads, kv_stride, message)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, maps: Sequence[torch.Tensor], message: torch.Tensor | None) -> tuple[list[torch.Tensor], torch.Tensor]:
        size = maps[0].shape[-2:]
        x = torch.cat([_tokens(m) for m in maps], dim=1)
        normed = [_map(part, size) for part in self.norm1(x).split(size[0] * size[1], dim=1)]
        outputs, scores = self.attn(normed, message)
        x = x + torch.cat([_tokens(resize(o, size)) for o in outputs], dim=1)
        x = x + self.mlp(self.norm2(x))
        return [_map(part, size) for part in x.split(size[0] * size[1], dim=1)], scores


def up_embed(in_channels: int, out_channels: int) -> nn.Sequential:
    """The official ``UpEmbed``: ×2 bilinear, then two 3×3 convs (dilation 2, padding 2) + BN + ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        *conv_norm_act(in_channels, out_channels, 3, dilation=2),
        *conv_norm_act(out_channels, out_channels, 3, dilation=2),
    )


class Stage(nn.Module):
    """One UP-Transformer stage: (per-task ×2 upsampling + backbone skip), then a joint block."""

    def __init__(self, tasks: Sequence[str], index: int, in_channels: int, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.up = nn.ModuleDict({t: up_embed(in_channels, dim) for t in tasks}) if index > 0 else None
        self.block = JointBlock(tasks, dim, heads, mlp_ratio, KV_STRIDES[index], message=index > 0)


def skip_conv(in_channels: int, out_channels: int, stride: int, target: int) -> nn.Module:
    """A backbone map at ``stride`` into a stage at ``target``: 3×3 conv, or a ×2 transposed conv."""
    if stride == 2 * target:
        return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class InvPT(MultiTaskModel):
    """ViT (or any backbone) → preliminary decoder → UP-Transformer with message passing → heads."""

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        img_size: Sequence[int],
        embed_dim: int,
        pred_channels: int,
        num_heads: Sequence[int],
        mlp_ratio: float,
        layers: object,
        fusion: str = "auto",
    ) -> None:
        super().__init__()
        self.task_names = canonical_order(tasks)
        self.fusion = fusion
        self.checkpoint_decoder = False  # set_activation_checkpointing
        names = self.task_names
        if backbone_family(config.backbone.name) in VIT_FAMILIES:
            self.backbone = ViTBackbone(config.backbone, img_size)
            depth = self.backbone.depth
            self.layers = check_layers(default_layers(depth, 4)[:2] + (depth,) if layers is None else layers, depth, 3, "layers")
            channels = [self.backbone.embed_dim] * 3
            strides = [self.backbone.patch_size] * 3
        else:
            if layers is not None:
                raise ConfigError("model.options.layers selects ViT blocks; other backbones give their last three levels")
            self.backbone = Backbone(config.backbone)
            if len(self.backbone.channels) < 3:
                raise ConfigError(
                    f"invpt needs a backbone with three levels or more; '{config.backbone.name}' gives {len(self.backbone.channels)}"
                )
            self.layers = None
            channels, strides = self.backbone.channels[-3:], self.backbone.strides[-3:]
        # the strides of the three maps and of the skips made of them (a ×2 transposed conv halves it)
        self.map_strides = list(strides)
        self.skip_strides = {i: strides[j] / 2 if strides[j] == 2 * STAGE_STRIDES[i] else strides[j] for i, j in ((1, 1), (2, 0))}
        d0 = embed_dim + pred_channels
        dims = [d0, d0 // 2, d0 // 4]
        self.dims = dims
        c_last = channels[-1]
        self.preliminary = nn.ModuleDict({t: nn.Sequential(conv_norm_act(c_last, c_last), conv_norm_act(c_last, embed_dim)) for t in names})
        # an instance task (3D detection) has no per-pixel preliminary prediction to mix in, and its own head on
        # the three stages' task features (strides 32, 16, 8 of the padded input)
        self.instance = [t for t in names if not tasks[t].is_map]
        prelim_channels = {t: 0 if t in self.instance else official_channels(t, tasks[t].out_channels) for t in names}
        self.intermediate = nn.ModuleDict({t: nn.Conv2d(embed_dim, prelim_channels[t], 1) for t in names if t not in self.instance})
        self.mix_proj = nn.ModuleDict({t: nn.Conv2d(embed_dim + prelim_channels[t], d0, 1) for t in names})
        self.skip_mid = skip_conv(channels[1], dims[1], strides[1], STAGE_STRIDES[1])
        self.skip_fine = skip_conv(channels[0], dims[2], strides[0], STAGE_STRIDES[2])
        self.stages = nn.ModuleList(Stage(names, i, dims[max(i - 1, 0)], dims[i], num_heads[i], mlp_ratio) for i in range(3))
        self.stage_norms = nn.ModuleList(nn.LayerNorm(len(names) * d) for d in dims)
        self.reduce = nn.ModuleDict({str(i): nn.ModuleDict({t: nn.Conv2d(dims[i], d0, 1) for t in names}) for i in (1, 2)})
        maps = [t for t in names if t not in self.instance]
        self.fuse = nn.ModuleDict({t: conv_norm_act(d0, d0, 3, bias=True) for t in maps})
        self.heads = nn.ModuleDict(
            {
                t: tasks[t].build_head([dims[2], dims[1], dims[0]], [STAGE_STRIDES[2], STAGE_STRIDES[1], STAGE_STRIDES[0]])
                if t in self.instance
                else nn.Conv2d(d0, tasks[t].out_channels, 1)
                for t in names
            }
        )
        for stage in self.stages:  # the official InvPTStage initialisation
            for module in stage.modules():
                if isinstance(module, nn.Linear):
                    trunc_normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        for block in self.fuse.values():
            trunc_normal_(block[0].weight, std=0.02)
        self._unbuilt = (
            c_last * d0 * 9
            + d0  # scale_embed.2
            + len(names) * (d0 * d0 + d0)  # redu_chan.0
            + 2 * len(names) * dims[2]  # norm_mt
            + 2 * num_heads[0] * num_heads[0]
            + num_heads[0]
        )  # stage 0's fuse_attn

    def unbuilt_official_parameters(self) -> int:
        """Parameters of the official model its forward never uses (not built here; see the docstring)."""
        return self._unbuilt

    official_key_map: KeyMap  # set below

    def _features(self, image: torch.Tensor) -> list[torch.Tensor]:
        if self.layers is not None:
            return self.backbone.features(image, self.layers, norm_last=True)
        return self.backbone(image)[-3:]

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Final and preliminary logits of every task at the input size."""
        height, width = image.shape[-2:]
        pad_h = max(MIN_SIDE, -(-height // PAD_MULTIPLE) * PAD_MULTIPLE) - height
        pad_w = max(MIN_SIDE, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE) - width
        padded = F.pad(image, (0, pad_w, 0, pad_h))
        size = padded.shape[-2:]
        grids = [(size[0] // s, size[1] // s) for s in STAGE_STRIDES]
        fine, mid, last = self._features(padded)
        # (sampled where they lie: a patch-14 ViT's grid is not the stages' 1/32, 1/16, 1/8; regrid)
        x = regrid(last, self.map_strides[2], STAGE_STRIDES[0], grids[0])
        skips = {
            1: regrid(self.skip_mid(mid), self.skip_strides[1], STAGE_STRIDES[1], grids[1]),
            2: regrid(self.skip_fine(fine), self.skip_strides[2], STAGE_STRIDES[2], grids[2]),
        }

        inter, maps = {}, []
        for t in self.task_names:
            if self.checkpoint_decoder:
                inter[t], mixed = recomputed(self._preliminary, [self.preliminary[t], self.mix_proj[t]], t, x)
            else:
                inter[t], mixed = self._preliminary(t, x)
            maps.append(mixed)

        quarter = (size[0] // 4, size[1] // 4)
        factored = shortcuts_allowed() and (self.fusion == "factored" or (self.fusion == "auto" and image.device.type == "cpu"))
        # each task's features of the three stages: the instance heads' inputs, else what the tail aggregates at 1/4
        stage_maps: dict[str, list[torch.Tensor]] = {t: [] for t in self.task_names}
        message = None
        for i, stage in enumerate(self.stages):
            if stage.up is not None:
                if self.checkpoint_decoder:
                    maps = [recomputed(stage.up[t], [stage.up[t]], m) + skips[i] for t, m in zip(self.task_names, maps)]
                else:
                    maps = [stage.up[t](m) + skips[i] for t, m in zip(self.task_names, maps)]
            if self.checkpoint_decoder:
                maps, message = recomputed(stage.block, [stage.block], maps, message)
            else:
                maps, message = stage.block(maps, message)
            grid = maps[0].shape[-2:]
            normed = self.stage_norms[i](torch.cat([_tokens(m) for m in maps], dim=2))
            for t, part in zip(self.task_names, normed.split(self.dims[i], dim=2)):
                stage_maps[t].append(_map(part, grid))

        final, preliminary = {}, {}
        for t in self.task_names:
            if t in self.instance:  # (no preliminary prediction to supervise)
                final[t] = self.heads[t](stage_maps[t][::-1], (int(height), int(width)))  # finest first
                continue
            if self.checkpoint_decoder:  # the 1/4-resolution aggregation and fusion hold most of the decoder's activations
                modules = [self.reduce["1"][t], self.reduce["2"][t], self.fuse[t], self.heads[t]]
                logits = recomputed(self._tail, modules, t, quarter, factored, *stage_maps[t])
            else:
                logits = self._tail(t, quarter, factored, *stage_maps[t])
            final[t] = resize(logits, size)[..., :height, :width]
            preliminary[t] = resize(two_class_to_logit(t, inter[t]), size)[..., :height, :width]
        return ModelOutput(final=final, aux={"preliminary": preliminary})

    def _preliminary(self, task: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A task's preliminary decoder: its prediction at 1/32 and the feature mixed with it for the stages
        (an instance task: no prediction, the feature alone)."""
        feature = self.preliminary[task](x)
        if task not in self.intermediate:
            return feature[:, :0], self.mix_proj[task](feature)
        inter = fp32_conv(self.intermediate[task], feature)
        return inter, self.mix_proj[task](torch.cat([feature, inter.to(feature.dtype)], dim=1))

    def _tail(self, task: str, quarter: tuple[int, int], factored: bool, *stages: torch.Tensor) -> torch.Tensor:
        """A task's three stage features (coarsest first) reduced to D₀, resized to 1/4 and summed, their
        fusion (3×3 conv-BN-ReLU) and its head; ``factored``: the reduction, resize, sum and 3×3 convolution
        as ``conv3x3_of_resized`` (the same function at the stages' resolutions)."""
        fuse = self.fuse[task]
        if factored:
            inputs = [(x, None if i == 0 else self.reduce[str(i)][task]) for i, x in enumerate(stages)]
            return fp32_conv(self.heads[task], fuse[2](fuse[1](conv3x3_of_resized(fuse[0], inputs, quarter))))
        aggregated: torch.Tensor | float = 0.0
        for i, task_x in enumerate(stages):
            task_x = task_x.contiguous()  # (a view of tokens: channels-last strides, which resize keeps)
            aggregated = aggregated + resize(task_x if i == 0 else self.reduce[str(i)][task](task_x), quarter)
        return fp32_conv(self.heads[task], fuse(aggregated))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Everything but the per-task tail (reduction, fusion, head): the joint attention makes
        every task's preliminary decoder, queries and upsampling reach every task's loss."""
        own = {id(p) for m in (self.reduce, self.fuse, self.heads) for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in own]

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's final and preliminary (two-class for binary tasks) outputs."""
        return {name: [self.heads[name], self.intermediate[name]] for name in self.heads if name not in self.instance}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the backbone's blocks (stages for CNN backbones) and the decoder: each task's
        preliminary decoder and upsampling, the UP-Transformer blocks and each task's aggregation and fusion
        at 1/4 (batch norms count each batch once: ``layers.recomputed``)."""
        self.backbone.set_activation_checkpointing(enabled)
        self.checkpoint_decoder = enabled


_D = "multi_task_decoder."
_S = _D + "invpt.invpt_stages.{n}."
OFFICIAL_KEYS = KeyMap(
    method="InvPT",
    signature=_D,
    rules=[
        Rule("backbone.{rest}", "backbone.vit.{rest}"),
        Rule(_D + "preliminary_decoder.{t}.{n}.conv.weight", "preliminary.{t}.{n}.0.weight"),
        Rule(_D + "preliminary_decoder.{t}.{n}.bn1.{rest}", "preliminary.{t}.{n}.1.{rest}"),
        Rule(_D + "intermediate_head.{t}.{rest}", "intermediate.{t}.{rest}"),
        Rule(_D + "scale_embed.0.{rest}", "skip_fine.{rest}"),
        Rule(_D + "scale_embed.1.{rest}", "skip_mid.{rest}"),
        Rule(_D + "invpt.mix_proj.{t}.0.{rest}", "mix_proj.{t}.{rest}"),
        Rule(_S + "patch_embed.{ti}.proj.{m}.{rest}", "stages.{n}.up.{t}.{m}.{rest}"),
        Rule(_S + "blocks.0.attn.conv_proj_q.{ti}.conv.weight", "stages.{n}.block.attn.q_conv.{t}.0.weight"),
        Rule(_S + "blocks.0.attn.conv_proj_q.{ti}.bn.{rest}", "stages.{n}.block.attn.q_conv.{t}.1.{rest}"),
        Rule(_S + "blocks.0.{rest}", "stages.{n}.block.{rest}"),
        Rule(_D + "invpt.norm_mts.{n}.{rest}", "stage_norms.{n}.{rest}"),
        Rule(_D + "invpt.redu_chan.{n}.{ti}.{rest}", "reduce.{n}.{t}.{rest}"),
        Rule(_D + "invpt.mt_proj.{t}.{rest}", "fuse.{t}.{rest}"),
        Rule("heads.{t}.linear_pred.{rest}", "heads.{t}.{rest}", two_class=True),
    ],
    drop={
        _D + "scale_embed.2.{rest}": "stage-0 skip: computed, never added (stage 0 has no UpEmbed)",
        _D + "invpt.redu_chan.0.{rest}": "stage 0 is not reduced (already D0 wide)",
        _D + "invpt.norm_mt.{rest}": "never called",
        _D + "invpt.invpt_stages.0.blocks.0.attn.fuse_attn.{rest}": "stage 0 receives no message",
    },
)
InvPT.official_key_map = OFFICIAL_KEYS


@register_model(
    "invpt",
    tiny={"img_size": [64, 64], "embed_dim": 16, "pred_channels": 8},
    tiny_backbone="test_vit",
    instance_tasks=True,
    # REFERENCE.md's efficiency table; fvcore's convention (a multiply-add is one FLOP) = our GMACs
    published={
        "vit_large_patch16_384": (
            "nyud",
            "402.1 M parameters, 555.57 GFLOPs at 448×576 (MQTransformer's README; fvcore's convention = our GMACs)",
        )
    },
)
def invpt(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    img_size: Sequence[int] = (512, 512),
    embed_dim: int = 512,
    pred_channels: int = 64,
    num_heads: Sequence[int] = (2, 2, 2),
    mlp_ratio: float = 4.0,
    layers: Sequence[int] | None = None,
    fusion: str = "auto",
) -> InvPT:
    """InvPT with the official widths (ViT-L: ``embed_dim`` 512 + 64 prediction channels, 2 heads per stage)."""
    check_positive_ints(img_size, "img_size", 2)
    check_positive_ints(embed_dim, "embed_dim")
    check_positive_ints(pred_channels, "pred_channels")
    check_positive_ints(num_heads, "num_heads", 3)
    d0 = embed_dim + pred_channels
    if d0 % 4:
        raise ConfigError(f"model.options: embed_dim + pred_channels ({d0}) must be divisible by 4 (stage widths D, D/2, D/4)")
    for i, (heads, dim) in enumerate(zip(num_heads, (d0, d0 // 2, d0 // 4))):
        if dim % heads:
            raise ConfigError(f"model.options.num_heads[{i}] = {heads} does not divide stage {i}'s width {dim}")
    if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ConfigError(f"model.options.mlp_ratio must be positive, got {mlp_ratio!r}")
    if fusion not in FUSIONS:
        raise ConfigError(f"model.options.fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    return InvPT(config, tasks, tuple(img_size), embed_dim, pred_channels, tuple(num_heads), float(mlp_ratio), layers, fusion)
