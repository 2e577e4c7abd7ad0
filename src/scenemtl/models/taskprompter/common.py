"""What both TaskPrompter variants share: heads, the per-level fusion, the prompting modules' initialisation, key-map rules."""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import conv_norm_act, fp32_conv
from scenemtl.models.official import Rule


class ConvHead(nn.Module):
    """The official ``ConvHead``: 3×3 conv + BN + GELU, then a 1×1 prediction (``DEConvHead``: ×2 first)."""

    def __init__(self, channels: int, out_channels: int, deconv: bool = False) -> None:
        super().__init__()
        if deconv:
            half = channels // 2
            self.proj = nn.Sequential(
                nn.ConvTranspose2d(channels, half, 2, stride=2),
                nn.BatchNorm2d(half),
                nn.GELU(),
                *conv_norm_act(half, half, 3, bias=True, act=nn.GELU),
            )
            self.pred = nn.Conv2d(half, out_channels, 1)
            for conv in (self.proj[0], self.proj[3], self.pred):
                trunc_normal_(conv.weight, std=0.02)
        else:
            self.proj = conv_norm_act(channels, channels, 3, bias=True, act=nn.GELU)
            self.pred = nn.Conv2d(channels, out_channels, 1)
            trunc_normal_(self.proj[0].weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp32_conv(self.pred, self.proj(x))


def level_fusion(embed_dim: int, channels: int, last_kernel: int) -> nn.Sequential:
    """A level's fusion of the spatial and channel features (``fea_fuse``): 1×1, 3×3 + BN + GELU, ``last_kernel``² conv."""
    return nn.Sequential(
        nn.Conv2d(2 * embed_dim, channels, 1),
        *conv_norm_act(channels, channels, 3, bias=True, act=nn.GELU),
        nn.Conv2d(channels, channels, last_kernel, padding=last_kernel // 2),
    )


class PromptedModel(MultiTaskModel):
    """What both TaskPrompter variants share: heads named ``heads[task].pred``, a backbone that checkpoints blocks."""

    @torch.no_grad()
    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's prediction layer."""
        return {name: [head.pred] for name, head in self.heads.items() if hasattr(head, "pred")}  # (not an instance head)

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint every prompted block."""
        self.backbone.set_activation_checkpointing(enabled)

    def task_only_modules(self) -> list[nn.Module]:
        """Modules only one task's outputs depend on."""
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        """What every task's loss reaches: the encoder, the prompts (they attend to one another) and
        whatever the per-task parts read."""
        own = {id(p) for m in self.task_only_modules() for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in own]


def init_vit_weights(module: nn.Module) -> None:
    """The official initialisation of the prompting modules (timm's ViT rule: Linear N(0, .02), norms 1/0)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


#: the names both TaskPrompter variants share: prompts, per-level decoding and fusion
PROMPTING_RULES = (
    Rule("backbone.task_prompts", "prompts"),
    Rule("backbone.fea_decode_spa.{n}.{t}.0.{rest}", "decode_spatial.{n}.{t}.{rest}"),
    Rule("backbone.fea_decode_chan.{n}.{t}.0.{rest}", "decode_channel.{n}.{t}.{rest}"),
    Rule("backbone.fea_fuse.{n}.{t}.{rest}", "fuse.{n}.{t}.{rest}"),
)
#: and their heads (``ConvHead``/``DEConvHead``), matched after the backbone rules
HEAD_RULES = (
    Rule("heads.{t}.mt_proj.{rest}", "heads.{t}.proj.{rest}"),
    Rule("heads.{t}.linear_pred.{rest}", "heads.{t}.pred.{rest}", two_class=True),
)
