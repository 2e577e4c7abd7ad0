"""The self-supervised depth losses on an analytic scene: a textured tilted plane rendered exactly from
a target camera and from translated source cameras (no warping used to make the frames)."""

from __future__ import annotations

import torch

from scenemtl.geometry import backproject
from scenemtl.settings.photometric import (
    MonodepthLoss,
    depth_to_disp,
    disp_to_depth,
    min_reprojection,
    project,
    reprojection_loss,
    smoothness_loss,
    ssim_loss,
    warp,
)

H, W = 32, 48
K = torch.tensor([[40.0, 0.0, 23.5], [0.0, 40.0, 15.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
# the plane Z = Z0 + GX·X + GY·Y in the target camera's frame
Z0, GX, GY = 4.0, 0.15, -0.1
CENTRES = {-1: (-0.25, 0.04, -0.15), 1: (0.3, -0.05, 0.2)}  # source camera centres in the target frame


def texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A smooth colour pattern ``[3, ...]`` in [0.1, 0.9] on plane coordinates (metres)."""
    return torch.stack(
        [
            0.5 + 0.25 * torch.sin(3.1 * x + 1.3 * y) + 0.15 * torch.cos(2.3 * y - 0.9 * x),
            0.5 + 0.2 * torch.cos(2.7 * x - 2.1 * y) + 0.2 * torch.sin(1.7 * y + 0.5),
            0.5 + 0.3 * torch.sin(1.9 * x + 2.9 * y + 1.0) * torch.cos(0.8 * x),
        ]
    )


def render(centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame ``[1,3,H,W]`` and z-depth ``[1,1,H,W]`` seen by an unrotated camera at ``centre``."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rx, ry = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    cx, cy, cz = centre
    depth = (Z0 + GX * cx + GY * cy - cz) / (1 - GX * rx - GY * ry)  # the ray c + μ·(rx, ry, 1) meets the plane
    image = texture(cx + depth * rx, cy + depth * ry)
    return image[None].float(), depth[None, None].float()


def pose_of(centre: tuple[float, float, float]) -> torch.Tensor:
    """Target → source for an unrotated source camera at ``centre``: X_s = X_t − c."""
    pose = torch.eye(4)
    pose[:3, 3] = -torch.tensor(centre)
    return pose[None]


def interior(depth: torch.Tensor, pose: torch.Tensor, margin: int = 2) -> torch.Tensor:
    """Target pixels away from the image border whose true projection lands ``margin`` pixels inside the source image."""
    grid = project(backproject(depth, torch.linalg.inv(K).float()), K, pose)
    pad = torch.tensor([2 * margin / (W - 1), 2 * margin / (H - 1)])
    inside = (grid.abs() <= 1 - pad).all(-1)[:, None]
    inside[..., :margin, :] = inside[..., -margin:, :] = False
    inside[..., :, :margin] = inside[..., :, -margin:] = False
    return inside


def test_project_maps_pixel_centres_to_the_grid_corners_at_identity_pose():
    grid = project(backproject(torch.full((1, 1, H, W), 3.0), torch.linalg.inv(K).float()), K, torch.eye(4)[None])
    assert torch.allclose(grid[0, 0, 0], torch.tensor([-1.0, -1.0]), atol=1e-5)
    assert torch.allclose(grid[0, -1, -1], torch.tensor([1.0, 1.0]), atol=1e-5)
    assert torch.allclose(grid[0, 3, 5], torch.tensor([2 * 5 / (W - 1) - 1, 2 * 3 / (H - 1) - 1]), atol=1e-5)


def test_true_depth_and_pose_reproduce_the_target_and_wrong_ones_do_not():
    target, depth = render()
    source, _ = render(CENTRES[1])
    pose, camera = pose_of(CENTRES[1]), K[None].float()
    mask = interior(depth, pose)
    assert mask.float().mean() > 0.5

    def loss(d: torch.Tensor, p: torch.Tensor) -> float:
        return reprojection_loss(warp(source, d, camera, p), target)[mask].mean().item()

    true = loss(depth, pose)
    assert true < 1e-3
    assert loss(depth * 1.5, pose) > 5 * true
    assert loss(depth, pose_of((0.0, 0.0, 0.0))) > 5 * true
    assert loss(depth, pose_of((0.45, -0.05, 0.2))) > 5 * true


def test_static_scene_with_a_wrong_pose_masks_every_pixel():
    target, depth = render()
    moved = pose_of((0.4, 0.1, 0.0))  # the camera did not move; the pose estimate says it did
    reprojected = [reprojection_loss(warp(target, depth, K[None].float(), moved), target)]
    identity = [reprojection_loss(target, target)]
    assert identity[0].abs().max() == 0
    loss, wins = min_reprojection(reprojected, identity, torch.Generator().manual_seed(0))
    assert not wins.any()  # the identity loss (0 + noise) wins everywhere
    assert loss.abs().max() < 1e-4  # and enters the loss as that noise
    # with the true (identity) pose the reprojection also reproduces the target: both are ≈ 0
    still = [reprojection_loss(warp(target, depth, K[None].float(), pose_of((0.0, 0.0, 0.0))), target)]
    assert still[0].max() < 1e-4
    loss, _ = min_reprojection(still, identity, torch.Generator().manual_seed(0))
    assert loss.abs().max() < 1e-4


def test_min_reprojection_on_hand_made_maps():
    rep = [torch.tensor([[[[0.5, 0.1, 0.3]]]]), torch.tensor([[[[0.4, 0.6, 0.3]]]])]
    ident = [torch.tensor([[[[0.2, 0.9, 0.3]]]]), torch.tensor([[[[0.7, 0.8, 0.9]]]])]
    loss, wins = min_reprojection(rep, ident, noise_std=0.0)
    assert torch.equal(loss, torch.tensor([[[[0.2, 0.1, 0.3]]]]))
    assert wins.dtype == torch.bool and wins.tolist() == [[[[False, True, False]]]]  # an exact tie goes to identity
    loss, wins = min_reprojection(rep, None)
    assert torch.equal(loss, torch.tensor([[[[0.4, 0.1, 0.3]]]])) and wins.all()
    # the noise: drawn from the generator, 1e-5 scale, added to identity losses only
    a, _ = min_reprojection([torch.ones(1, 1, 4, 4)], [torch.zeros(1, 1, 4, 4)], torch.Generator().manual_seed(3))
    b, _ = min_reprojection([torch.ones(1, 1, 4, 4)], [torch.zeros(1, 1, 4, 4)], torch.Generator().manual_seed(3))
    expected = 1e-5 * torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.allclose(a, expected)


def test_disp_to_depth_bounds_and_inverse():
    disp = torch.linspace(0, 1, 11)
    depth = disp_to_depth(disp)
    assert torch.isclose(depth[0], torch.tensor(100.0)) and torch.isclose(depth[-1], torch.tensor(0.1))
    assert (depth.diff() < 0).all()
    assert torch.allclose(depth_to_disp(depth), disp, atol=1e-6)
    assert torch.isclose(disp_to_depth(torch.tensor(1.0), 0.5, 20.0), torch.tensor(0.5))


def test_ssim_loss_is_zero_for_equal_images_and_positive_otherwise():
    x = torch.rand(2, 3, 8, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ssim_loss(x, x), torch.zeros_like(x))
    other = ssim_loss(x, x.flip(-1))
    assert other.shape == x.shape and other.mean() > 0.1 and other.min() >= 0 and other.max() <= 1


def test_smoothness_is_zero_for_constant_disparity_and_grows_with_edges():
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert smoothness_loss(torch.full((1, 1, 8, 8), 0.3), flat) == 0
    one, two = torch.full((1, 1, 8, 8), 0.3), torch.full((1, 1, 8, 8), 0.3)
    one[..., 4:] = 0.6
    two[..., 2:4], two[..., 6:] = 0.6, 0.6
    assert 0 < smoothness_loss(one, flat) < smoothness_loss(two, flat)
    edged = flat.clone()
    edged[..., 4:] = 0.0  # an image edge where the disparity edge is lowers its cost
    assert smoothness_loss(one, edged) < smoothness_loss(one, flat)


def _disparity_pyramid(depth_scale: float = 1.0) -> list[torch.Tensor]:
    """The true disparity at scales 0–3, sampled at each scale's pixel centres (inverse depth of a plane
    is affine in the pixel coordinates, so bilinear upsampling recovers it in the interior)."""
    out = []
    for s in range(4):
        h, w = H // 2**s, W // 2**s
        v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
        u, v = (u + 0.5) * 2**s - 0.5, (v + 0.5) * 2**s - 0.5
        depth = Z0 / (1 - GX * (u - K[0, 2]) / K[0, 0] - GY * (v - K[1, 2]) / K[1, 1])
        out.append(depth_to_disp(depth * depth_scale)[None, None].float().requires_grad_())
    return out


def test_monodepth_loss_prefers_the_true_depth_and_reaches_the_disparities():
    frames = {0: render()[0], **{o: render(c)[0] for o, c in CENTRES.items()}}
    poses = {o: pose_of(c) for o, c in CENTRES.items()}
    criterion = MonodepthLoss()
    true = _disparity_pyramid()
    total, parts = criterion(true, frames, K[None].float(), poses, torch.Generator().manual_seed(0))
    wrong, _ = criterion(_disparity_pyramid(1.5), frames, K[None].float(), poses, torch.Generator().manual_seed(0))
    assert total < wrong
    assert set(parts) == {f"{k}/{s}" for k in ("photometric", "smoothness", "automask") for s in range(4)}
    assert all(parts[f"automask/{s}"] > 0.8 for s in range(4))  # the camera moves: reprojections win
    sums = [parts[f"photometric/{s}"] + parts[f"smoothness/{s}"] for s in range(4)]
    assert torch.isclose(total.detach(), torch.stack(sums).mean())
    assert torch.isclose(parts["smoothness/0"], 1e-3 * smoothness_loss(true[0], frames[0]).detach())
    total.backward()
    for disp in true:
        assert disp.grad is not None and torch.isfinite(disp.grad).all() and disp.grad.abs().sum() > 0
