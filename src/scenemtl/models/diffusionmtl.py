"""DiffusionMTL (Ye & Xu, CVPR 2024: "DiffusionMTL: Learning Multi-Task Denoising Diffusion Model from
Partially Annotated Data").

Structure (official code ``prismformore/DiffusionMTL``: ``models/diffusion_net.py``,
``models/diffusion/mtdnet.py``, ``models/mlphead.py``, ``configs/pascal/config.yml``):

- Backbone (ResNet-18 in the official code, torchvision without ``fc``): every stage (strides
  4–32) resized bilinearly to half the stride-4 size (1/8) and concatenated → 3×3 conv to
  ``embed_dim`` (``backbone_embed``; 512 = the last stage width of ResNet-18; option ``channels``).
- Preliminary decoding, per task: two ResNet BasicBlocks (``preliminary_dec``) → 1×1 conv
  (``preliminary_head``). The preliminary predictions are supervised with 0.5 × the task loss
  (``losses/loss_schemes.py``: ``inter_loss_weight = 0.5``) → ``aux["preliminary"]`` with
  ``aux_weights={"preliminary": 0.5}`` (at input size, as the official ``inter_preds``).
- Multi-task conditioning (``FeatureCombinator``): the concatenation of every task's *detached*
  preliminary prediction → one 3×3 conv to ``embed_dim``: a condition shared by all tasks
  (kaiming-normal fan-out weights, zero bias).
- Diffusion (``MTDNet``): ``num_timesteps`` T = 2 (config), linear β schedule on √β from 1e-3 to
  1e-2, x0-parameterisation, ``v_posterior`` 0. The chain starts from ``q_sample(x0, t=T−1)`` with
  x0 = the task's preliminary *feature* (the released code is feature diffusion); each step runs
  the denoiser; steps t ≥ 1 take the posterior q(x_{t−1} | x_t, x̂0) mean plus
  exp(½·log σ²)·noise; the last step (t = 0) returns x̂0 through the final 1×1 head (``MLPHead``)
  and a bilinear upsample to the input size.
- Denoiser (``Denosier``): per task a 3×3 conv (``pre_layer``) plus the DiT sinusoidal timestep
  embedding (256 frequencies → Linear → SiLU → Linear, weights N(0, 0.02)); the noisy map and the
  condition are both resized ×1/4 to tokens; four ``CrossBlock``s (4 heads, MLP ratio 4, q/kv
  without bias), **shared by all tasks**: the *condition* tokens are the queries and attend to the
  noisy-task tokens (``crossblocks[d](cur_kv, x)`` passes the condition as the block's ``x``);
  the noisy-task tokens are refined by the block's ``mlp_kv`` only; the condition stream is the
  output; upsample ×4, + the pre-layer map (residual); per-task head stack 1×1 C→C, 3×3 C→512,
  ReLU, 3×3 512→C_last, ReLU, 3×3 C_last→C_last, ReLU; then the final 1×1 head. Linear layers
  xavier-uniform with zero bias, LayerNorms ones/zeros.

Option ``target: prediction`` is the paper's *prediction diffusion*, which the released code does
not contain; it is designed here as the exact analogue: x0 is the task's preliminary prediction
(``out_channels`` wide), ``pre_layer`` is a 3×3 conv from ``out_channels`` to C, and the x̂0 of every
step is the output of the final head (at the latent resolution), so the chain lives in prediction
space; everything else is shared with feature diffusion.

Differences from the official code, and why:

- Widths: the official head stack's 512 literal, ``backbone_channels[-1]`` and ``embed_dim`` are
  all 512 for ResNet-18; here all three are the option ``channels`` (default 512: identical
  parameter shapes), so feature diffusion stays well-formed (x̂0 must be ``embed_dim`` wide) on
  any backbone and narrow in tests.
- Any timm backbone: the levels of stride ≥ 4 are used (the official four ResNet stages) and the
  latent size is the finest such level scaled to stride 8 (``int(size · 0.5)`` at stride 4, as
  the official code).
- The ×1/4 and ×4 resizes of the denoiser are written with output sizes (⌊h/4⌋ at least 1, and back
  to the pre-layer map's size) instead of scale factors: identical when the latent size is a
  multiple of 4 (the official 36×48 on 288×384 PASCAL crops), and defined on other sizes, where
  the official ×4 upsample would not match the residual.
- Training: the official loop runs the chain per image and only for the tasks labelled on that
  image (its partial-label setting); here the chain runs batched for every task and the training
  loss masks unlabelled tasks. Without batch norm in the denoiser the forward values are the
  same and a masked task contributes no gradient.
- Randomness: training draws from torch's global RNG (as the official ``randn_like``); in eval
  mode the noise comes from a generator seeded with ``sample_seed`` on every forward, so
  evaluation is deterministic (the official evaluation draws from the global RNG).
- The diffusion schedule buffers are not saved in the state dict (they follow from the options);
  the official loss-side ``logvar``/``lvlb_weights`` are unused by its training loss and omitted.
- ``shared_parameters`` are everything every task's loss reaches: backbone, ``backbone_embed``,
  the condition combinator, the four cross blocks and the timestep embedder (the official
  denoiser shares these across tasks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import basic_block, fp32_conv, resize
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task


class TimestepEmbedder(nn.Module):
    """DiT timestep embedding: sinusoidal frequencies → Linear → SiLU → Linear."""

    def __init__(self, hidden: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        nn.init.normal_(self.mlp[0].weight, std=0.02)
        nn.init.normal_(self.mlp[2].weight, std=0.02)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps → (B, hidden)."""
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.frequencies % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))


class CrossAttention(nn.Module):
    """Multi-head attention of query tokens over key/value tokens (q, kv without bias)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        k, v = self.kv(context).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossBlock(nn.Module):
    """The official ``CrossBlock``: ``kv`` refined by its own MLP, then ``x`` attends to it, then MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)
        self.mlp_kv = Mlp(dim, hidden)
        self.norm_kv = nn.LayerNorm(dim)
        self.norm2_kv = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = kv + self.mlp_kv(self.norm2_kv(kv))
        x = x + self.attn(self.norm1(x), self.norm_kv(kv))
        x = x + self.mlp(self.norm2(x))
        return x, kv


class Denoiser(nn.Module):
    """Per-task pre-layer + timestep embedding, shared cross blocks (condition → noisy map), per-task heads."""

    def __init__(self, tasks: Mapping[str, Task], channels: int, depth: int, heads: int, target: str) -> None:
        super().__init__()
        c = channels
        self.crossblocks = nn.ModuleList(CrossBlock(c, heads) for _ in range(depth))
        self.pre_layer = nn.ModuleDict(
            {t: nn.Conv2d(c if target == "feature" else task.out_channels, c, 3, padding=1) for t, task in tasks.items()}
        )
        self.task_heads = nn.ModuleDict(
            {
                t: nn.Sequential(
                    nn.Conv2d(c, c, 1),
                    nn.Conv2d(c, c, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(c, c, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(c, c, 3, padding=1),
                    nn.ReLU(),
                )
                for t in tasks
            }
        )
        self.final_task_heads = nn.ModuleDict({t: nn.Conv2d(c, task.out_channels, 1) for t, task in tasks.items()})
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.t_embedder = TimestepEmbedder(c)  # after the xavier pass, as the official order

    def features(self, task: str, noisy: torch.Tensor, condition_tokens: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """The head-stack output for one task (before the final 1×1 head), at the latent size."""
        x0 = self.pre_layer[task](noisy) + t_emb[:, :, None, None]
        b, c, h, w = x0.shape
        small = (max(1, h // 4), max(1, w // 4))
        x = resize(x0, small).flatten(2).transpose(1, 2)
        cond = condition_tokens
        for block in self.crossblocks:
            cond, x = block(cond, x)
        x = cond.transpose(1, 2).reshape(b, c, *small)
        return self.task_heads[task](resize(x, (h, w)) + x0)


class DiffusionMTL(MultiTaskModel):
    """Preliminary predictions → multi-task conditioned denoising diffusion of each task's feature/prediction."""

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        channels: int,
        num_timesteps: int,
        depth: int,
        num_heads: int,
        target: str,
        sample_seed: int,
    ) -> None:
        super().__init__()
        self.task_names = list(tasks)
        self.target = target
        self.num_timesteps = num_timesteps
        self.sample_seed = sample_seed
        self.backbone = Backbone(config.backbone)
        strides = self.backbone.strides
        self.levels = [i for i, s in enumerate(strides) if s >= 4] or [len(strides) - 1]
        self.latent_scale = strides[self.levels[0]] / 8
        c = channels
        self.backbone_embed = nn.Conv2d(sum(self.backbone.channels[i] for i in self.levels), c, 3, padding=1)
        self.preliminary_dec = nn.ModuleDict({t: nn.Sequential(basic_block(c, c), basic_block(c, c)) for t in tasks})
        self.preliminary_head = nn.ModuleDict({t: nn.Conv2d(c, task.out_channels, 1) for t, task in tasks.items()})
        self.pred_combinator = nn.Conv2d(sum(task.out_channels for task in tasks.values()), c, 3, padding=1)
        nn.init.kaiming_normal_(self.pred_combinator.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.pred_combinator.bias)
        self.denoiser = Denoiser(tasks, c, depth, num_heads, target)

        # linear schedule on sqrt(beta) (the latent-diffusion ``make_beta_schedule``), in float64
        betas = np.linspace(1e-3**0.5, 1e-2**0.5, num_timesteps, dtype=np.float64) ** 2
        alphas = 1.0 - betas
        cumprod = np.cumprod(alphas)
        cumprod_prev = np.append(1.0, cumprod[:-1])
        posterior_variance = betas * (1.0 - cumprod_prev) / (1.0 - cumprod)
        schedule = {
            "sqrt_alphas_cumprod": np.sqrt(cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - cumprod),
            "posterior_mean_coef1": betas * np.sqrt(cumprod_prev) / (1.0 - cumprod),
            "posterior_mean_coef2": (1.0 - cumprod_prev) * np.sqrt(alphas) / (1.0 - cumprod),
            "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        }
        for name, value in schedule.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)

    def _noise(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return torch.randn_like(like)
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def _x0_estimate(self, task: str, noisy: torch.Tensor, cond: torch.Tensor, t_emb: torch.Tensor, last: bool) -> torch.Tensor:
        feature = self.denoiser.features(task, noisy, cond, t_emb)
        if self.target == "prediction" or last:
            return fp32_conv(self.denoiser.final_task_heads[task], feature)
        return feature

    def forward(self, image: torch.Tensor) -> ModelOutput:
        """Final (denoised) and preliminary logits of every task at the input size."""
        size = image.shape[-2:]
        features = self.backbone(image)
        finest = features[self.levels[0]].shape[-2:]
        latent = (max(1, int(finest[0] * self.latent_scale)), max(1, int(finest[1] * self.latent_scale)))
        x = self.backbone_embed(torch.cat([resize(features[i], latent) for i in self.levels], dim=1))

        inter_feas = {t: self.preliminary_dec[t](x) for t in self.task_names}
        inter_preds = {t: fp32_conv(self.preliminary_head[t], inter_feas[t]) for t in self.task_names}
        condition = self.pred_combinator(torch.cat([inter_preds[t].detach().to(x.dtype) for t in self.task_names], 1))
        b = condition.shape[0]
        small = (max(1, latent[0] // 4), max(1, latent[1] // 4))
        cond_tokens = resize(condition, small).flatten(2).transpose(1, 2)

        generator = None
        if not self.training:
            generator = torch.Generator(device=image.device)
            generator.manual_seed(self.sample_seed)
        starts = inter_feas if self.target == "feature" else inter_preds
        last_t = self.num_timesteps - 1
        noisy = {}
        for t in self.task_names:
            x_start = starts[t]
            noisy[t] = self.sqrt_alphas_cumprod[last_t] * x_start + self.sqrt_one_minus_alphas_cumprod[last_t] * self._noise(
                x_start, generator
            )
        for step in reversed(range(self.num_timesteps)):
            t_emb = self.denoiser.t_embedder(torch.full((b,), step, device=image.device, dtype=torch.long))
            for t in self.task_names:
                x0_hat = self._x0_estimate(t, noisy[t], cond_tokens, t_emb, last=step == 0)
                if step == 0:
                    noisy[t] = x0_hat
                    continue
                x_t = noisy[t]
                mean = self.posterior_mean_coef1[step] * x0_hat.to(x_t.dtype) + self.posterior_mean_coef2[step] * x_t
                std = (0.5 * self.posterior_log_variance_clipped[step]).exp()
                noisy[t] = mean + std * self._noise(x_t, generator)

        final = {t: resize(noisy[t], size) for t in self.task_names}
        preliminary = {t: resize(inter_preds[t], size) for t in self.task_names}
        return ModelOutput(final=final, aux={"preliminary": preliminary}, aux_weights={"preliminary": 0.5})

    def shared_parameters(self) -> list[nn.Parameter]:
        """What every task's loss reaches: backbone, fuse conv, condition combinator, cross blocks, timestep embedder."""
        modules = [self.backbone, self.backbone_embed, self.pred_combinator, self.denoiser.crossblocks, self.denoiser.t_embedder]
        return [p for m in modules for p in m.parameters()]

    @torch.no_grad()
    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's final and preliminary outputs."""
        return {name: [self.denoiser.final_task_heads[name], self.preliminary_head[name]] for name in self.preliminary_head}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the backbone."""
        self.backbone.set_activation_checkpointing(enabled)


@register_model("diffusionmtl", tiny={"channels": 16, "depth": 1})
def diffusionmtl(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    channels: int = 512,
    num_timesteps: int = 2,
    depth: int = 4,
    num_heads: int = 4,
    target: Literal["feature", "prediction"] = "feature",
    sample_seed: int = 0,
) -> DiffusionMTL:
    """DiffusionMTL: preliminary heads, multi-task conditioned denoising diffusion (official defaults)."""
    if target not in ("feature", "prediction"):
        raise ConfigError(f"model.options.target must be 'feature' or 'prediction', got {target!r}")
    for name, value in (("channels", channels), ("num_timesteps", num_timesteps), ("depth", depth), ("num_heads", num_heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"model.options.{name} must be a positive integer, got {value!r}")
    if channels % num_heads:
        raise ConfigError(f"model.options.channels ({channels}) must be divisible by num_heads ({num_heads})")
    if not isinstance(sample_seed, int) or isinstance(sample_seed, bool):
        raise ConfigError(f"model.options.sample_seed must be an integer, got {sample_seed!r}")
    return DiffusionMTL(config, tasks, channels, num_timesteps, depth, num_heads, target, sample_seed)
