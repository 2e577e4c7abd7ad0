"""Training settings beyond full supervision: what a setting adds to the data, the losses and the step
(self-supervised depth from video, domain adaptation).

``SETTINGS`` describes each setting for ``scenemtl list settings``: what it trains, the config keys
that select it and its shipped recipes (paths under the repository's ``configs/``).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One training setting: what it is, how a config selects it, its recipes."""

    name: str
    description: str
    keys: str
    recipes: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting("supervised", "every task from its labels (the default)", "(no objectives)"),
    Setting(
        "sde",
        "DenseMTL's semi-supervised depth: supervised tasks plus depth from video (frames -1/0/+1) through a pose network",
        "objectives: [{name: self_supervised_depth}], tasks.depth.output: disparity, video samples "
        "(cityscapes*: data.options.sequence_folder; synthetic: data.options.frames)",
        ("configs/cityscapes/xtam_sde.yaml",),
    ),
    Setting(
        "da",
        "DenseMTL's domain adaptation: labelled source, unlabelled target images, scored on the target",
        "objectives: [{name: adversarial | min_entropy, options: {target: ...}}], data.eval_dataset",
        ("configs/synthia/xtam_sy2cs.yaml", "configs/vkitti2/xtam_vk2cs.yaml"),
    ),
    Setting(
        "normals from depth",
        "normals derived from depth and the camera where a release has none (Cityscapes, SYNTHIA, VKITTI2)",
        "tasks: {normals: ...}; data.options.normals: metric | densemtl; eval.protocol: densemtl_legacy for DenseMTL's numbers",
    ),
)

from scenemtl.settings import monodepth  # noqa: F401,E402  (registers the objective self_supervised_depth)
from scenemtl.settings import adaptation  # noqa: F401,E402  (registers adversarial and min_entropy)
