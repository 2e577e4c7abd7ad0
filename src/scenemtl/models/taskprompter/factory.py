"""The registered ``taskprompter``: the ViT variant, or the Swin variant on a Swin backbone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.backbones import SWIN_FAMILIES, backbone_family
from scenemtl.models.base import MultiTaskModel, check_positive_ints
from scenemtl.models.registry import register_model
from scenemtl.models.taskprompter.swin import TaskPrompterSwin
from scenemtl.models.taskprompter.vit import TaskPrompter
from scenemtl.tasks import Task


@register_model(
    "taskprompter",
    tiny={"img_size": [64, 64], "embed_dim": 16, "final_embed_dim": 12, "chan_nheads": 4},
    tiny_backbone="test_vit",
    instance_tasks=True,  # the Swin variant (the ViT variant refuses them)
    published={"vit_large_patch16_384": ("nyud", "373 M parameters, 416 GFLOPs (TaskPrompter's table, quoted by M2H's README)")},
)
def taskprompter(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    img_size: Sequence[int] = (512, 512),
    embed_dim: int = 300,
    final_embed_dim: int = 350,
    chan_nheads: int = 1,
    use_ctr: bool | None = None,
    layers: Sequence[int] | None = None,
    head: str = "conv",
    chan_embed_dim: int | None = None,
) -> MultiTaskModel:
    """TaskPrompter with the released PASCAL ViT-L widths (``embed_dim`` 300, ``final_embed_dim`` 350, CTR on).

    With a Swin backbone (``backbone_family`` 'swin'), the official Swin variant (``taskprompter/swin.py``):
    ``embed_dim`` is its ``level_embed_dim``, ``chan_embed_dim`` (default 256) the width of its
    channel prompts; cross-task reweighting and ``layers`` do not exist there.
    """
    check_positive_ints(img_size, "img_size", 2)
    check_positive_ints(embed_dim, "embed_dim")
    check_positive_ints(final_embed_dim, "final_embed_dim")
    check_positive_ints(chan_nheads, "chan_nheads")
    if use_ctr is not None and not isinstance(use_ctr, bool):
        raise ConfigError(f"model.options.use_ctr must be true or false, got {use_ctr!r}")
    if head not in ("conv", "deconv"):
        raise ConfigError(f"model.options.head must be 'conv' (ConvHead) or 'deconv' (DEConvHead), got {head!r}")
    if backbone_family(config.backbone.name) in SWIN_FAMILIES:  # v2 gets the Swin variant's error
        if use_ctr or layers is not None:
            raise ConfigError(
                "model.options: the Swin variant of TaskPrompter has no use_ctr or layers (its four levels are the stages); remove them"
            )
        if chan_embed_dim is not None:
            check_positive_ints(chan_embed_dim, "chan_embed_dim")
        return TaskPrompterSwin(config, tasks, tuple(img_size), embed_dim, final_embed_dim, chan_embed_dim or 256, chan_nheads, head)
    if chan_embed_dim is not None:
        raise ConfigError(
            "model.options.chan_embed_dim is the Swin variant's; on a ViT the channel prompts span the token grid of img_size"
        )
    if any(not task.is_map for task in tasks.values()):
        raise ConfigError("taskprompter carries 3D detection (det3d) on a Swin backbone only, as the official Cityscapes-3D model")
    return TaskPrompter(
        config, tasks, tuple(img_size), embed_dim, final_embed_dim, chan_nheads, True if use_ctr is None else use_ctr, layers, head
    )
