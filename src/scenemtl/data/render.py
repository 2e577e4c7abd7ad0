"""Procedural 3D room renderer: exact, vectorised ray casting in numpy.

Every call of :func:`render_scene` builds a random furnished room and renders pixel-aligned
ground truth for coupled dense tasks (semantic segmentation, depth, surface normals,
boundaries, saliency, instances) together with a shaded, textured RGB image.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenemtl.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = ("floor", "wall", "ceiling", "sphere", "box", "cylinder")
_SPHERE, _BOX, _CYLINDER = 3, 4, 5
_N_ROOM = 6  # room-surface instances come first
_INF = np.inf


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


# ----------------------------------------------------------------------------- rendering


def render_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> dict[str, np.ndarray]:
    """Render one random scene; identical output for an identically seeded rng."""
    H, W = config.height, config.width
    K = _intrinsics(config)
    room = rng.uniform([4.0, 4.0, 2.6], [10.0, 10.0, 3.0])
    cam, R, yaw = _sample_camera(rng, room)
    objects = _sample_objects(rng, config, room, cam, yaw)
    light = np.array([*rng.uniform(0.15 * room[:2], 0.85 * room[:2]), room[2] - rng.uniform(0.05, 0.3)])

    # primary rays with camera-frame z = 1, so the ray parameter t *is* the z-buffer depth
    u = (np.arange(W) + 0.5 - K[0, 2]) / K[0, 0]
    v = (np.arange(H) + 0.5 - K[1, 2]) / K[1, 1]
    ray_c = np.stack([np.tile(u, H), np.repeat(v, W), np.ones(H * W)])
    ray = R @ ray_c
    o = cam[:, None]
    t, inst = _hit_room(cam, ray, room)
    for k, ob in enumerate(objects):  # nearest hit wins
        tk = _HIT[ob.kind](o, ray, ob, 1e-6)
        closer = tk < t
        t = np.where(closer, tk, t)
        inst = np.where(closer, _N_ROOM + k, inst)
    p = o + t * ray

    room_normals = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], float)
    n = np.take(room_normals.T, np.minimum(inst, _N_ROOM - 1), axis=1)  # inward, towards the camera
    for k, ob in enumerate(objects):
        m = inst == _N_ROOM + k
        if m.any():
            n[:, m] = _NORMAL[ob.kind](p[:, m], ob)
    n /= np.linalg.norm(n, axis=0)
    n *= np.where(np.sum(n * ray, axis=0) > 0, -1.0, 1.0)  # guard; entry hits already face the ray

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
    obj_hsv = rng.uniform([0.0, 0.25, 0.3], [1.0, 0.9, 0.9], size=(len(objects), 3))
    hsv = np.concatenate([hsv, obj_hsv])
    albedo = _hsv_to_rgb(hsv[:, 0], hsv[:, 1], np.minimum(hsv[:, 2], 1.0)) ** 2.2  # to linear
    alb = np.take(albedo.T.astype(np.float32), inst, axis=1)

    # 3D-consistent texture: sum of sines of world coordinates (unit variance), and floor tiles.
    # Shading runs in float32: sin/pow are ~10x faster there and 8-bit output needs no more.
    p32 = p.astype(np.float32)
    freq = (rng.normal(size=(6, 3)) * rng.uniform(3.0, 14.0, size=(6, 1))).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(6, 1)).astype(np.float32)
    waves = np.sin(freq @ p32 + phase)
    amp = np.float32(config.texture_noise)
    tex = 1.0 + amp / np.float32(np.sqrt(3.0)) * waves.sum(axis=0)
    # floor tiles of a fixed 0.5 m, like real floors a metric cue; only their contrast varies
    tile, contrast = 0.5, rng.uniform(0.1, 0.3)
    checker = (np.floor(p32[0] / tile) + np.floor(p32[1] / tile)) % 2
    tex *= np.where(inst == 0, np.float32(1.0 + contrast * (checker - 0.5)), np.float32(1.0))
    tint = 1.0 + 0.5 * amp * np.sin(freq[:3] @ p32[::-1] + phase[3:])  # per-channel colour noise

    # Lambertian point light, softened inverse-square falloff, shadow rays against the objects
    to_l = (light[:, None] - p).astype(np.float32)
    dist2 = np.sum(to_l * to_l, axis=0)
    cos = np.maximum(np.sum(n.astype(np.float32) * to_l, axis=0) / np.sqrt(dist2), np.float32(0.0))
    lit = np.flatnonzero(cos > 0)
    if objects and lit.size:
        so = p[:, lit] + 1e-4 * n[:, lit]
        sd = light[:, None] - so  # t in (0, 1) means an occluder between point and light
        blocked = np.zeros(lit.size, bool)
        for ob in objects:
            blocked |= _HIT[ob.kind](so, sd, ob, 1e-6) < 1.0
        cos[lit[blocked]] = 0.0
    ambient, power = rng.uniform(0.12, 0.25), rng.uniform(1.4, 2.1)
    shade = np.float32(ambient) + np.float32(power) * cos / (1.0 + dist2 / np.float32(9.0))
    radiance = np.clip(alb * (tex * shade) * tint, 0.0, 1.0)
    noise = rng.random(size=(3, H * W), dtype=np.float32) - np.float32(0.5)  # uniform, +-2.5 levels
    image = _srgb(radiance) * np.float32(255) + np.float32(5.0) * noise
    image = np.ascontiguousarray(np.clip(np.round(image), 0, 255).astype(np.uint8).T).reshape(H, W, 3)

    inst2 = inst.reshape(H, W)
    inst_class = np.array([0, 2, 1, 1, 1, 1] + [ob.kind for ob in objects], dtype=np.int64)
    depth = t.reshape(H, W).astype(np.float32)  # edges use the returned depth, to be consistent
    semseg = inst_class[inst2]
    return {
        "image": image,
        "semseg": semseg,
        "depth": depth,
        "normals": np.ascontiguousarray((R.T @ n).T.reshape(H, W, 3), dtype=np.float32),
        "edge": _edges(inst2, depth, config.edge_depth_jump),
        "saliency": (inst2 >= _N_ROOM).astype(np.float32),
        "instance": np.ascontiguousarray(inst2, dtype=np.int32),
        "intrinsics": K.astype(np.float32),
    }


def _edges(inst: np.ndarray, depth: np.ndarray, jump: float) -> np.ndarray:
    """1 where a pixel's instance differs from, or its depth jumps relative to, its right/lower neighbour."""

    def differs(a: slice, b: slice) -> np.ndarray:
        da, db = depth[a], depth[b]
        return (inst[a] != inst[b]) | (np.abs(da - db) > jump * np.minimum(da, db))

    edge = np.zeros(inst.shape, bool)
    edge[:, :-1] |= differs((slice(None), slice(None, -1)), (slice(None), slice(1, None)))
    edge[:-1, :] |= differs((slice(None, -1), slice(None)), (slice(1, None), slice(None)))
    return edge.astype(np.float32)
