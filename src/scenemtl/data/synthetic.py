"""Synthetic scenes: the built-in dataset, rendered procedurally, no download needed."""

from __future__ import annotations

import numpy as np
import torch

from scenemtl import geometry
from scenemtl.data.base import DatasetInfo, DenseDataset, image_to_tensor, register_dataset
from scenemtl.data.render import CLASS_NAMES, DOMAINS, MAX_MOTION, Scene, SceneConfig, render_clip, render_scene, sample_scene
from scenemtl.data.render import _N_ROOM as N_ROOM
from scenemtl.data.render import _BOX as BOX
from scenemtl.data.render import _SPHERE as SPHERE
from scenemtl.detection.boxes import Boxes3D
from scenemtl.detection.targets import rotation_to_angles
from scenemtl.errors import ConfigError, did_you_mean

#: the objects as 3D-detection classes (task ``det3d``), in the renderer's class order
DETECTION_CLASSES = ("sphere", "box", "cylinder")
#: the tasks of a dataset built without a task list (3D detection is asked for by name)
DENSE_TASKS = ("semseg", "depth", "normals", "edge", "saliency")
#: visible pixels an object needs to be a detection target
MIN_VISIBLE_PIXELS = 4

_SPLIT_CODES = {"train": 0, "val": 1}
# appended to the seed sequence (the source domain appends nothing, so its scenes are unchanged)
_DOMAIN_CODES = {"source": (), "target": (1,)}


def _yawed(angle: float) -> np.ndarray:
    """The rotation by ``angle`` about the world's vertical (z up)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@register_dataset("synthetic")
class SyntheticScenes(DenseDataset):
    """Rooms with spheres, boxes and cylinders, ray-cast with exact depth, normals, edges and saliency.

    Sample ``i`` of a split is a pure function of ``(seed, split, domain, i)``; train and val
    scenes come from disjoint random streams. Rendered samples are kept in memory (``cache``)
    because a model step on a small network costs about as much as a render.

    ``domain``: ``"source"`` (the default, the original scenes bit for bit) or ``"target"``: the
    same distribution of geometry and labels with another appearance — a warm tungsten light
    with a cool ambient fill and dimmer exposure, grey-blue floors and saturated walls, finer
    textures at three times the contrast, a soft (blurred) image with Gaussian sensor noise
    (details in :mod:`scenemtl.data.render`). The two domains draw from different random
    streams: target scenes are other rooms, not the source rooms re-coloured.

    ``frames: true`` renders each sample as the middle frame of a three-frame clip of a moving
    camera, for self-supervised depth from video, and adds to the sample:

    - ``frames``: uint8 ``[3, 3, H, W]``, the RGB frames at offsets −1, 0, +1 (``frames[1]`` is
      ``image``): the same room, objects, light and materials seen from a camera moving about
      ``motion`` metres per frame (≤ 0.5) along a smooth forward-ish path, turning up to 2° in
      yaw and 1° in pitch per frame (:func:`scenemtl.data.render.camera_path`);
    - ``camera``: float32 ``[3, 3]`` intrinsics in :mod:`scenemtl.geometry`'s convention (pixel
      ``(v, u)`` at integer coordinate ``(u, v)``): ``[[f, 0, W/2 − ½], [0, f, H/2 − ½], [0, 0, 1]]``;
    - ``meta['poses']``: the true relative poses of frames −1 and +1, two nested 4×4 lists,
      mapping frame-0 camera points to that frame's camera (``X_k = T @ X_0``; x right, y down,
      z forward) — ground truth for tests and diagnostics, not for training.

    The targets stay those of frame 0, which is the same image and labels as with ``frames: false``
    (the other frames' draws come after it). The geometric augmentations move ``frames`` and ``camera``
    with the image (``scenemtl.data.transforms``); colour jitter leaves the frames as rendered.
    """

    info = DatasetInfo(
        name="synthetic",
        tasks=("semseg", "depth", "normals", "edge", "saliency", "det3d"),
        class_names={"semseg": list(CLASS_NAMES), "det3d": list(DETECTION_CLASSES)},
    )

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        tasks: list[str] | None = None,
        height: int = 96,
        width: int = 128,
        num_train: int = 800,
        num_val: int = 160,
        seed: int = 0,
        min_objects: int = 3,
        max_objects: int = 6,
        cache: bool = True,
        frames: bool = False,
        motion: float = 0.15,
        domain: str = "source",
    ) -> None:
        super().__init__(root, split, list(tasks) if tasks is not None else list(DENSE_TASKS))
        if height < 8 or width < 8:
            raise ConfigError(f"data.options: synthetic scenes need height and width ≥ 8, got {height}×{width}")
        if domain not in DOMAINS:
            raise ConfigError(f"data.options.domain: synthetic scenes have no domain '{domain}'.{did_you_mean(domain, DOMAINS)}")
        if not 0 <= motion <= MAX_MOTION:
            raise ConfigError(f"data.options.motion: the camera moves 0 to {MAX_MOTION} m per frame, got {motion}")
        self.config = SceneConfig(height=height, width=width, min_objects=min_objects, max_objects=max_objects, domain=domain)
        self.length = num_train if split == "train" else num_val
        self.seed = seed
        self.frames = bool(frames)
        self.motion = float(motion)
        self.domain = domain
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> dict[str, np.ndarray]:
        """The rendered arrays of scene ``index`` (from the cache when available); with ``frames``
        also ``frames``, ``poses`` and ``camera_to_world`` (:func:`scenemtl.data.render.render_clip`)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic {self.split} scenes")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = self._rng(index)
        arrays = render_clip(rng, self.config, self.motion) if self.frames else render_scene(rng, self.config)
        if self._cache is not None:
            self._cache[index] = arrays
        return arrays

    def _rng(self, index: int) -> np.random.Generator:
        """The random stream of scene ``index``: seeded by ``(seed, split, index)`` and, but for the source, the domain."""
        return np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index, *_DOMAIN_CODES[self.domain]])

    def scene(self, index: int) -> Scene:
        """The sampled scene ``index`` (geometry, light, materials) without rendering it, e.g. to render
        other views with :func:`scenemtl.data.render.render_view`."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic {self.split} scenes")
        return sample_scene(self._rng(index), self.config)

    def camera(self) -> np.ndarray:
        """The 3×3 intrinsics (float64) in :mod:`scenemtl.geometry`'s pixel convention (the renderer's
        ``intrinsics`` put pixel centres at ``u + ½``)."""
        f = 0.5 * self.config.width / np.tan(np.deg2rad(self.config.fov_degrees) / 2)
        return geometry.intrinsics(f, f, self.config.width / 2 - 0.5, self.config.height / 2 - 0.5)

    def boxes(self, index: int, instance: np.ndarray) -> Boxes3D:
        """The 3D boxes of scene ``index``'s objects visible in its instance map (task ``det3d``).

        Each object's box in the camera frame: centre, extents (sphere: its bounding cube; cylinder:
        2r, 2r and its height; box: its sides), the box's axes (x and y turned by a yaw about the
        world's vertical, z up) in camera coordinates; the modal 2D box is the bounding box of its
        visible pixels. Objects with fewer than ``MIN_VISIBLE_PIXELS`` visible pixels are left out.

        The yaw is the one the image shows: spheres and cylinders look the same at any yaw, so theirs
        is the camera's (x along the horizontal viewing direction: yaw angle 0 in the task's angles,
        ``detection.targets.rotation_to_angles``); a box looks the same turned by 180°, so of its two
        yaws the one whose yaw angle lies in [−90°, 90°) is taken. Both are kept by the horizontal
        flip (it negates the yaw angle), and a ``det3d`` ``dir_offset`` of π/2 on the yaw puts all of
        them in one direction bin."""
        scene = self.scene(index)
        to_camera = scene.rotation.T
        labels, centers, sizes, rotations, boxes2d = [], [], [], [], []
        for k, ob in enumerate(scene.objects):
            rows, cols = np.nonzero(instance == N_ROOM + k)
            if rows.size < MIN_VISIBLE_PIXELS:
                continue
            rotation = to_camera @ _yawed(ob.angle if ob.kind == BOX else scene.yaw)  # box axes → camera
            if ob.kind == BOX and not -np.pi / 2 <= float(rotation_to_angles(torch.from_numpy(rotation[None]))[0, 2]) < np.pi / 2:
                rotation = to_camera @ _yawed(ob.angle + np.pi)
            labels.append(ob.kind - SPHERE)
            centers.append(to_camera @ (ob.center - scene.position))
            sizes.append(2 * ob.half)
            rotations.append(rotation)
            boxes2d.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        boxes = Boxes3D.empty(self.camera())
        if labels:
            boxes = Boxes3D(
                labels=torch.tensor(labels, dtype=torch.int64),
                centers=torch.tensor(np.array(centers), dtype=torch.float32),
                sizes=torch.tensor(np.array(sizes), dtype=torch.float32),
                rotations=torch.tensor(np.array(rotations), dtype=torch.float32),
                boxes2d=torch.tensor(boxes2d, dtype=torch.float32),
                camera=torch.from_numpy(self.camera().astype(np.float32)),
            )
        return boxes

    def sensor(self) -> dict:
        """A Cityscapes-3D ``sensor`` for the official evaluator: the vehicle frame V at the camera, its x
        along the optical axis (``sensor_T_ISO_8855`` the identity), the camera's focal length and
        principal point (in the JSON's convention, pixel centres at integers, as ``scenemtl.geometry``)."""
        camera = self.camera()
        return {
            "sensor_T_ISO_8855": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
            "fx": float(camera[0, 0]),
            "fy": float(camera[1, 1]),
            "u0": float(camera[0, 2]),
            "v0": float(camera[1, 2]),
            "baseline": 0.2,
            "imgWidth": self.config.width,
            "imgHeight": self.config.height,
        }

    def sample(self, index: int) -> dict:
        """One scene in the data contract (with ``frames`` and ``camera`` when ``frames`` is on)."""
        arrays = self.render(index)
        sample: dict = {"image": image_to_tensor(arrays["image"])}
        converters = {
            "semseg": lambda: torch.from_numpy(arrays["semseg"].astype(np.int64)),
            "depth": lambda: torch.from_numpy(arrays["depth"].astype(np.float32))[None],
            "normals": lambda: torch.from_numpy(np.ascontiguousarray(arrays["normals"].transpose(2, 0, 1))).float(),
            "edge": lambda: torch.from_numpy(arrays["edge"].astype(np.float32))[None],
            "saliency": lambda: torch.from_numpy(arrays["saliency"].astype(np.float32))[None],
            "det3d": lambda: self.boxes(index, arrays["instance"]),
        }
        for task in self.tasks:
            sample[task] = converters[task]()
        height, width = arrays["semseg"].shape
        sample["meta"] = {"id": f"{self.split}_{index:05d}", "size": (height, width), "labelled": list(self.tasks)}
        if "det3d" in self.tasks:
            sample["meta"]["sensor"] = self.sensor()
        if self.frames:
            sample["frames"] = torch.from_numpy(arrays["frames"]).permute(0, 3, 1, 2)  # channels-last memory, as image
            sample["camera"] = torch.from_numpy(self.camera().astype(np.float32))
            sample["meta"]["poses"] = arrays["poses"].tolist()
        return sample
