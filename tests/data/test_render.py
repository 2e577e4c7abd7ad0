"""Tests for the procedural ray-cast room renderer."""

from __future__ import annotations

import numpy as np
import pytest

from scenemtl.data.render import CLASS_NAMES, SceneConfig, render_scene
from scenemtl.errors import ConfigError

CFG = SceneConfig(height=48, width=64)
SEEDS = range(20)


@pytest.fixture(scope="module")
def scenes() -> list[dict[str, np.ndarray]]:
    return [render_scene(np.random.default_rng(s), CFG) for s in SEEDS]


def _rays(out: dict[str, np.ndarray]) -> np.ndarray:
    """Camera-frame ray directions (z = 1) through the pixel centres."""
    h, w = out["depth"].shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(out["intrinsics"].astype(np.float64)).T


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.rad2deg(2 * np.arctan2(np.linalg.norm(a - b, axis=-1), np.linalg.norm(a + b, axis=-1)))


def test_class_names() -> None:
    assert CLASS_NAMES == ("floor", "wall", "ceiling", "sphere", "box", "cylinder")


def test_shapes_dtypes_contiguity(scenes: list[dict[str, np.ndarray]]) -> None:
    h, w = CFG.height, CFG.width
    expected = {
        "image": (np.uint8, (h, w, 3)),
        "semseg": (np.int64, (h, w)),
        "depth": (np.float32, (h, w)),
        "normals": (np.float32, (h, w, 3)),
        "edge": (np.float32, (h, w)),
        "saliency": (np.float32, (h, w)),
        "instance": (np.int32, (h, w)),
        "intrinsics": (np.float32, (3, 3)),
    }
    for out in scenes:
        assert set(out) == set(expected)
        for key, (dtype, shape) in expected.items():
            assert out[key].dtype == dtype, key
            assert out[key].shape == shape, key
            assert out[key].flags.c_contiguous, key


def test_default_config_size() -> None:
    out = render_scene(np.random.default_rng(0))
    assert out["image"].shape == (96, 128, 3)


def test_intrinsics() -> None:
    k = render_scene(np.random.default_rng(0), CFG)["intrinsics"]
    f = 0.5 * CFG.width / np.tan(np.deg2rad(CFG.fov_degrees) / 2)
    np.testing.assert_allclose(k, [[f, 0, CFG.width / 2], [0, f, CFG.height / 2], [0, 0, 1]], rtol=1e-6)


def test_depth_positive_finite(scenes: list[dict[str, np.ndarray]]) -> None:
    for out in scenes:
        assert np.isfinite(out["depth"]).all()
        assert (out["depth"] > 0).all()


def test_labels_valid(scenes: list[dict[str, np.ndarray]]) -> None:
    for out in scenes:
        sem = out["semseg"]
        assert sem.min() >= 0 and sem.max() < len(CLASS_NAMES)
        np.testing.assert_array_equal(out["saliency"], (sem >= 3).astype(np.float32))
        # each instance belongs to exactly one class
        for i in np.unique(out["instance"]):
            assert np.unique(sem[out["instance"] == i]).size == 1
        assert out["instance"].min() >= 0


def test_class_diversity(scenes: list[dict[str, np.ndarray]]) -> None:
    n_classes = [np.unique(out["semseg"]).size for out in scenes]
    assert sum(n >= 4 for n in n_classes) >= 0.8 * len(scenes)
    visible_objects = [np.unique(out["instance"][out["saliency"] > 0]).size for out in scenes]
    assert all(n <= CFG.max_objects for n in visible_objects)
    assert np.mean(visible_objects) >= 0.6 * CFG.min_objects
    # all three object shapes occur across the seeds
    assert {3, 4, 5} <= set(np.concatenate([np.unique(out["semseg"]) for out in scenes]).tolist())


def test_normals_unit_and_facing_camera(scenes: list[dict[str, np.ndarray]]) -> None:
    for out in scenes:
        n = out["normals"].astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
        assert (np.sum(n * _rays(out), axis=-1) < 0).all()


def test_camera_frame_is_opencv(scenes: list[dict[str, np.ndarray]]) -> None:
    """Floor normals point up in the world, i.e. mostly along -y (y down) in the camera frame."""
    for out in scenes:
        floor = out["semseg"] == 0
        if floor.sum() > 20:
            assert out["normals"][floor][:, 1].mean() < -0.7
        rows = np.arange(CFG.height)[:, None] * np.ones((1, CFG.width))
        ceiling = out["semseg"] == 2
        if floor.any() and ceiling.any():  # floor below ceiling in the image
            assert rows[floor].mean() > rows[ceiling].mean()


def test_normals_match_depth_geometry(scenes: list[dict[str, np.ndarray]]) -> None:
    """Finite-difference normals of the back-projected depth agree with the analytic normals."""
    per_class: dict[int, list[np.ndarray]] = {c: [] for c in range(len(CLASS_NAMES))}
    for out in scenes:
        pts = _rays(out) * out["depth"][..., None].astype(np.float64)
        dx = pts[:-1, 1:] - pts[:-1, :-1]
        dy = pts[1:, :-1] - pts[:-1, :-1]
        fd = np.cross(dx, dy)  # estimates the normal at the centre of each 2x2 block
        fd *= np.where(np.sum(fd * pts[:-1, :-1], axis=-1, keepdims=True) > 0, -1.0, 1.0)
        n = out["normals"].astype(np.float64)
        n_block = n[:-1, :-1] + n[1:, :-1] + n[:-1, 1:] + n[1:, 1:]  # same point, for curved surfaces
        inst, edge = out["instance"], out["edge"] > 0
        # 2x2 blocks lying inside one surface, away from boundaries
        same = (inst[:-1, :-1] == inst[1:, :-1]) & (inst[:-1, :-1] == inst[:-1, 1:]) & (inst[:-1, :-1] == inst[1:, 1:])
        clear = ~(edge[:-1, :-1] | edge[1:, :-1] | edge[:-1, 1:] | edge[1:, 1:])
        valid = same & clear
        ang = _angle_deg(fd[valid], n_block[valid])
        assert np.median(ang) < 3.0
        # the un-averaged per-pixel normal is close too
        assert np.median(_angle_deg(fd[valid], n[:-1, :-1][valid])) < 3.0
        sem = out["semseg"][:-1, :-1][valid]
        for c in per_class:
            per_class[c].append(ang[sem == c])
    for c, angles in per_class.items():
        a = np.concatenate(angles)
        assert a.size > 100, CLASS_NAMES[c]
        if c < 3:  # planar room surfaces: exact up to float32 depth rounding
            assert np.percentile(a, 99) < 0.5, CLASS_NAMES[c]
        else:  # each primitive's own normal formula is checked separately
            assert np.median(a) < 1.5, CLASS_NAMES[c]


def test_edges_binary_on_label_changes_and_thin(scenes: list[dict[str, np.ndarray]]) -> None:
    n_edge = n_block = 0
    for out in scenes:
        edge = out["edge"]
        assert set(np.unique(edge).tolist()) <= {0.0, 1.0}
        e = edge > 0
        for lab in (out["semseg"], out["instance"]):
            right = lab[:, :-1] != lab[:, 1:]
            down = lab[:-1, :] != lab[1:, :]
            assert e[:, :-1][right].all()
            assert e[:-1, :][down].all()
        # relative depth jumps are edges too
        d = out["depth"]
        jump = np.abs(d[:, :-1] - d[:, 1:]) > CFG.edge_depth_jump * np.minimum(d[:, :-1], d[:, 1:])
        assert e[:, :-1][jump].all()
        # thin: few edge pixels belong to a fully marked 2x2 block
        block = e[:-1, :-1] & e[1:, :-1] & e[:-1, 1:] & e[1:, 1:]
        in_block = np.zeros_like(e)
        for di in (0, 1):
            for dj in (0, 1):
                in_block[di : di + block.shape[0], dj : dj + block.shape[1]] |= block
        # 2x2 blocks arise only at junctions, slivers and grazing surfaces (depth-jump rule)
        assert e.sum() > 0
        assert in_block.sum() < 0.5 * e.sum()
        assert e.mean() < 0.25  # and edges are sparse
        n_edge, n_block = n_edge + e.sum(), n_block + in_block.sum()
    assert n_block < 0.2 * n_edge


def test_edges_only_where_labels_or_depth_change(scenes: list[dict[str, np.ndarray]]) -> None:
    for out in scenes:
        inst, d = out["instance"], out["depth"]
        right = (inst[:, :-1] != inst[:, 1:]) | (np.abs(d[:, :-1] - d[:, 1:]) > CFG.edge_depth_jump * np.minimum(d[:, :-1], d[:, 1:]))
        down = (inst[:-1] != inst[1:]) | (np.abs(d[:-1] - d[1:]) > CFG.edge_depth_jump * np.minimum(d[:-1], d[1:]))
        expected = np.zeros(inst.shape, bool)
        expected[:, :-1] |= right
        expected[:-1] |= down
        np.testing.assert_array_equal(out["edge"] > 0, expected)


def test_determinism_and_variety() -> None:
    a = render_scene(np.random.default_rng(123), CFG)
    np.random.seed(0)  # the global RNG must play no part
    b = render_scene(np.random.default_rng(123), CFG)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    c = render_scene(np.random.default_rng(124), CFG)
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["depth"], c["depth"])


def test_image_is_reasonably_exposed(scenes: list[dict[str, np.ndarray]]) -> None:
    for out in scenes:
        img = out["image"].astype(np.float64)
        assert 30 < img.mean() < 220
        assert img.std() > 5
        assert (out["image"] == 255).mean() < 0.05


def test_colour_does_not_reveal_object_class(scenes: list[dict[str, np.ndarray]]) -> None:
    """Object hues vary within each class rather than being fixed per class."""
    hues: dict[int, list[float]] = {3: [], 4: [], 5: []}
    for out in scenes:
        img = out["image"].astype(np.float64)
        for i in np.unique(out["instance"][out["saliency"] > 0]):
            m = out["instance"] == i
            r, g, b = img[m].mean(axis=0)
            hues[int(out["semseg"][m][0])].append(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b))
    for cls, h in hues.items():
        if len(h) >= 5:
            assert np.ptp(h) > 1.0, CLASS_NAMES[cls]


def test_texture_noise_knob() -> None:
    plain = render_scene(np.random.default_rng(7), SceneConfig(height=48, width=64, texture_noise=0.0))
    noisy = render_scene(np.random.default_rng(7), CFG)
    np.testing.assert_array_equal(plain["semseg"], noisy["semseg"])  # geometry is unaffected
    assert not np.array_equal(plain["image"], noisy["image"])


@pytest.mark.parametrize("n", [1, 2])
def test_object_count_config(n: int) -> None:
    for s in range(5):
        out = render_scene(np.random.default_rng(s), SceneConfig(height=48, width=64, min_objects=n, max_objects=n))
        assert np.unique(out["instance"][out["saliency"] > 0]).size <= n
        assert out["instance"].max() <= 5 + n


def test_empty_room() -> None:
    out = render_scene(np.random.default_rng(3), SceneConfig(height=48, width=64, min_objects=0, max_objects=0))
    assert (out["saliency"] == 0).all() and out["instance"].max() <= 5
    assert set(np.unique(out["semseg"]).tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_objects=4, max_objects=2),
        dict(min_objects=-1),
        dict(height=1),
        dict(fov_degrees=180.0),
        dict(texture_noise=-0.1),
        dict(edge_depth_jump=0.0),
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SceneConfig(**kwargs)
