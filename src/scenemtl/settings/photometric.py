"""Self-supervised monocular depth losses: DenseMTL's SDE setting, which is monodepth2's loss.

Facts followed (astra-vision/DenseMTL, written anew here):

- ``vendor/monodepth2/layers.py``: the sigmoid disparity maps to depth as ``1/(1/max + (1/min − 1/max)·disp)``;
  projection divides by ``z + 1e-7`` and normalises pixels as ``2·u/(W − 1) − 1`` for ``grid_sample`` with
  ``align_corners=True``; SSIM with a reflection pad of 1, 3×3 average pools, ``C1 = 0.01²``, ``C2 = 0.03²``
  and ``clamp((1 − SSIM)/2, 0, 1)``; edge-aware smoothness ``mean|∂d|·exp(−mean_c|∂I|)`` in x plus in y.
- ``vendor/monodepth2/loss.py``: each scale's disparity is upsampled bilinearly (``align_corners=False``) to
  the full (crop) resolution, turned into depth and used to warp the full-resolution source frames
  (``padding_mode="border"``); reprojection loss ``0.85·SSIM + 0.15·L1`` (channel means) against the
  full-resolution target; identity losses (unwarped source vs target) get ``1e-5·N(0, 1)`` tie-break noise
  and the per-pixel minimum is taken over identity and reprojection losses together (``avg_reprojection``
  off), so auto-masked pixels still count, with their identity loss, in ``to_optimise.mean()``; the
  automask is "a reprojection loss is the minimum"; smoothness on the native-resolution disparity divided
  by its spatial mean (``+ 1e-7``) against ``('color', 0, s)``, weighted ``1e-3 / 2**s``; the total is the
  mean over scales of photometric + smoothness (so is ``loss/depth/unsupervised.py``'s task total).
- ``configs/cityscapes/monodepth/resnet101_ours_SD.yml``: scales 0–3, depth range 0.1–100 m, smoothness
  1e-3, SSIM on, per-pixel minimum, automasking on, source frames −1 and +1.

What differs, and why:

- Camera matrices are 3×3 and poses 4×4 target→source (monodepth2 multiplies a 4×4 ``K`` by ``T``); the
  pixel grid is built per call (:mod:`scenemtl.geometry`), not a module bound to one batch size.
- ``('color', 0, s)`` is, in DenseMTL (``dataset/base.py``), a PIL ``ANTIALIAS`` (Lanczos) resize chained
  scale to scale; here the target is resized from full resolution with antialiased bilinear
  interpolation, which is close but not bit-equal (it only feeds the edge weights of the smoothness term).
- The tie-break noise can come from a given ``torch.Generator`` (on the tensors' device) and its scale is
  an option; pixels where identity and reprojection tie exactly (noise 0) count as identity wins, as
  ``torch.min`` over ``cat(identity, reprojection)`` picks the first.
- The automask share is reported for every scale (monodepth2 keeps the scale-0 map for display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scenemtl.geometry import backproject


def disp_to_depth(disp: Tensor, min_depth: float = 0.1, max_depth: float = 100.0) -> Tensor:
    """Depth of a sigmoid disparity in ``[0, 1]``: 0 → ``max_depth``, 1 → ``min_depth``, linear in inverse depth."""
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    return 1.0 / (lo + (hi - lo) * disp)


def depth_to_disp(depth: Tensor, min_depth: float = 0.1, max_depth: float = 100.0) -> Tensor:
    """The inverse of :func:`disp_to_depth`."""
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    return (1.0 / depth - lo) / (hi - lo)


def project(points: Tensor, camera: Tensor, pose: Tensor, eps: float = 1e-7) -> Tensor:
    """Sampling grid ``[B,H,W,2]`` in ``[-1, 1]`` (``grid_sample(align_corners=True)``) of target-camera
    ``points`` ``[B,3,H,W]`` moved by ``pose`` ``[B,4,4]`` (target → source) and projected with ``camera``."""
    batch, _, height, width = points.shape
    pose, camera = pose.to(points.dtype), camera.to(points.dtype)
    moved = pose[..., :3, :3] @ points.reshape(batch, 3, -1) + pose[..., :3, 3:]
    pixels = camera @ moved
    uv = pixels[:, :2] / (pixels[:, 2:] + eps)
    scale = uv.new_tensor([2.0 / (width - 1), 2.0 / (height - 1)]).view(1, 2, 1)
    return (uv * scale - 1.0).reshape(batch, 2, height, width).permute(0, 2, 3, 1)


def warp(source: Tensor, depth: Tensor, camera: Tensor, pose: Tensor) -> Tensor:
    """``source`` ``[B,C,H,W]`` resampled at the target pixels whose depth is ``depth`` ``[B,1,H,W]``."""
    camera = camera.to(depth.dtype)
    grid = project(backproject(depth, torch.linalg.inv(camera)), camera, pose)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)


def ssim_loss(x: Tensor, y: Tensor) -> Tensor:
    """``(1 − SSIM)/2`` clamped to ``[0, 1]``, per pixel and channel (``[B,C,H,W]``), over 3×3 windows."""
    channels = x.shape[1]
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    stats = F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y], 1), kernel_size=3, stride=1)
    mu_x, mu_y, xx, yy, xy = stats.split(channels, dim=1)
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return ((1 - num / den) / 2).clamp(0, 1)


def reprojection_loss(pred: Tensor, target: Tensor, ssim_weight: float = 0.85) -> Tensor:
    """``ssim_weight·SSIM + (1 − ssim_weight)·L1``, each averaged over channels: ``[B,1,H,W]``."""
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if ssim_weight == 0:
        return l1
    return ssim_weight * ssim_loss(pred, target).mean(1, keepdim=True) + (1 - ssim_weight) * l1


def min_reprojection(
    reprojected: Sequence[Tensor],
    identity: Sequence[Tensor] | None = None,
    generator: torch.Generator | None = None,
    noise_std: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Per-pixel minimum ``[B,1,H,W]`` over reprojection losses and (noised) identity losses, and the
    automask ``[B,1,H,W]`` (bool): True where a reprojection loss is the minimum. Without ``identity``,
    the minimum over reprojections and an all-True mask."""
    best = torch.cat(list(reprojected), 1).amin(1, keepdim=True)
    if identity is None:
        return best, torch.ones_like(best, dtype=torch.bool)
    ident = torch.cat(list(identity), 1)
    if noise_std:
        ident = ident + noise_std * torch.randn(ident.shape, generator=generator, device=ident.device, dtype=ident.dtype)
    ident = ident.amin(1, keepdim=True)
    wins = best < ident
    return torch.where(wins, best, ident), wins


def smoothness_loss(disp: Tensor, image: Tensor) -> Tensor:
    """Edge-aware smoothness of ``disp`` ``[B,1,h,w]`` (divided by its spatial mean) given ``image`` ``[B,3,h,w]``."""
    disp = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    total = disp.new_zeros(())
    for dim in (-1, -2):
        n = disp.shape[dim] - 1
        grad_d = (disp.narrow(dim, 1, n) - disp.narrow(dim, 0, n)).abs()
        grad_i = (image.narrow(dim, 1, n) - image.narrow(dim, 0, n)).abs().mean(1, keepdim=True)
        total = total + (grad_d * torch.exp(-grad_i)).mean()
    return total


class MonodepthLoss(nn.Module):
    """DenseMTL's self-supervised depth loss over disparity scales (monodepth2's, with automasking).

    ``forward(disparities, frames, camera, poses)``: ``disparities[i]`` is the sigmoid disparity
    ``[B,1,H/2^s,W/2^s]`` at scale ``s = scales[i]``; ``frames`` maps offsets (0 the target, −1 and +1
    the sources) to non-augmented ``[B,3,H,W]`` frames in ``[0, 1]``; ``camera`` ``[B,3,3]`` is the
    full-resolution matrix; ``poses`` maps each source offset to its ``[B,4,4]`` target→source pose.
    Returns the total and detached parts: ``photometric/s``, ``smoothness/s`` (weighted, so the total is
    the mean over scales of their sums) and ``automask/s`` (share of pixels a reprojection wins)."""

    def __init__(
        self,
        scales: Sequence[int] = (0, 1, 2, 3),
        min_depth: float = 0.1,
        max_depth: float = 100.0,
        smoothness: float = 1e-3,
        ssim_weight: float = 0.85,
        automask: bool = True,
        noise_std: float = 1e-5,
    ) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.min_depth, self.max_depth = min_depth, max_depth
        self.smoothness, self.ssim_weight = smoothness, ssim_weight
        self.automask, self.noise_std = automask, noise_std

    def forward(
        self,
        disparities: Sequence[Tensor],
        frames: Mapping[int, Tensor],
        camera: Tensor,
        poses: Mapping[int, Tensor],
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if len(disparities) != len(self.scales):
            raise ValueError(f"{len(disparities)} disparity maps for scales {self.scales}")
        target = frames[0]
        size = target.shape[-2:]
        sources = [frames[offset] for offset in poses]
        identity = [reprojection_loss(s, target, self.ssim_weight) for s in sources] if self.automask else None
        total = target.new_zeros(())
        parts: dict[str, Tensor] = {}
        for scale, disp in zip(self.scales, disparities):
            full = disp if disp.shape[-2:] == size else F.interpolate(disp, size, mode="bilinear", align_corners=False)
            depth = disp_to_depth(full, self.min_depth, self.max_depth)
            reprojected = [
                reprojection_loss(warp(source, depth, camera, pose), target, self.ssim_weight)
                for source, pose in zip(sources, poses.values())
            ]
            loss_map, wins = min_reprojection(reprojected, identity, generator, self.noise_std)
            photometric = loss_map.mean()
            image = target
            if disp.shape[-2:] != size:
                image = F.interpolate(target, disp.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            smooth = self.smoothness * smoothness_loss(disp, image) / 2**scale
            total = total + photometric + smooth
            parts[f"photometric/{scale}"] = photometric.detach()
            parts[f"smoothness/{scale}"] = smooth.detach()
            parts[f"automask/{scale}"] = wins.float().mean()
        return total / len(self.scales), parts
