"""Synthetic clips (``frames: true``) and domains (``domain: target``) of the built-in dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scenemtl import geometry
from scenemtl.data.render import render_view
from scenemtl.data.synthetic import SyntheticScenes
from scenemtl.errors import ConfigError
from scenemtl.registry import check_options

H, W = 24, 32


def _clips(domain: str = "source", n: int = 3, motion: float = 0.15, **options) -> SyntheticScenes:
    return SyntheticScenes(split="train", height=H, width=W, num_train=n, frames=True, motion=motion, domain=domain, **options)


def _to_grid(pixels: torch.Tensor) -> torch.Tensor:
    """``[2, H·W]`` pixel coordinates (u, v) to a ``grid_sample`` grid ``[1, H, W, 2]`` (align_corners=True)."""
    grid = torch.stack([2 * pixels[0] / (W - 1) - 1, 2 * pixels[1] / (H - 1) - 1], dim=-1)
    return grid.reshape(1, H, W, 2).float()


def _project(sample: dict, slot: int) -> torch.Tensor:
    """Frame 0's pixels moved into frame ``slot`` (0: −1, 1: +1) with ``geometry``, ``camera`` and ``meta['poses']``."""
    camera = sample["camera"].double()
    points = geometry.backproject(sample["depth"][None].double(), torch.linalg.inv(camera))[0].reshape(3, -1)
    pose = torch.tensor(sample["meta"]["poses"][slot], dtype=torch.float64)
    moved = pose[:3, :3] @ points + pose[:3, 3:]
    return (camera @ moved)[:2] / moved[2]


def _renderer_projection(arrays: dict, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame 0's pixels moved into ``frame`` (0, 1, 2) with the renderer's own cameras (pixel centres at
    ``u + ½``, ``camera_to_world``): pixel coordinates in geometry's convention and camera-frame z."""
    K = arrays["intrinsics"].astype(np.float64)
    to_world = arrays["camera_to_world"]
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(H * W)])
    world = to_world[1, :3, :3] @ (rays * arrays["depth"].ravel().astype(np.float64)) + to_world[1, :3, 3:]
    other = to_world[frame, :3, :3].T @ (world - to_world[frame, :3, 3:])
    return (K @ other)[:2] / other[2] - 0.5, other[2]


def _near_edge(arrays: dict) -> torch.Tensor:
    """Frame 0's pixels within one pixel of a boundary (where bilinear sampling mixes surfaces)."""
    return F.max_pool2d(torch.from_numpy(arrays["edge"])[None, None], 3, 1, 1)[0, 0] > 0


def _seen(ds: SyntheticScenes, index: int, frame: int) -> tuple[np.ndarray, dict]:
    """Frame 0's pixels that ``frame`` sees on the same surface (in view, same instance at the nearest pixel)."""
    arrays = ds.render(index)
    pixels, z = _renderer_projection(arrays, frame)
    to_world = arrays["camera_to_world"][frame]
    view = render_view(ds.scene(index), to_world[:3, 3], to_world[:3, :3], np.random.default_rng(0))
    inside = (pixels[0] >= 0) & (pixels[0] <= W - 1) & (pixels[1] >= 0) & (pixels[1] <= H - 1) & (z > 0)
    u, v = np.clip(np.round(pixels[0]), 0, W - 1).astype(int), np.clip(np.round(pixels[1]), 0, H - 1).astype(int)
    return inside & (view["instance"][v, u] == arrays["instance"].ravel()), view


def test_frames_camera_and_poses_follow_the_contract() -> None:
    ds = _clips()
    sample = ds[1]
    assert sample["frames"].shape == (3, 3, H, W) and sample["frames"].dtype == torch.uint8
    assert torch.equal(sample["frames"][1], sample["image"])
    assert not torch.equal(sample["frames"][0], sample["image"]) and not torch.equal(sample["frames"][2], sample["image"])
    f = 0.5 * W / np.tan(np.deg2rad(30.0))
    assert sample["camera"].dtype == torch.float32 and sample["camera"].shape == (3, 3)
    torch.testing.assert_close(sample["camera"], torch.tensor([[f, 0, W / 2 - 0.5], [0, f, H / 2 - 0.5], [0, 0, 1]], dtype=torch.float32))
    poses = np.array(sample["meta"]["poses"])
    assert isinstance(sample["meta"]["poses"], list) and poses.shape == (2, 4, 4)
    np.testing.assert_allclose(poses[:, 3], [[0, 0, 0, 1]] * 2)
    for pose in poses:  # rigid: a rotation and a translation
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(pose[:3, :3]) > 0
    # frame 0 and its targets are the sample of frames: false
    plain = SyntheticScenes(split="train", height=H, width=W, num_train=3)[1]
    for key in ("image", "semseg", "depth", "normals", "edge", "saliency"):
        assert torch.equal(sample[key], plain[key]), key
    assert "frames" not in plain and "camera" not in plain and "poses" not in plain["meta"]


def test_clips_are_deterministic() -> None:
    a, b = _clips(cache=False)[2], _clips(cache=False)[2]
    assert torch.equal(a["frames"], b["frames"]) and a["meta"]["poses"] == b["meta"]["poses"]
    assert not torch.equal(a["frames"], _clips(cache=False)[1]["frames"])


@pytest.mark.parametrize("motion", [0.15, 0.4])
def test_motion_is_a_forward_walk_with_small_turns(motion: float) -> None:
    ds = _clips(n=6, motion=motion)
    for i in range(len(ds)):
        for slot, sign in ((0, -1), (1, 1)):
            pose = np.array(ds[i]["meta"]["poses"][slot])
            centre = np.linalg.inv(pose)[:3, 3]  # that frame's camera centre in frame 0's camera
            assert np.linalg.norm(centre) == pytest.approx(motion, rel=1e-3)
            assert sign * centre[2] > 0.8 * motion  # forward-ish: along the optical axis
            angle = np.rad2deg(np.arccos(np.clip((np.trace(pose[:3, :3]) - 1) / 2, -1, 1)))
            assert angle <= np.hypot(2.0, 1.0) + 1e-9


@pytest.mark.parametrize("domain", ["source", "target"])
def test_projection_with_camera_and_poses_matches_the_renderer(domain: str) -> None:
    """Frame 0's depth back-projected with ``camera``, moved by ``meta['poses']``, lands where the
    renderer's frame ±1 sees that world point."""
    ds = _clips(domain)
    for index in range(len(ds)):
        sample, arrays = ds[index], ds.render(index)
        for slot, frame in ((0, 0), (1, 2)):
            seen, view = _seen(ds, index, frame)
            assert seen.mean() > 0.6
            expected, z = _renderer_projection(arrays, frame)
            got = _project(sample, slot).numpy()
            assert np.abs(got - expected)[:, seen].max() < 0.05
            # the other frame's own depth there is the point's depth (bilinear, so up to curvature)
            depth = F.grid_sample(
                torch.from_numpy(view["depth"])[None, None].double(), _to_grid(torch.from_numpy(got)).double(), align_corners=True
            )
            relative = np.abs(depth.numpy().ravel() - z) / z
            interior = seen & ~_near_edge(arrays).numpy().ravel()
            assert np.median(relative[seen]) < 2e-3 and np.mean(relative[interior] < 0.02) > 0.95
            # and the clip's frame is that view (the only difference: sensor noise)
            noise = np.abs(view["image"].astype(int) - arrays["frames"][frame].astype(int))
            assert noise.max() <= (5 if domain == "source" else 40) and noise.mean() < 5


@pytest.mark.parametrize("domain", ["source", "target"])
def test_frames_are_photometrically_consistent(domain: str) -> None:
    """Frame ±1 sampled at the projected positions reproduces frame 0 on visible interior pixels,
    up to sensor noise, and much better than with the wrong pose."""
    ds = _clips(domain, n=4)
    right, wrong = [], []
    for index in range(len(ds)):
        sample, arrays = ds[index], ds.render(index)
        near_edge = _near_edge(arrays)
        target = sample["frames"][1].float()
        for slot, frame in ((0, 0), (1, 2)):
            seen, _ = _seen(ds, index, frame)
            valid = torch.from_numpy(seen.reshape(H, W)) & ~near_edge
            assert valid.float().mean() > 0.15
            source = sample["frames"][frame][None].float()
            for pose_slot, errors in ((slot, right), (1 - slot, wrong)):
                warped = F.grid_sample(source, _to_grid(_project(sample, pose_slot)), align_corners=True)[0]
                errors.append(float((warped - target).abs().mean(0)[valid].mean()))
    # sensor noise alone: |difference| of two uniform ±2.5 (source) or N(0, 4²) (target) levels
    assert np.mean(right) < (3.0 if domain == "source" else 6.0)
    assert np.mean(right) < 0.5 * np.mean(wrong)
    if domain == "source":  # the target's stronger noise can hide a wrong pose on a plain view
        assert all(r < 0.8 * w for r, w in zip(right, wrong))


def test_domains_differ_in_appearance_not_in_labels() -> None:
    n = 32
    stats = {}
    for domain in ("source", "target"):
        ds = SyntheticScenes(split="train", height=H, width=W, num_train=n, domain=domain, cache=False)
        samples = [ds[i] for i in range(n)]
        colour = torch.stack([s["image"].float().mean(dim=(1, 2)) for s in samples]).mean(0)
        classes = np.bincount(np.concatenate([s["semseg"].numpy().ravel() for s in samples]), minlength=6) / (n * H * W)
        depth = np.mean([s["depth"].mean().item() for s in samples])
        stats[domain] = (colour, classes, depth, samples)
    (c_src, k_src, d_src, s_src), (c_tgt, k_tgt, d_tgt, s_tgt) = stats["source"], stats["target"]
    assert c_src.mean() - c_tgt.mean() > 20  # dimmer
    assert (c_tgt[0] - c_tgt[2]) - (c_src[0] - c_src[2]) > 4  # warmer: more red than blue
    assert np.abs(k_src - k_tgt).sum() < 0.25 and abs(d_src - d_tgt) < 0.15 * d_src
    # other scenes, not the source scenes re-coloured
    assert all(not torch.equal(a["semseg"], b["semseg"]) for a, b in zip(s_src[:4], s_tgt[:4]))
    # the source domain is the default, bit for bit
    explicit = SyntheticScenes(split="train", height=H, width=W, num_train=2, domain="source", frames=False)[1]
    default = SyntheticScenes(split="train", height=H, width=W, num_train=2)[1]
    assert all(torch.equal(explicit[k], default[k]) for k in ("image", "semseg", "depth", "normals", "edge", "saliency"))


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data\.options\.domain.*Did you mean 'target'"):
        SyntheticScenes(domain="targte")
    with pytest.raises(ConfigError, match=r"data\.options\.motion"):
        SyntheticScenes(frames=True, motion=-0.1)
    with pytest.raises(ConfigError, match=r"data\.options\.motion"):
        SyntheticScenes(frames=True, motion=2.0)
    with pytest.raises(ConfigError, match=r"data\.options\.frame'.*Did you mean 'frames'"):
        check_options(SyntheticScenes, {"frame": True}, "data.options", ("root", "split", "tasks"), owner="synthetic")
    with pytest.raises(ConfigError, match=r"data\.options\.motion"):
        check_options(SyntheticScenes, {"motion": "fast"}, "data.options", ("root", "split", "tasks"), owner="synthetic")
