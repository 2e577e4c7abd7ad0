"""Camera geometry: back-projection, intrinsics under resize/crop/flip, normals from depth (DenseMTL's computation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scenemtl import geometry
from scenemtl.metrics.normals import angular_error

CAMERA = geometry.intrinsics(40.0, 42.0, 23.5, 15.5)
H, W = 32, 48


def plane_depth(normal, offset: float, camera: np.ndarray = CAMERA, size=(H, W)) -> torch.Tensor:
    """z-depth ``[1,1,H,W]`` of the plane n·X = offset seen through ``camera`` (rays through pixel centres)."""
    grid = geometry.pixel_grid(*size, dtype=torch.float64)
    rays = torch.linalg.inv(torch.as_tensor(camera)) @ grid  # z component 1
    n = torch.tensor(normal, dtype=torch.float64)
    depth = offset / (n @ rays)
    return depth.reshape(1, 1, *size)


def test_backproject_then_project_returns_the_pixels():
    depth = torch.rand(2, 1, H, W, dtype=torch.float64) * 5 + 1
    inv = torch.linalg.inv(torch.as_tensor(CAMERA))
    points = geometry.backproject(depth, inv)
    assert torch.allclose(points[:, 2:], depth)
    pixels = torch.as_tensor(CAMERA) @ points.reshape(2, 3, -1)
    pixels = pixels[:, :2] / pixels[:, 2:]
    grid = geometry.pixel_grid(H, W, dtype=torch.float64)[:2]
    assert torch.allclose(pixels, grid.expand(2, 2, -1), atol=1e-9)


def test_fronto_parallel_plane_faces_the_camera_with_z_made_positive():
    depth = torch.full((1, 1, H, W), 3.0, dtype=torch.float64)
    normals = geometry.normals_from_depth(depth, CAMERA)
    mask = (normals != 0).any(1)[0]
    # the border and its 3×3 erosion go: two pixels on every side
    assert mask.sum() == (H - 4) * (W - 4) and not mask[:2].any() and not mask[:, -2:].any()
    assert torch.allclose(normals[0][:, mask], torch.tensor([0.0, 0.0, 1.0])[:, None], atol=1e-6)
    raw = geometry.normals_from_depth(depth, CAMERA, orient="none")
    assert torch.allclose(raw[0][:, mask], torch.tensor([0.0, 0.0, -1.0])[:, None], atol=1e-6)


@pytest.mark.parametrize("normal", [(0.3, -0.5, 0.81), (-0.6, 0.2, 0.77), (0.0, -0.9, 0.44)])
def test_tilted_plane_gives_the_analytic_normal(normal):
    n = torch.tensor(normal, dtype=torch.float64)
    n = n / n.norm()
    depth = plane_depth(n.tolist(), 4.0)
    assert bool((depth > 0).all())
    normals = geometry.normals_from_depth(depth, CAMERA, orient="flip")
    mask = (normals != 0).any(1)[0]
    expected = n if n[2] > 0 else -n
    error = angular_error(normals[0][:, mask].T[..., None], expected.expand(int(mask.sum()), 3)[..., None].float())
    assert float(error.max()) < 1e-3
    # DenseMTL's abs(z) only equals the true normal where the cross products already had z >= 0 (here: never)
    legacy = geometry.normals_from_depth(depth, CAMERA, orient="abs_z")[0][:, mask]
    assert torch.allclose(legacy[2], expected[2].float().expand_as(legacy[2]), atol=1e-5)
    assert torch.allclose(legacy[:2], -expected[:2, None].float().expand_as(legacy[:2]), atol=1e-5)


def test_inverse_depth_code_changes_the_normals_as_in_densemtl():
    """DenseMTL unprojects 65536/(100·m+1) where depth belongs: a tilted plane's normals change (the quirk)."""
    depth = plane_depth([0.3, -0.5, 0.81], 4.0)
    metric = geometry.normals_from_depth(depth, CAMERA, orient="abs_z")
    coded = geometry.normals_from_depth(geometry.densemtl_depth_code(depth), CAMERA, orient="abs_z")
    mask = (metric != 0).any(1) & (coded != 0).any(1)
    assert float(angular_error(metric, coded)[mask].mean()) > 30.0


def test_invalid_pixels_and_their_neighbours_are_masked():
    depth = torch.full((1, 1, H, W), 2.0, dtype=torch.float64)
    depth[0, 0, 10, 20] = 0.0  # a hole
    depth[0, 0, 20, 5] = float("nan")
    normals = geometry.normals_from_depth(depth, CAMERA)
    mask = (normals != 0).any(1)[0]
    assert not mask[9:12, 19:22].any() and mask[12, 20] and mask[10, 23]
    assert not mask[19:22, 4:7].any() and mask[22, 5]
    assert torch.isfinite(normals).all()


def test_a_batch_of_three_does_not_cross_over_the_batch_axis():
    depths = torch.stack([plane_depth(n, 3.0)[0] for n in ([0.3, -0.5, 0.81], [0, 0, 1.0], [-0.6, 0.2, 0.77])])
    batch = geometry.normals_from_depth(depths, CAMERA, orient="flip")
    for i in range(3):
        assert torch.allclose(batch[i], geometry.normals_from_depth(depths[i : i + 1], CAMERA, orient="flip")[0])


def test_intrinsics_follow_resize_crop_and_flip():
    depth = plane_depth([0.3, -0.5, 0.81], 4.0, size=(H, W))
    normals = geometry.normals_from_depth(depth, CAMERA, orient="flip")
    # crop: the cropped depth with the cropped camera gives the same normals inside
    cropped = geometry.normals_from_depth(depth[..., 5:25, 7:40], geometry.crop_intrinsics(CAMERA, 5, 7), orient="flip")
    assert torch.allclose(cropped[..., 2:-2, 2:-2], normals[..., 7:23, 9:38], atol=1e-6)
    # flip: the mirrored depth with the mirrored camera gives the normals mirrored with x negated
    flipped = geometry.normals_from_depth(depth.flip(-1), geometry.flip_intrinsics(CAMERA, W), orient="flip")
    expected = normals.flip(-1) * torch.tensor([-1.0, 1.0, 1.0])[:, None, None]
    assert torch.allclose(flipped, expected, atol=1e-6)
    # resize: pixel centres stay on the same rays
    resized = geometry.resize_intrinsics(CAMERA, (H, W), (2 * H, 2 * W))
    ray = np.linalg.inv(CAMERA) @ np.array([10.0, 7.0, 1.0])
    ray2 = np.linalg.inv(resized) @ np.array([2 * 10 + 0.5, 2 * 7 + 0.5, 1.0])
    assert np.allclose(ray, ray2)
