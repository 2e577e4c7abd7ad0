"""Procedural 3D room renderer: exact, vectorised ray casting in numpy.

Every call of :func:`render_scene` builds a random furnished room and renders pixel-aligned
ground truth for coupled dense tasks (semantic segmentation, depth, surface normals,
boundaries, saliency, instances) together with a shaded, textured RGB image.

It is :func:`sample_scene` (room, camera, objects, light, materials: a :class:`Scene`) followed
by :func:`render_view` (the image and labels seen from a camera position and rotation, plus the
sensor noise), so one scene can be seen from other viewpoints: :func:`render_clip` renders frames
−1, 0, +1 of a camera moving along :func:`camera_path`.

Conventions
-----------
* World frame: right-handed, z up; the room is the box ``[0, Lx] x [0, Ly] x [0, Lz]``
  with the floor at ``z = 0``.
* Camera frame: OpenCV — x right, y down, z forward.  ``depth`` is the camera-frame z
  coordinate of the hit point (a z-buffer), not the ray length, and ``normals`` are unit
  vectors in this frame, oriented towards the camera (``dot(n, ray) < 0``).
* Pixel ``(row v, column u)`` has its centre at continuous image coordinate
  ``(u + 0.5, v + 0.5)``, so a camera-frame point ``X`` projects to ``K @ X / X[2]`` with
  ``K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` and ``f = (W/2) / tan(fov/2)``.
* Room: 4–10 m by 4–10 m, 2.6–3.0 m high; floor tiles of 0.5 m.
* Camera pose: a hand-held camera at eye level (1.35–1.65 m), as in indoor datasets; yaw
  about world z (aimed at a random far point of the room), pitch about the camera's
  horizontal axis from −20° to 0° (negative looks down), roll about the optical axis ±3°.
  Fixed scale cues (eye height, tile size, object sizes) keep metric depth learnable.
* Instance ids: 0 floor, 1 ceiling, 2..5 the walls x=0, x=Lx, y=0, y=Ly, 6.. the objects in
  sampling order.
* Light: one point light near the ceiling, Lambertian shading with a softened inverse-square
  falloff plus ambient; objects cast hard shadows (room surfaces cannot occlude the light,
  which is inside the room).  Shading is linear and gamma-encoded to sRGB at the end.
  Radiance is view-independent (textures are functions of world coordinates, shading is
  Lambertian), so the frames of a clip agree up to sensor noise where they see the same point.
* Poses: a camera is its world ``position`` and camera-to-world ``rotation`` (columns: the
  camera's x, y, z axes in the world), ``X_world = rotation @ X_camera + position``; a relative
  pose ``T`` (4×4) of frame k maps frame-0 camera points to frame k's: ``X_k = T @ X_0``.

Domains (``SceneConfig.domain``)
--------------------------------
The geometry (room, camera, objects, light position) is drawn by the same code in both domains,
so label distributions match; the appearance draws that follow differ.

* ``source``: white point light (ambient 0.12–0.25, power 1.4–2.1); brownish floors,
  low-saturation walls (S 0.05–0.35); six texture waves of 3–14 rad/m at amplitude
  ``texture_noise``; floor-tile contrast 0.1–0.3; uniform sensor noise of ±2.5 levels; sharp.
* ``target``: a warm tungsten light (linear RGB ≈ (1, 0.64, 0.34)) with a cool ambient fill
  (≈ (0.7, 0.8, 1.0)) and dimmer exposure (ambient 0.07–0.14, power 2.0–2.8 of the tinted
  light: image mean ≈ 72 instead of 104 of 255, red − blue ≈ 22 instead of 9 levels); grey-blue
  floors (hue 0.5–0.7), saturated walls (S 0.35–0.65); finer texture waves of 12–30 rad/m at three
  times the amplitude; floor-tile contrast 0.3–0.5; the linear image blurred by a separable
  [1, 2, 1]/4 kernel; Gaussian sensor noise of σ = 4 levels.  Object colours follow the same
  class-independent distribution in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenemtl.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = ("floor", "wall", "ceiling", "sphere", "box", "cylinder")
_SPHERE, _BOX, _CYLINDER = 3, 4, 5
_N_ROOM = 6  # room-surface instances come first
_INF = np.inf
DOMAINS: tuple[str, ...] = ("source", "target")


@dataclass(frozen=True)
class SceneConfig:
    """Image size, object count and appearance knobs of the procedural rooms."""

    height: int = 96
    width: int = 128
    min_objects: int = 3
    max_objects: int = 6
    fov_degrees: float = 60.0  # horizontal field of view
    texture_noise: float = 0.08  # amplitude of procedural texture/colour noise
    edge_depth_jump: float = 0.1  # relative depth jump that counts as a boundary
    domain: str = "source"  # appearance: "source" or "target" (see the module docstring)

    def __post_init__(self) -> None:
        problems = [
            msg
            for bad, msg in [
                (min(self.height, self.width) < 2, f"height and width must be >= 2, got {self.height}x{self.width}"),
                (
                    not 0 <= self.min_objects <= self.max_objects,
                    f"need 0 <= min_objects <= max_objects, got {self.min_objects} and {self.max_objects}",
                ),
                (not 0 < self.fov_degrees < 180, f"fov_degrees must lie in (0, 180), got {self.fov_degrees}"),
                (self.texture_noise < 0, f"texture_noise must be >= 0, got {self.texture_noise}"),
                (self.edge_depth_jump <= 0, f"edge_depth_jump must be > 0, got {self.edge_depth_jump}"),
                (self.domain not in DOMAINS, f"domain must be one of {', '.join(DOMAINS)}, got {self.domain!r}"),
            ]
            if bad
        ]
        if problems:
            raise ConfigError("SceneConfig: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class _Object:
    kind: int  # semantic class id (_SPHERE, _BOX, _CYLINDER)
    center: np.ndarray  # (3,) world position of the centroid
    half: np.ndarray  # sphere: (r, r, r); box: half extents; cylinder: (r, r, half height)
    angle: float = 0.0  # box yaw about world z


def _intrinsics(config: SceneConfig) -> np.ndarray:
    """Pinhole matrix K (float64) for the config's image size and horizontal field of view."""
    f = 0.5 * config.width / np.tan(np.deg2rad(config.fov_degrees) / 2)
    return np.array([[f, 0, config.width / 2], [0, f, config.height / 2], [0, 0, 1]], dtype=np.float64)


# ----------------------------------------------------------------------------- intersections
# Rays are (3, N) arrays; origins are (3, N) or (3, 1).  Each routine returns the smallest hit
# parameter t > tmin of the surface *entry* (inf on a miss).  Entry hits suffice because every
# origin lies outside every object: the camera by construction, and shadow-ray origins because
# visible points cannot be inside an object (the ray would have hit that object first).


def _hit_sphere(o: np.ndarray, d: np.ndarray, ob: _Object, tmin: float) -> np.ndarray:
    oc = o - ob.center[:, None]
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = oc[0] * d[0] + oc[1] * d[1] + oc[2] * d[2]  # half of the linear coefficient
    c = oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - ob.half[0] ** 2
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > tmin), t, _INF)


def _to_box(v: np.ndarray, ob: _Object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ca, sa = np.cos(ob.angle), np.sin(ob.angle)
    return ca * v[0] + sa * v[1], ca * v[1] - sa * v[0], v[2]


def _hit_box(o: np.ndarray, d: np.ndarray, ob: _Object, tmin: float) -> np.ndarray:
    ob_b = _to_box(o - ob.center[:, None], ob)
    db = _to_box(d, ob)
    tnear, tfar = -_INF, _INF
    with np.errstate(divide="ignore", invalid="ignore"):  # axis-parallel rays: NaN compares False
        for i in range(3):  # slab method in the box frame
            inv = 1.0 / db[i]
            mid, hw = -ob_b[i] * inv, ob.half[i] * np.abs(inv)
            tnear, tfar = np.maximum(tnear, mid - hw), np.minimum(tfar, mid + hw)
        return np.where((tnear <= tfar) & (tnear > tmin), tnear, _INF)


def _hit_cylinder(o: np.ndarray, d: np.ndarray, ob: _Object, tmin: float) -> np.ndarray:
    r, hh = ob.half[0], ob.half[2]
    rx, ry, rz = o - ob.center[:, None]
    a = d[0] * d[0] + d[1] * d[1]
    b = rx * d[0] + ry * d[1]
    c = rx * rx + ry * ry - r * r
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = b * b - a * c
        ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        t = np.where((disc >= 0) & (ts > tmin) & (np.abs(rz + ts * d[2]) <= hh), ts, _INF)
        for zc in (-hh, hh):  # cap planes, relative to the centre
            if o.shape[1] == 1 and (rz[0] - zc) * zc < 0:
                continue  # a single origin sees only the cap on its own side
            tc = (zc - rz) / d[2]
            x, y = rx + tc * d[0], ry + tc * d[1]
            t = np.where((tc > tmin) & (tc < t) & (x * x + y * y <= r * r), tc, t)
    return t


def _normal_sphere(p: np.ndarray, ob: _Object) -> np.ndarray:
    return (p - ob.center[:, None]) / ob.half[0]


def _normal_box(p: np.ndarray, ob: _Object) -> np.ndarray:
    pb = np.stack(_to_box(p - ob.center[:, None], ob))
    axis = np.argmax(np.abs(pb) / ob.half[:, None], axis=0)  # the face the point lies on
    nb = np.zeros_like(pb)
    cols = np.arange(pb.shape[1])
    nb[axis, cols] = np.sign(pb[axis, cols])
    ca, sa = np.cos(ob.angle), np.sin(ob.angle)
    return np.stack([ca * nb[0] - sa * nb[1], sa * nb[0] + ca * nb[1], nb[2]])


def _normal_cylinder(p: np.ndarray, ob: _Object) -> np.ndarray:
    rel = p - ob.center[:, None]
    rho = np.hypot(rel[0], rel[1])
    side = np.abs(rho - ob.half[0]) < np.abs(np.abs(rel[2]) - ob.half[2])  # nearer to the mantle
    rho = np.maximum(rho, 1e-12)
    return np.stack([np.where(side, rel[0] / rho, 0.0), np.where(side, rel[1] / rho, 0.0), np.where(side, 0.0, np.sign(rel[2]))])


_HIT = {_SPHERE: _hit_sphere, _BOX: _hit_box, _CYLINDER: _hit_cylinder}
_NORMAL = {_SPHERE: _normal_sphere, _BOX: _normal_box, _CYLINDER: _normal_cylinder}


def _hit_room(o: np.ndarray, d: np.ndarray, room: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit distance from inside the room box and the instance id of the surface hit."""
    pos = d > 0
    with np.errstate(divide="ignore"):  # |gap| / |d| is +inf for a zero component, never -inf
        t_axis = np.where(pos, room[:, None] - o[:, None], o[:, None]) / np.abs(d)
    axis = np.argmin(t_axis, axis=0)
    cols = np.arange(d.shape[1])
    # axis z -> floor 0 / ceiling 1; axis x -> walls 2 / 3; axis y -> walls 4 / 5
    inst = np.array([2, 4, 0])[axis] + pos[axis, cols]
    return t_axis[axis, cols], inst


# ----------------------------------------------------------------------------- scene sampling


def _sample_camera(rng: np.random.Generator, room: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera position, camera-to-world rotation (columns: right, down, forward) and yaw."""
    margin = 1.0
    xy = rng.uniform(margin, room[:2] - margin)
    # a hand-held camera at eye level, as in indoor datasets: the horizon and the floor then carry
    # metric scale (with a 1-2 m range, depth is ambiguous by a third); >= 0.9 m below the ceiling
    pos = np.array([xy[0], xy[1], rng.uniform(1.35, min(1.65, room[2] - 0.9))])
    # aim at the farthest of a few random points so the view looks into the room, not at a wall
    targets = rng.uniform(0.3, room[:2] - 0.3, size=(3, 2))
    far = targets[np.argmax(np.linalg.norm(targets - xy, axis=1))]
    yaw = float(np.arctan2(far[1] - xy[1], far[0] - xy[0]))
    pitch, roll = np.deg2rad(rng.uniform(-20.0, 0.0)), np.deg2rad(rng.uniform(-3.0, 3.0))
    fwd = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(fwd, right)
    right, down = np.cos(roll) * right + np.sin(roll) * down, np.cos(roll) * down - np.sin(roll) * right
    return pos, np.stack([right, down, fwd], axis=1), yaw


def _wall_distance(xy: np.ndarray, ang: float, room: np.ndarray) -> float:
    d = np.array([np.cos(ang), np.sin(ang)])
    with np.errstate(divide="ignore"):
        return float(np.min(np.where(d > 0, room[:2] - xy, xy) / np.abs(d)))


def _sample_objects(rng: np.random.Generator, cfg: SceneConfig, room: np.ndarray, cam: np.ndarray, yaw: float) -> list[_Object]:
    half_fov = np.deg2rad(cfg.fov_degrees) / 2
    objects: list[_Object] = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        kind = int(rng.integers(_SPHERE, _CYLINDER + 1))
        if kind == _SPHERE:
            half = np.full(3, rng.uniform(0.25, 0.6))
        elif kind == _BOX:
            half = np.array([rng.uniform(0.2, 0.55), rng.uniform(0.2, 0.55), rng.uniform(0.15, 0.5)])
        else:
            r = rng.uniform(0.15, 0.45)
            half = np.array([r, r, rng.uniform(0.2, 0.7)])
        reach = float(np.hypot(half[0], half[1])) if kind == _BOX else float(half[0])
        lift = rng.uniform(0.05, 0.6) if rng.random() < 0.3 else 0.0  # most rest on the floor
        angle = float(rng.uniform(0, np.pi))
        for _attempt in range(20):  # rejection keeps the camera outside every object
            ang = yaw + rng.uniform(-0.8, 0.8) * half_fov
            dist = rng.uniform(1.8, max(1.9, _wall_distance(cam[:2], ang, room) - 0.2))
            xy = cam[:2] + dist * np.array([np.cos(ang), np.sin(ang)])
            xy = np.clip(xy, reach + 0.05, room[:2] - reach - 0.05)
            if np.linalg.norm(xy - cam[:2]) > reach + 0.5:
                break
        else:
            continue  # practically unreachable; dropping the object is safer than hiding the camera
        objects.append(_Object(kind, np.array([xy[0], xy[1], lift + half[2]]), half, angle))
    return objects


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _srgb(x: np.ndarray) -> np.ndarray:
    lin, gam = np.float32(12.92) * x, np.float32(1.055) * np.power(np.maximum(x, np.float32(0.0031308)), np.float32(1 / 2.4))
    return np.where(x <= 0.0031308, lin, gam - np.float32(0.055))


# ----------------------------------------------------------------------------- appearance


def _source_appearance(rng: np.random.Generator, config: SceneConfig, n_objects: int) -> dict:
    """The source domain's materials and light (the random draws of the original renderer, in its order)."""
    # albedo: low-saturation room surfaces, objects with class-independent random HSV colours
    room_hsv = np.array(
        [
            rng.uniform(0.0, 0.15),
            rng.uniform(0.2, 0.5),
            rng.uniform(0.35, 0.6),  # floor
            rng.uniform(0, 1),
            rng.uniform(0.0, 0.1),
            rng.uniform(0.8, 0.95),
        ]
    )  # ceiling
    wall_hsv = np.array([rng.uniform(0, 1), rng.uniform(0.05, 0.35), rng.uniform(0.55, 0.85)])
    hsv = np.concatenate([room_hsv.reshape(2, 3), wall_hsv + np.zeros((4, 3))])
    hsv[2:, 2] *= rng.uniform(0.9, 1.05, size=4)  # walls differ slightly, as real paint under light
    obj_hsv = rng.uniform([0.0, 0.25, 0.3], [1.0, 0.9, 0.9], size=(n_objects, 3))
    hsv = np.concatenate([hsv, obj_hsv])
    albedo = _hsv_to_rgb(hsv[:, 0], hsv[:, 1], np.minimum(hsv[:, 2], 1.0)) ** 2.2  # to linear
    # 3D-consistent texture: six plane waves of world coordinates, 3-14 rad/m
    freq = (rng.normal(size=(6, 3)) * rng.uniform(3.0, 14.0, size=(6, 1))).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(6, 1)).astype(np.float32)
    contrast = rng.uniform(0.1, 0.3)
    ambient, power = rng.uniform(0.12, 0.25), rng.uniform(1.4, 2.1)
    return dict(
        albedo=albedo.astype(np.float32),
        freq=freq,
        phase=phase,
        amplitude=np.float32(config.texture_noise),
        tile_contrast=contrast,
        ambient=ambient,
        power=power,
    )


#: the target domain's point light (tungsten, about 2700 K, in linear RGB) and its cool ambient fill
_TARGET_LIGHT = np.array([1.0, 0.64, 0.34])
_TARGET_AMBIENT = np.array([0.7, 0.8, 1.0])


def _target_appearance(rng: np.random.Generator, config: SceneConfig, n_objects: int) -> dict:
    """The target domain's materials and light: see the module docstring (Domains)."""
    room_hsv = np.array(
        [
            rng.uniform(0.5, 0.7),  # floor: cool grey-blue instead of brown
            rng.uniform(0.1, 0.35),
            rng.uniform(0.3, 0.55),
            rng.uniform(0, 1),  # ceiling
            rng.uniform(0.0, 0.1),
            rng.uniform(0.7, 0.9),
        ]
    )
    # walls: saturated paint instead of pale
    wall_hsv = np.array([rng.uniform(0, 1), rng.uniform(0.35, 0.65), rng.uniform(0.45, 0.75)])
    hsv = np.concatenate([room_hsv.reshape(2, 3), wall_hsv + np.zeros((4, 3))])
    hsv[2:, 2] *= rng.uniform(0.9, 1.05, size=4)
    obj_hsv = rng.uniform([0.0, 0.25, 0.3], [1.0, 0.9, 0.9], size=(n_objects, 3))  # as the source
    hsv = np.concatenate([hsv, obj_hsv])
    albedo = _hsv_to_rgb(hsv[:, 0], hsv[:, 1], np.minimum(hsv[:, 2], 1.0)) ** 2.2
    # finer grain (12-30 rad/m) at three times the amplitude
    freq = (rng.normal(size=(6, 3)) * rng.uniform(12.0, 30.0, size=(6, 1))).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(6, 1)).astype(np.float32)
    contrast = rng.uniform(0.3, 0.5)
    ambient, power = rng.uniform(0.07, 0.14), rng.uniform(2.0, 2.8)
    light_colour = _TARGET_LIGHT * rng.uniform(0.95, 1.05, size=3)
    return dict(
        albedo=albedo.astype(np.float32),
        freq=freq,
        phase=phase,
        amplitude=np.float32(3.0 * config.texture_noise),
        tile_contrast=contrast,
        ambient=ambient,
        power=power,
        light_colour=light_colour.astype(np.float32)[:, None],
        ambient_colour=_TARGET_AMBIENT.astype(np.float32)[:, None],
        blur=True,
        noise_sigma=4.0,
    )


@dataclass(frozen=True)
class Scene:
    """One sampled room, independent of the viewpoint: geometry, light, materials, sensor.

    ``position`` and ``rotation`` are the annotated camera (frame 0): its world position and its
    camera-to-world rotation, whose columns are the camera's x (right), y (down) and z (forward)
    axes in world coordinates (``X_world = rotation @ X_camera + position``). ``yaw`` is the
    direction the camera was aimed at (radians about world z from world x).
    """

    config: SceneConfig
    room: np.ndarray  # (3,) extents Lx, Ly, Lz
    position: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3) camera-to-world
    yaw: float
    objects: tuple[_Object, ...]
    light: np.ndarray  # (3,) world position of the point light
    albedo: np.ndarray  # (6 + objects, 3) float32 linear RGB per instance id
    freq: np.ndarray  # (6, 3) float32 wave vectors of the texture (rad/m)
    phase: np.ndarray  # (6, 1) float32
    amplitude: np.float32  # texture amplitude (standard deviation of the texture factor)
    tile_contrast: float  # floor checkerboard contrast
    ambient: float
    power: float
    light_colour: np.ndarray | None = None  # (3, 1) float32 linear RGB; None: white (source)
    ambient_colour: np.ndarray | None = None  # (3, 1) float32 linear RGB; None: white (source)
    blur: bool = False  # a [1, 2, 1]/4 separable blur of the linear image (target)
    noise_sigma: float | None = None  # Gaussian sensor noise in 8-bit levels; None: uniform +-2.5 (source)


def sample_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> Scene:
    """Draw a random room, camera, objects, light and appearance (in this order) from ``rng``.

    The geometry (room, camera, objects, light) is drawn by the same code in every domain;
    ``config.domain`` picks the appearance draws that follow.
    """
    room = rng.uniform([4.0, 4.0, 2.6], [10.0, 10.0, 3.0])
    cam, R, yaw = _sample_camera(rng, room)
    objects = _sample_objects(rng, config, room, cam, yaw)
    light = np.array([*rng.uniform(0.15 * room[:2], 0.85 * room[:2]), room[2] - rng.uniform(0.05, 0.3)])
    appearance = _source_appearance if config.domain == "source" else _target_appearance
    return Scene(config, room, cam, R, yaw, tuple(objects), light, **appearance(rng, config, len(objects)))


# ----------------------------------------------------------------------------- rendering


def _cast(scene: Scene, position: np.ndarray, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Primary rays of every pixel (row-major): z-buffer depth, instance id, world hit point, world normal."""
    config = scene.config
    H, W = config.height, config.width
    K = _intrinsics(config)
    # primary rays with camera-frame z = 1, so the ray parameter t *is* the z-buffer depth
    u = (np.arange(W) + 0.5 - K[0, 2]) / K[0, 0]
    v = (np.arange(H) + 0.5 - K[1, 2]) / K[1, 1]
    ray_c = np.stack([np.tile(u, H), np.repeat(v, W), np.ones(H * W)])
    ray = rotation @ ray_c
    o = position[:, None]
    t, inst = _hit_room(position, ray, scene.room)
    for k, ob in enumerate(scene.objects):  # nearest hit wins
        tk = _HIT[ob.kind](o, ray, ob, 1e-6)
        closer = tk < t
        t = np.where(closer, tk, t)
        inst = np.where(closer, _N_ROOM + k, inst)
    p = o + t * ray

    room_normals = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], float)
    n = np.take(room_normals.T, np.minimum(inst, _N_ROOM - 1), axis=1)  # inward, towards the camera
    for k, ob in enumerate(scene.objects):
        m = inst == _N_ROOM + k
        if m.any():
            n[:, m] = _NORMAL[ob.kind](p[:, m], ob)
    n /= np.linalg.norm(n, axis=0)
    n *= np.where(np.sum(n * ray, axis=0) > 0, -1.0, 1.0)  # guard; entry hits already face the ray
    return t, inst, p, n


def _blur(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Separable [1, 2, 1]/4 blur of ``(C, H*W)`` row-major images, borders replicated."""
    img = np.pad(x.reshape(-1, height, width), ((0, 0), (1, 1), (1, 1)), mode="edge")
    quarter, half = np.float32(0.25), np.float32(0.5)
    img = quarter * img[:, :-2] + half * img[:, 1:-1] + quarter * img[:, 2:]
    img = quarter * img[:, :, :-2] + half * img[:, :, 1:-1] + quarter * img[:, :, 2:]
    return img.reshape(x.shape)


def _shade(scene: Scene, p: np.ndarray, n: np.ndarray, inst: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The H×W×3 uint8 image of the hit points; the sensor noise is the only draw from ``rng``.

    Radiance depends on the world point, its normal and the light only (textures in world
    coordinates, Lambertian shading, shadows towards the light), so it is the same from every
    viewpoint; only the sensor noise (and, in the target domain, the image-space blur) is not.
    """
    config = scene.config
    H, W = config.height, config.width
    alb = np.take(scene.albedo.T, inst, axis=1)

    # 3D-consistent texture: sum of sines of world coordinates (unit variance), and floor tiles.
    # Shading runs in float32: sin/pow are ~10x faster there and 8-bit output needs no more.
    p32 = p.astype(np.float32)
    freq, phase, amp = scene.freq, scene.phase, scene.amplitude
    waves = np.sin(freq @ p32 + phase)
    tex = 1.0 + amp / np.float32(np.sqrt(3.0)) * waves.sum(axis=0)
    # floor tiles of a fixed 0.5 m, like real floors a metric cue; only their contrast varies
    tile, contrast = 0.5, scene.tile_contrast
    checker = (np.floor(p32[0] / tile) + np.floor(p32[1] / tile)) % 2
    tex *= np.where(inst == 0, np.float32(1.0 + contrast * (checker - 0.5)), np.float32(1.0))
    tint = 1.0 + 0.5 * amp * np.sin(freq[:3] @ p32[::-1] + phase[3:])  # per-channel colour noise

    # Lambertian point light, softened inverse-square falloff, shadow rays against the objects
    light = scene.light
    to_l = (light[:, None] - p).astype(np.float32)
    dist2 = np.sum(to_l * to_l, axis=0)
    cos = np.maximum(np.sum(n.astype(np.float32) * to_l, axis=0) / np.sqrt(dist2), np.float32(0.0))
    lit = np.flatnonzero(cos > 0)
    if scene.objects and lit.size:
        so = p[:, lit] + 1e-4 * n[:, lit]
        sd = light[:, None] - so  # t in (0, 1) means an occluder between point and light
        blocked = np.zeros(lit.size, bool)
        for ob in scene.objects:
            blocked |= _HIT[ob.kind](so, sd, ob, 1e-6) < 1.0
        cos[lit[blocked]] = 0.0
    ambient, power = scene.ambient, scene.power
    if scene.light_colour is None:  # white light (source): per-pixel shading
        shade = np.float32(ambient) + np.float32(power) * cos / (1.0 + dist2 / np.float32(9.0))
    else:  # coloured light and ambient: per-channel shading
        direct = np.float32(power) * cos / (1.0 + dist2 / np.float32(9.0))
        shade = np.float32(ambient) * scene.ambient_colour + scene.light_colour * direct
    radiance = np.clip(alb * (tex * shade) * tint, 0.0, 1.0)
    if scene.blur:
        radiance = _blur(radiance, H, W)
    if scene.noise_sigma is None:
        noise = rng.random(size=(3, H * W), dtype=np.float32) - np.float32(0.5)  # uniform, +-2.5 levels
        image = _srgb(radiance) * np.float32(255) + np.float32(5.0) * noise
    else:
        noise = rng.standard_normal(size=(3, H * W), dtype=np.float32)
        image = _srgb(radiance) * np.float32(255) + np.float32(scene.noise_sigma) * noise
    return np.ascontiguousarray(np.clip(np.round(image), 0, 255).astype(np.uint8).T).reshape(H, W, 3)


def render_view(scene: Scene, position: np.ndarray, rotation: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Render ``scene`` from the camera at world ``position`` with camera-to-world ``rotation``.

    The camera must lie inside the room and outside every object. Returns the image and the
    pixel-aligned ground truth (see :func:`render_scene`); the only random draw is the image's
    sensor noise, from ``rng``.
    """
    config = scene.config
    H, W = config.height, config.width
    position, rotation = np.asarray(position, np.float64), np.asarray(rotation, np.float64)
    t, inst, p, n = _cast(scene, position, rotation)
    image = _shade(scene, p, n, inst, rng)
    inst2 = inst.reshape(H, W)
    inst_class = np.array([0, 2, 1, 1, 1, 1] + [ob.kind for ob in scene.objects], dtype=np.int64)
    depth = t.reshape(H, W).astype(np.float32)  # edges use the returned depth, to be consistent
    semseg = inst_class[inst2]
    return {
        "image": image,
        "semseg": semseg,
        "depth": depth,
        "normals": np.ascontiguousarray((rotation.T @ n).T.reshape(H, W, 3), dtype=np.float32),
        "edge": _edges(inst2, depth, config.edge_depth_jump),
        "saliency": (inst2 >= _N_ROOM).astype(np.float32),
        "instance": np.ascontiguousarray(inst2, dtype=np.int32),
        "intrinsics": _intrinsics(config).astype(np.float32),
    }


def render_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> dict[str, np.ndarray]:
    """Render one random scene from its annotated camera; identical output for an identically seeded rng.

    :func:`sample_scene` then :func:`render_view` (whose sensor noise is the last draw from ``rng``).
    """
    scene = sample_scene(rng, config)
    return render_view(scene, scene.position, scene.rotation, rng)


# ----------------------------------------------------------------------------- video clips

#: bounds of the clip path's random parameters: heading of the motion relative to the viewing
#: direction, climb angle, yaw rate and pitch rate per frame (degrees)
PATH_HEADING, PATH_CLIMB, PATH_YAW_RATE, PATH_PITCH_RATE = 25.0, 3.0, 2.0, 1.0
MAX_MOTION = 0.5  # metres per frame; larger steps could carry the camera through objects or walls


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _clear(scene: Scene, position: np.ndarray, margin: float = 0.2) -> bool:
    """Whether a camera at ``position`` is inside the room and ``margin`` away from every object's bounds."""
    if np.any(position < margin) or np.any(position > scene.room - margin):
        return False
    for ob in scene.objects:
        reach = float(np.hypot(ob.half[0], ob.half[1])) if ob.kind == _BOX else float(ob.half[0])
        near_xy = np.hypot(*(position[:2] - ob.center[:2])) < reach + margin
        if near_xy and abs(position[2] - ob.center[2]) < ob.half[2] + margin:
            return False
    return True


def camera_path(
    rng: np.random.Generator, scene: Scene, motion: float, offsets: tuple[int, ...] = (-1, 1)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """World positions and camera-to-world rotations of the frames at ``offsets`` of a clip through frame 0.

    Motion model (a walking, hand-held camera): the camera moves at a constant ``motion`` metres
    per frame along a helix through frame 0's camera — heading within ±25° of the horizontal
    viewing direction (forward-ish), climbing at ±3°, turning about world z at a constant yaw rate
    of ±2° per frame — and the camera turns with the path (the same yaw rate, applied about world
    z) while pitching at a constant ±1° per frame about its own x axis (positive looks up). The
    four parameters are drawn uniformly from ``rng``; a draw that would carry a frame's camera
    outside the room or within 0.2 m of an object's bounds is redrawn (20 tries, then the camera
    only rotates: never with the default scenes and ``motion ≤ 0.5``).
    """
    for _attempt in range(20):
        heading = scene.yaw + np.deg2rad(rng.uniform(-PATH_HEADING, PATH_HEADING))
        climb = np.deg2rad(rng.uniform(-PATH_CLIMB, PATH_CLIMB))
        turn = np.deg2rad(rng.uniform(-PATH_YAW_RATE, PATH_YAW_RATE))
        nod = np.deg2rad(rng.uniform(-PATH_PITCH_RATE, PATH_PITCH_RATE))
        views = []
        for k in offsets:
            # chord of the arc after k frames: length k·motion·sinc, direction halfway through the turn
            along = motion * k * np.cos(climb) * np.sinc(turn * k / (2 * np.pi))
            h = heading + turn * k / 2
            step = np.array([along * np.cos(h), along * np.sin(h), motion * k * np.sin(climb)])
            views.append((scene.position + step, _rot_z(turn * k) @ scene.rotation @ _rot_x(nod * k)))
        if all(_clear(scene, pos) for pos, _ in views):
            return views
    return [(scene.position.copy(), _rot_z(turn * k) @ scene.rotation @ _rot_x(nod * k)) for k in offsets]


def camera_to_world(position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The 4×4 matrix taking camera-frame points to world points."""
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, position
    return out


def relative_pose(position0: np.ndarray, rotation0: np.ndarray, position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The 4×4 pose ``T`` with ``X = T @ X0``: frame 0's camera points in the camera at (``position``, ``rotation``)."""
    return np.linalg.inv(camera_to_world(position, rotation)) @ camera_to_world(position0, rotation0)


def render_clip(rng: np.random.Generator, config: SceneConfig = SceneConfig(), motion: float = 0.15) -> dict[str, np.ndarray]:
    """A random scene rendered as a three-frame clip (offsets −1, 0, +1) of a moving camera.

    Returns :func:`render_scene`'s arrays for frame 0 — the same arrays as ``render_scene`` with an
    identically seeded rng, which this draws from first — plus ``frames``, uint8 ``(3, H, W, 3)``
    images of frames −1, 0, +1 (``frames[1]`` is ``image``); ``poses``, float64 ``(2, 4, 4)``, the
    relative poses ``T`` of frames −1 and +1 with ``X_k = T @ X_0`` (camera frames, OpenCV axes);
    and ``camera_to_world``, float64 ``(3, 4, 4)``, the three cameras in the world frame. After
    frame 0, the path (:func:`camera_path`) and the sensor noise of frames −1 and +1 are drawn.
    """
    if not 0 <= motion <= MAX_MOTION:
        raise ConfigError(f"motion must lie in [0, {MAX_MOTION}] metres per frame, got {motion}")
    scene = sample_scene(rng, config)
    out = render_view(scene, scene.position, scene.rotation, rng)
    (pos_prev, rot_prev), (pos_next, rot_next) = camera_path(rng, scene, motion, (-1, 1))
    images = []
    for position, rotation in ((pos_prev, rot_prev), (pos_next, rot_next)):
        _t, inst, p, n = _cast(scene, position, rotation)
        images.append(_shade(scene, p, n, inst, rng))
    out["frames"] = np.stack([images[0], out["image"], images[1]])
    out["poses"] = np.stack(
        [relative_pose(scene.position, scene.rotation, pos, rot) for pos, rot in ((pos_prev, rot_prev), (pos_next, rot_next))]
    )
    out["camera_to_world"] = np.stack(
        [camera_to_world(pos, rot) for pos, rot in ((pos_prev, rot_prev), (scene.position, scene.rotation), (pos_next, rot_next))]
    )
    return out


def _edges(inst: np.ndarray, depth: np.ndarray, jump: float) -> np.ndarray:
    """1 where a pixel's instance differs from, or its depth jumps relative to, its right/lower neighbour."""

    def differs(a: slice, b: slice) -> np.ndarray:
        da, db = depth[a], depth[b]
        return (inst[a] != inst[b]) | (np.abs(da - db) > jump * np.minimum(da, db))

    edge = np.zeros(inst.shape, bool)
    edge[:, :-1] |= differs((slice(None), slice(None, -1)), (slice(None), slice(1, None)))
    edge[:-1, :] |= differs((slice(None, -1), slice(None)), (slice(1, None), slice(None)))
    return edge.astype(np.float32)
