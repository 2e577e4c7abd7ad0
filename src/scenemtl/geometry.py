"""Pinhole-camera geometry shared by the datasets and the training settings: intrinsics, back-projection,
normals from depth.

Conventions (monodepth2's and DenseMTL's): the camera frame is x right, y down, z forward; pixel
``(row v, column u)`` sits at the integer image coordinate ``(u, v)`` (its centre), so a camera
point ``X`` lands at ``K X / X_z`` with ``K = [[fx, 0, u0], [0, fy, v0], [0, 0, 1]]`` in those
coordinates. A map resized from ``(h, w)`` to ``(H, W)`` keeps pixel centres on the same scene
points when ``u' = (u + ½)·W/w − ½`` (:func:`resize_intrinsics`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def intrinsics(fx: float, fy: float, u0: float, v0: float) -> np.ndarray:
    """The 3×3 camera matrix (float64)."""
    return np.array([[fx, 0.0, u0], [0.0, fy, v0], [0.0, 0.0, 1.0]], dtype=np.float64)


def resize_intrinsics(camera: np.ndarray, old: tuple[int, int], new: tuple[int, int]) -> np.ndarray:
    """``camera`` of an ``old`` = (H, W) image for the same image resampled to ``new`` (pixel centres kept)."""
    sy, sx = new[0] / old[0], new[1] / old[1]
    out = np.array(camera, dtype=np.float64)
    out[0, 0], out[0, 2] = camera[0, 0] * sx, (camera[0, 2] + 0.5) * sx - 0.5
    out[1, 1], out[1, 2] = camera[1, 1] * sy, (camera[1, 2] + 0.5) * sy - 0.5
    return out


def crop_intrinsics(camera: np.ndarray, top: float, left: float) -> np.ndarray:
    """``camera`` after cropping (or, with negative offsets, padding) the image at ``(top, left)``."""
    out = np.array(camera, dtype=np.float64)
    out[0, 2] -= left
    out[1, 2] -= top
    return out


def flip_intrinsics(camera: np.ndarray, width: int) -> np.ndarray:
    """``camera`` of the left–right mirrored image (as a camera with x pointing left): ``u0 → W − 1 − u0``.

    A mirrored image is not a rotated camera: with this matrix, points back-projected from the
    mirrored image are the scene mirrored in x, so their normals have x negated (as the normals
    task's flip does)."""
    out = np.array(camera, dtype=np.float64)
    out[0, 2] = width - 1 - camera[0, 2]
    return out


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[3, H·W]`` homogeneous pixel coordinates ``(u, v, 1)`` in row-major order."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width, device=device, dtype=dtype)])


def backproject(depth: torch.Tensor, inv_camera: torch.Tensor) -> torch.Tensor:
    """Camera-frame points ``[B,3,H,W]`` of a depth map ``[B,1,H,W]`` (z-depth) with ``inv_camera`` ``[B,3,3]`` (or ``[3,3]``)."""
    batch, _, height, width = depth.shape
    grid = pixel_grid(height, width, depth.device, depth.dtype)
    inv = inv_camera.to(depth.dtype).expand(batch, 3, 3) if inv_camera.dim() == 2 else inv_camera.to(depth.dtype)
    rays = inv @ grid  # [B,3,HW]
    return (rays * depth.reshape(batch, 1, -1)).reshape(batch, 3, height, width)


#: DenseMTL's four pairs of neighbour offsets (column step, row step): right×up, left×down, down-right×up-right, up-left×down-left
NORMAL_BASES = (((1, 0), (0, -1)), ((-1, 0), (0, 1)), ((1, 1), (1, -1)), ((-1, -1), (-1, 1)))


def points_to_normals(points: torch.Tensor, bases: int = 4, orient: str = "abs_z") -> torch.Tensor:
    """Unit normals ``[B,3,H,W]`` of a point map ``[B,3,H,W]``: the sum of ``bases`` cross products of
    neighbour differences (DenseMTL's ``d2normals``), normalised.

    The neighbour of ``(y, x)`` at step ``(w, h)`` is ``(y + h, x + w)``, wrapping around the border
    (:func:`normals_valid_mask` removes the border); the cross products of a camera-facing surface
    point towards the camera (z < 0). ``orient``: 'abs_z' makes z positive as DenseMTL does (only
    that component: x and y keep their sign, so a tilted surface's normal bends); 'flip' negates
    the whole vector where z < 0 (the same direction convention, z ≥ 0, geometrically exact);
    'none' keeps the cross products' direction. The cross product is taken
    over the channel axis explicitly (DenseMTL's ``torch.cross`` without ``dim`` picks the first
    axis of size 3, the batch axis for a batch of 3)."""

    def step(w: int, h: int) -> torch.Tensor:
        return points.roll((-h, -w), dims=(-2, -1)) - points

    total = torch.zeros_like(points)
    for (w1, h1), (w0, h0) in NORMAL_BASES[:bases]:
        total = total + torch.linalg.cross(step(w1, h1), step(w0, h0), dim=1)
    normals = F.normalize(total, dim=1)
    if orient == "abs_z":
        return torch.cat([normals[:, :2], normals[:, 2:].abs()], dim=1)
    if orient == "flip":
        return torch.where(normals[:, 2:] < 0, -normals, normals)
    if orient != "none":
        raise ValueError(f"orient must be 'abs_z', 'flip' or 'none', got {orient!r}")
    return normals


def normals_valid_mask(valid: torch.Tensor, normals: torch.Tensor | None = None) -> torch.Tensor:
    """DenseMTL's normals mask from a depth-valid mask ``[B,1,H,W]`` (bool): the 1-pixel image border
    removed, then eroded with a 3×3 window (a pixel stays valid only when its 8 neighbours are), and
    pixels whose normal is not finite removed."""
    mask = valid.clone()
    mask[..., (0, -1), :] = False
    mask[..., :, (0, -1)] = False
    invalid = F.max_pool2d((~mask).float(), kernel_size=3, stride=1, padding=1) > 0
    mask = ~invalid
    if normals is not None:
        mask &= torch.isfinite(normals).all(dim=1, keepdim=True)
    return mask


def normals_from_depth(
    depth: torch.Tensor, camera: torch.Tensor | np.ndarray, valid: torch.Tensor | None = None, orient: str = "abs_z"
) -> torch.Tensor:
    """Normals ``[B,3,H,W]`` from depth ``[B,1,H,W]`` and the 3×3 ``camera`` matrix (or a ``[B,3,3]`` batch),
    zero where ``normals_valid_mask`` of ``valid`` (default: finite depth > 0) is false (the data
    contract's invalid normal).

    DenseMTL's computation (``models/normals.py``): back-project every pixel with the inverse camera
    matrix, four neighbour cross products, z made positive, the valid mask without border and
    eroded (``orient``: see :func:`points_to_normals`). DenseMTL feeds its "normalised inverse depth"
    ``65536/(100·m + 1)`` where depth belongs
    and uses the full-resolution Cityscapes matrix unscaled at half resolution; datasets offer
    that as their ``normals: densemtl`` option (:func:`densemtl_depth_code`)."""
    depth = depth.double()
    camera = torch.as_tensor(camera, dtype=torch.float64, device=depth.device)
    inv = torch.linalg.inv(camera)
    if valid is None:
        valid = torch.isfinite(depth) & (depth > 0)
    points = backproject(torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth)), inv)
    normals = points_to_normals(points, orient=orient)
    mask = normals_valid_mask(valid, normals)
    return torch.where(mask, normals, torch.zeros_like(normals)).float()


def densemtl_depth_code(depth_m: torch.Tensor) -> torch.Tensor:
    """DenseMTL's "normalised inverse depth" ``65536 / (100·m + 1)`` of metric depth (``dataset/cityscapes.py``)."""
    return 65536.0 / (100.0 * depth_m + 1.0)
