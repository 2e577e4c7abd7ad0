"""Self-supervised depth from video (DenseMTL's semi-supervised depth setting, SDE): the objective
``self_supervised_depth``.

The depth task's loss becomes monodepth2's photometric loss (``settings/photometric.py``): the
model's disparity at each of its output scales is turned into depth, the neighbouring frames −1
and +1 are warped into the annotated frame with that depth and the pose a separate network
predicts (``models/pose.py``: ResNet-18 on two stacked frames, monodepth2's pose decoder), and the
loss is the per-pixel minimum reprojection error with auto-masking plus edge-aware smoothness. Any
architecture with a depth output trains this way: the objective reads ``output.final['depth']``
(scale 0) and every deep-supervision stage that holds a depth output (``aux``, in order: xtam's
``scale1``…``scale3`` with ``model.options.scales``), each a sigmoid disparity (the depth task's
``output: disparity``). The other tasks keep their own losses.

What the setting needs from the data: ``frames`` (uint8 ``[B,3,3,H,W]``: frames −1, 0, +1, not
colour-jittered) and ``camera`` (``[B,3,3]``) in every training batch: Cityscapes with
``data.options.sequence_folder``, the synthetic scenes with ``data.options.frames: true``.

Facts (``astra-vision/DenseMTL``): ``configs/cityscapes/monodepth/resnet101_ours_SD.yml`` (pose
network lr 1e-6 in the same Adam as the rest, betas (0.9, 0.999), the run's StepLR; gradient norm
clipped at 10 over every parameter, the pose network's included: ``training/base.py:model_step_``),
``models/posenet.py`` (pairs in temporal order, the matrix inverted for frame −1),
``loss/depth/unsupervised.py`` (the task's loss is the mean over scales of photometric + smoothness).

Differences: the pose network has an Adam of its own (the same update as a parameter group of
the weights' Adam: Adam is per parameter) with the run's schedule shape and ``pose_lr``; its input
is the non-augmented frames (DenseMTL's SDE has no colour jitter, so they are the same pixels); the
tie-break noise of auto-masking is drawn from a generator seeded by (seed, step), so a resumed run
draws the same noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scenemtl.engine.optim import build_scheduler
from scenemtl.errors import ConfigError, DataError
from scenemtl.extension import TrainingExtension, register_objective
from scenemtl.models.pose import PoseNet
from scenemtl.settings.photometric import MonodepthLoss

FRAMES_HELP = (
    "self-supervised depth needs video frames in every training batch: use a dataset that serves them "
    "(cityscapes* with data.options.sequence_folder: leftImg8bit_sequence, or synthetic with data.options.frames: true)"
)


class SelfSupervisedDepth(TrainingExtension):
    """The depth task trained from video: photometric reprojection through a pose network (see the module docstring)."""

    name = "self_supervised_depth"

    def __init__(
        self,
        config: Any,
        tasks: dict,
        device: torch.device,
        task: str = "depth",
        pose_lr: float = 1e-6,
        pose_weights: str | None = None,
        smoothness: float = 1e-3,
        ssim_weight: float = 0.85,
        automask: bool = True,
        noise_std: float = 1e-5,
    ) -> None:
        if task not in tasks:
            raise ConfigError(f"objectives: self_supervised_depth trains task '{task}', which the config does not have ({list(tasks)})")
        depth = tasks[task]
        if getattr(depth, "output", None) != "disparity":
            raise ConfigError(
                f"objectives: self_supervised_depth needs tasks.{task}.output: disparity (a sigmoid disparity, "
                f"monodepth2's head), got {getattr(depth, 'output', None)!r}"
            )
        if not pose_lr > 0:
            raise ConfigError(f"objectives: self_supervised_depth pose_lr must be positive, got {pose_lr!r}")
        self.task, self.depth_task, self.seed = task, depth, int(config.seed)
        self.replaces = (task,)
        self.pose = PoseNet(pose_weights).to(device)
        self.device = device
        low, high = depth.depth_range
        self.loss = MonodepthLoss(
            min_depth=low, max_depth=high, smoothness=smoothness, ssim_weight=ssim_weight, automask=automask, noise_std=noise_std
        )
        self.optimizer = torch.optim.Adam(self.pose.parameters(), lr=pose_lr, betas=(0.9, 0.999))
        self.scheduler = build_scheduler(config.train, self.optimizer)
        self._parts: dict[str, list[float]] = {}

    def check(self, config: Any) -> None:
        """Gradient scaling under fp16 would leave the pose network's gradients scaled."""
        if config.train.precision == "fp16":
            raise ConfigError("objectives: self_supervised_depth trains in fp32 or bf16, not fp16 (set train.precision)")

    def parameters(self) -> list[nn.Parameter]:
        """The pose network's parameters."""
        return list(self.pose.parameters())

    def losses(self, output: Any, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """The depth task's photometric loss on this micro-batch."""
        if "frames" not in batch or "camera" not in batch:
            raise DataError(FRAMES_HELP)
        frames = batch["frames"].float() / 255.0
        if frames.dim() != 5 or frames.shape[1] != 3:
            raise DataError(f"batch['frames'] must be [B, 3, 3, H, W] (frames -1, 0, +1), got {tuple(frames.shape)}")
        target = frames[:, 1]
        sources = {-1: frames[:, 0], 1: frames[:, 2]}
        poses = {offset: self.pose(source, target, offset) for offset, source in sources.items()}
        disparities = [self.depth_task.disparity(output.final[self.task])]
        disparities += [self.depth_task.disparity(stage[self.task]) for stage in output.aux.values() if self.task in stage]
        self.loss.scales = tuple(range(len(disparities)))
        generator = torch.Generator(device=target.device).manual_seed(self.seed * 1_000_003 + step)
        camera = batch["camera"].float()
        total, parts = self.loss(disparities, {0: target, **sources}, camera, poses, generator)
        for key, value in parts.items():
            entry = self._parts.setdefault(key, [0.0, 0])
            entry[0] += float(value)
            entry[1] += 1
        return {self.task: total}

    def step(self) -> None:
        """Adam step of the pose network, then its schedule."""
        self.optimizer.step()
        self.scheduler.step()

    def log_values(self) -> dict[str, float]:
        """Means since the last log of the photometric and smoothness terms and the auto-mask share, per scale."""
        values = {key: total / count for key, (total, count) in self._parts.items() if count}
        self._parts = {}
        return values

    def state_dict(self) -> dict[str, Any]:
        """The pose network, its optimiser and schedule."""
        return {"pose": self.pose.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.pose.load_state_dict(state["pose"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


@register_objective("self_supervised_depth")
def self_supervised_depth(
    config: Any,
    tasks: dict,
    model: nn.Module,
    device: torch.device,
    task: str = "depth",
    pose_lr: float = 1e-6,
    pose_weights: str | None = None,
    smoothness: float = 1e-3,
    ssim_weight: float = 0.85,
    automask: bool = True,
    noise_std: float = 1e-5,
) -> SelfSupervisedDepth:
    """Depth trained from video through a pose network (DenseMTL's SDE, monodepth2's loss)."""
    return SelfSupervisedDepth(config, tasks, device, task, pose_lr, pose_weights, smoothness, ssim_weight, automask, noise_std)
