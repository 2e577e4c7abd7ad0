"""Tests for the procedural ray-cast room renderer."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from scenemtl.data.render import CLASS_NAMES, SceneConfig, camera_path, render_clip, render_scene, render_view, sample_scene
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
        dict(domain="night"),
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SceneConfig(**kwargs)


# sha256 (first 16 hex digits) of each array, as the renderer before scene sampling and views were
# split (and before domains and clips) rendered them, on x86-64 with numpy 2.4
GOLDEN = {
    (0, 0, 0): {
        "depth": "682d3b0067b621d2",
        "edge": "7fe0ba2534cbc961",
        "image": "44045a009e259283",
        "instance": "2ba7686590d764a9",
        "intrinsics": "bc89b83c825d758d",
        "normals": "44ea1aae6c35a2a1",
        "saliency": "0d2b629c76b3f2fe",
        "semseg": "c0b3281e08470a1d",
    },
    (0, 1, 3): {
        "depth": "8bd91bd3e31afae8",
        "edge": "68cd951bc4ee67e6",
        "image": "c5d7aa977b090797",
        "instance": "67a3a3c615b21f17",
        "intrinsics": "bc89b83c825d758d",
        "normals": "d5f1e8927e148839",
        "saliency": "4e550512cf0bdb80",
        "semseg": "f02230428dc8b3ce",
    },
}


@pytest.mark.parametrize("seed", list(GOLDEN))
def test_default_path_renders_as_before(seed: tuple[int, ...]) -> None:
    """The source domain renders bit for bit what the renderer rendered before clips and domains."""
    out = render_scene(np.random.default_rng(list(seed)), SceneConfig(height=24, width=32))
    assert {key: hashlib.sha256(value.tobytes()).hexdigest()[:16] for key, value in out.items()} == GOLDEN[seed]


def test_views_of_one_scene() -> None:
    """render_scene is sample_scene then render_view; render_clip starts with render_scene's draws, and
    its other frames are render_view from the path's cameras, up to the sensor noise."""
    cfg = SceneConfig(height=24, width=32)
    plain = render_scene(np.random.default_rng(5), cfg)
    rng = np.random.default_rng(5)
    scene = sample_scene(rng, cfg)
    view = render_view(scene, scene.position, scene.rotation, rng)
    clip = render_clip(np.random.default_rng(5), cfg, motion=0.2)
    for key in plain:
        assert view[key].tobytes() == plain[key].tobytes() == clip[key].tobytes(), key
    assert clip["frames"].shape == (3, 24, 32, 3) and clip["frames"].dtype == np.uint8
    np.testing.assert_array_equal(clip["frames"][1], plain["image"])
    np.testing.assert_allclose(clip["camera_to_world"][1][:3], np.c_[scene.rotation, scene.position])
    for frame, pose in ((0, clip["poses"][0]), (2, clip["poses"][1])):
        to_world = clip["camera_to_world"][frame]
        np.testing.assert_allclose(pose, np.linalg.inv(to_world) @ clip["camera_to_world"][1], atol=1e-12)
        other = render_view(scene, to_world[:3, 3], to_world[:3, :3], np.random.default_rng(0))
        assert np.abs(other["image"].astype(int) - clip["frames"][frame].astype(int)).max() <= 5  # uniform noise ±2.5
        assert not np.array_equal(other["depth"], plain["depth"])
    with pytest.raises(ConfigError, match="motion"):
        render_clip(np.random.default_rng(5), cfg, motion=-1.0)


def test_camera_path_stays_clear_of_walls_and_objects() -> None:
    cfg = SceneConfig(height=8, width=8)
    for s in range(30):
        scene = sample_scene(np.random.default_rng(s), cfg)
        for position, rotation in camera_path(np.random.default_rng(s), scene, 0.5, (-2, -1, 1, 2)):
            np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
            assert np.all(position > 0.2) and np.all(position < scene.room - 0.2)
            for ob in scene.objects:
                assert np.linalg.norm(position - ob.center) > ob.half.min()


def test_target_domain_same_geometry_other_appearance() -> None:
    """With the same draws, the target domain renders the same geometry and labels, another image."""
    source = render_scene(np.random.default_rng(11), CFG)
    target = render_scene(np.random.default_rng(11), SceneConfig(height=48, width=64, domain="target"))
    for key in ("semseg", "depth", "normals", "edge", "instance"):
        np.testing.assert_array_equal(source[key], target[key])
    img = target["image"].astype(np.float64)
    assert 30 < img.mean() < source["image"].mean() and img.std() > 5
    assert img[..., 0].mean() - img[..., 2].mean() > source["image"][..., 0].mean() - source["image"][..., 2].mean()
