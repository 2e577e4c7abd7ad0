"""Vision Transformers from timm as the encoders of the transformer architectures (InvPT, TaskPrompter).

``ViTBackbone`` holds a timm ``VisionTransformer`` (``vit_small/base/large_patch16_384``, DINOv2, SigLIP 2,
the tiny ``test_vit``) or ``Eva`` (EVA-02, DINOv3, Perception Encoder: rotary position embeddings) built for
the architecture's training size, so an absolute position embedding is stored on that grid, as the seeds'
checkpoints store it (timm resamples pretrained embeddings on loading). ``features`` reads chosen blocks
through timm's ``forward_intermediates`` (InvPT: blocks 6/12/24 of ViT-L), the one way both classes give
their blocks (class and register tokens stripped, RoPE and position embeddings at the input's grid, timm's
activation checkpointing). TaskPrompter inserts its prompts between blocks, so it runs a
``VisionTransformer``'s blocks itself (``embed``, ``block``). Attention of the plain blocks goes through
timm's ``Attention`` (``torch.nn.functional.scaled_dot_product_attention``).

Inputs of another size work: the position embedding is resampled bicubically to the new grid
(timm's ``resample_abs_pos_embed``), as the seeds do when they load ImageNet weights at their
training size; ``features`` pads sides that do not divide by the patch size (patch 14: DINOv2,
EVA-02), ``embed`` (TaskPrompter's prompting) needs them to divide.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from scenemtl.config import BackboneConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones.factory import create_timm_model, require_checkpointing_timm


def default_layers(depth: int, count: int = 4) -> tuple[int, ...]:
    """Evenly spaced 1-based block numbers ending at the last block: 6/12/18/24 of 24, 3/6/9/12 of 12."""
    return tuple(sorted({max(1, depth * k // count) for k in range(1, count + 1)}))


class ViTBackbone(nn.Module):
    """A timm Vision Transformer or EVA read at chosen blocks; ``grid`` is the token grid of the training size."""

    def __init__(self, config: BackboneConfig, img_size: Sequence[int], class_token: bool = True) -> None:
        super().__init__()
        kwargs = dict(config.options)
        kwargs.setdefault("dynamic_img_size", True)  # other grids: position embedding resampled per input
        vit = create_timm_model(config, img_size=tuple(img_size), num_classes=0, global_pool="", **kwargs)
        if not isinstance(vit, (VisionTransformer, Eva)):
            raise ConfigError(
                f"model.backbone.name: this architecture needs a Vision Transformer "
                f"(e.g. vit_large_patch16_384), got '{config.name}' ({type(vit).__name__})"
            )
        #: the class token was taken out (its position slot stays, unused): timm's own forward no longer fits
        self.class_token_removed = not class_token and vit.cls_token is not None
        if self.class_token_removed:
            vit.cls_token = None  # the architecture has no class token
        self.vit = vit
        self.name = config.name
        self.embed_dim: int = vit.embed_dim
        self.depth = len(vit.blocks)
        self.num_heads: int = vit.blocks[0].attn.num_heads
        self.patch_size: int = vit.patch_embed.patch_size[0]
        self.grid: tuple[int, int] = tuple(vit.patch_embed.grid_size)
        #: prefix tokens (class, registers) that ``pos_embed`` carries in front of the grid
        self.embed_prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
        self.checkpointing = False

    def check_size(self, height: int, width: int) -> tuple[int, int]:
        """The token grid of an input, or a ConfigError if its sides do not divide by the patch size."""
        p = self.patch_size
        if height % p or width % p:
            raise ConfigError(f"{self.name}: input {height}×{width} is not a multiple of the patch size {p}")
        return height // p, width // p

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """``pos_embed`` (prefix slots and grid), resampled to ``grid`` if it is not the training grid."""
        if tuple(grid) == self.grid:
            return self.vit.pos_embed
        return resample_abs_pos_embed(
            self.vit.pos_embed, new_size=list(grid), old_size=list(self.grid), num_prefix_tokens=self.embed_prefix
        )

    def _plain(self, method: str) -> VisionTransformer:
        """The model, which must be a ``VisionTransformer`` to be run block by block."""
        if not isinstance(self.vit, VisionTransformer):
            raise ConfigError(
                f"ViTBackbone.{method} runs a timm VisionTransformer's blocks one by one; '{self.name}' is a "
                f"{type(self.vit).__name__} (rotary embeddings per block): read it with features()"
            )
        return self.vit

    def embed(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The tokens as timm's ViT embeds them (its class/register tokens first, where it has them) and the grid.

        A ViT built with ``class_token=False`` gives the patch tokens only, with the grid part of
        the position embedding (its class slot stays unused), as TaskPrompter's official code.
        """
        grid = self.check_size(*image.shape[-2:])
        vit = self._plain("embed")
        x = vit.patch_embed(image)  # B×h×w×C (dynamic size) or B×N×C
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        prefix = [t.expand(x.shape[0], -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        pos = self.position_embedding(grid)
        if vit.no_embed_class:
            x = torch.cat([*prefix, x + pos], dim=1)
        else:  # the slots of removed prefix tokens are skipped
            x = torch.cat([*prefix, x], dim=1) + pos[:, self.embed_prefix - len(prefix) :]
        return vit.norm_pre(vit.patch_drop(vit.pos_drop(x))), grid

    @property
    def prefix_tokens(self) -> int:
        """Tokens in front of the patch tokens in ``embed``'s output."""
        vit = self.vit
        return (vit.cls_token is not None) + (0 if vit.reg_token is None else int(vit.reg_token.shape[1]))

    def block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` (0-based), checkpointed when activation checkpointing is on."""
        blk = self._plain("block").blocks[index]
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def features(self, image: torch.Tensor, layers: Sequence[int], norm_last: bool = True) -> list[torch.Tensor]:
        """Outputs of the 1-based blocks ``layers`` as ``[B, C, h, w]`` maps; the last one normed if asked.

        timm's ``forward_intermediates`` (stopping after the last block asked for). An input whose sides
        do not divide by the patch size is zero-padded at the bottom and right to the next multiple first
        (a patch-14 ViT under a decoder that pads to multiples of 64): the maps then have ⌈side / patch⌉
        cells, as ``Backbone`` gives them."""
        if self.class_token_removed:
            raise ConfigError(f"{self.name}: a ViTBackbone built without its class token is run block by block (embed, block)")
        p = self.patch_size
        pad_h, pad_w = -image.shape[-2] % p, -image.shape[-1] % p
        if pad_h or pad_w:
            image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h))
        h, w = image.shape[-2] // p, image.shape[-1] // p
        tokens = self.vit.forward_intermediates(
            image, indices=[k - 1 for k in layers], norm=False, stop_early=True, output_fmt="NLC", intermediates_only=True
        )
        last = max(layers)
        maps = []
        for k, x in zip(layers, tokens):
            if norm_last and k == last:
                x = self.vit.norm(x)
            maps.append(x.transpose(1, 2).reshape(x.shape[0], -1, h, w))
        return maps

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass."""
        require_checkpointing_timm(enabled)
        self.checkpointing = enabled  # block()
        self.vit.set_grad_checkpointing(enabled)  # features(): timm's forward_intermediates


def check_layers(layers: object, depth: int, count: int, option: str) -> tuple[int, ...]:
    """Validate 1-based, increasing block numbers within the ViT's depth."""
    if not isinstance(layers, (list, tuple)):
        raise ConfigError(
            f"model.options.{option} must be a list of {count} block numbers in 1…{depth} "
            f"(e.g. {list(default_layers(depth, count))}), got {layers!r}"
        )
    layers = tuple(layers)
    if (
        len(layers) != count
        or any(not isinstance(k, int) or isinstance(k, bool) for k in layers)
        or list(layers) != sorted(set(layers))
        or layers[0] < 1
        or layers[-1] > depth
    ):
        raise ConfigError(
            f"model.options.{option} must be {count} increasing block numbers in 1…{depth} "
            f"(e.g. {list(default_layers(depth, count))}), got {list(layers)}"
        )
    return layers
