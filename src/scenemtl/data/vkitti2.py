"""Virtual KITTI 2 (release 2.0.3) as DenseMTL reads it: semseg (14 classes) and depth.

Layout (``vkitti_2.0.3_rgb.tar``, ``vkitti_2.0.3_classSegmentation.tar``, ``vkitti_2.0.3_depth.tar``
extracted into ``data.root``), per scene ``Scene01, Scene02, Scene06, Scene18, Scene20``, per
variation (``clone``, ``15-deg-left``, ``fog``, …) and camera (``Camera_0`` left, ``Camera_1`` right):

- ``Scene*/<variation>/frames/rgb/<camera>/rgb_<fffff>.jpg``: 375×1242 RGB JPEG;
- ``Scene*/<variation>/frames/classSegmentation/<camera>/classgt_<fffff>.png``: RGB PNG, one colour
  per class (the release's ``colors.txt``: ``Category r g b``). DenseMTL decodes it with a fixed
  colour table (``dataset/semseg/labels.py`` ``VKitti2``, ``encoding.py:_rgb2lbl``), this loader
  too; a colour outside the table (``Undefined`` 0 0 0) → 255 (DenseMTL: 250);
- ``Scene*/<variation>/frames/depth/<camera>/depth_<fffff>.png``: 16-bit grey PNG, centimetres.
  DenseMTL: ``cv2.imread(IMREAD_ANYCOLOR | IMREAD_ANYDEPTH)``, ``/ 100`` → metres
  (``dataset/vkitti2.py:get_depth``; with its ``inverse_depth: True`` it trains on
  ``2**16 / (cm + 1)`` instead). The code 65535 (655.35 m, the release's value for the sky and
  anything farther) is valid for DenseMTL: it trains on it (inverse depth ≈ 1, i.e. "very far")
  and evaluates only 1 mm < depth < 80 m (``loss/depth/berhu.py``). A metric-depth loss has no
  value for "infinitely far", so by default (``far_invalid: true``) this loader marks 65535 as
  invalid (0, the contract's marker); evaluation is the same with the recipe's ``max_depth: 80``.
  ``far_invalid: false`` keeps 655.35 m.

Each modality may also sit in a folder of its own, ``<root>/rgb/Scene*/…`` (DenseMTL's README
layout) or ``<root>/vkitti_2.0.3_rgb/Scene*/…`` (the archives extracted one per folder); the
loader looks in ``root`` first, then there. DenseMTL's code (after its commit "Fix gt file path
for vkitti2") reads the merged tree.

Frames: DenseMTL keeps ``15-deg-left``, ``Camera_0`` of every scene
(``prepare_filenames``: paths containing ``15-deg-left/frames/rgb/Camera_0``), 2,126 frames;
``variation`` and ``camera`` choose others. Classes (DenseMTL ``cls14``, the release's order):
terrain, sky, tree, vegetation, building, road, guard rail, traffic sign, traffic light, pole,
misc, truck, car, van; the palette is the release's colours.

Splits: DenseMTL's rule (``prepare_filenames``: sorted listing, ``random.shuffle`` after
``random.seed(42)``, first ``int(0.8·N)`` train, the rest val: 1,700 / 426 frames). On the same
frames and seed, this loader's train list is exactly DenseMTL's. DenseMTL builds its val list
from a second shuffle of the continuing generator, so it overlaps train; ``split_rule: disjoint``
(default) takes the complement of train instead, ``split_rule: densemtl`` reproduces DenseMTL's
val list (see ``scenemtl.data.synthia.densemtl_split``).

Size: DenseMTL resizes to 320×1024 (``configs/vkitti2/fs_bs2.yml``; the aspect ratio changes):
image Lanczos, labels Pillow's nearest neighbour, depth ``cv2.INTER_NEAREST``. ``resize: [H, W]``
resizes the image with Lanczos and labels and depth both with Pillow's nearest neighbour (so they
come from the same pixels; OpenCV's rule would shift depth by up to one source pixel, as in
DenseMTL); the recipe sets [320, 1024]; by default samples keep the release's 375×1242.
Normalisation: DenseMTL's ``(x − 0.45) / 0.225``.

Normals: derived from depth as DenseMTL does inside its loss (``loss/normals.py``), with the
camera DenseMTL uses for every frame (``dataset/vkitti2.py``: fx = fy = 725.0087, u0 = 620.5,
v0 = 187 at 375×1242, the release's ``intrinsic.txt`` values): ``normals: metric`` (default) scales
it to the sample's size and takes the metric depth; ``normals: densemtl`` reproduces DenseMTL's
numbers (see ``scenemtl.data.densemtl.derived_normals``). Far pixels (65535) are invalid with
``far_invalid`` (default); DenseMTL trains on them as a flat background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenemtl.data.base import DatasetInfo, DenseDataset, register_dataset
from scenemtl.data.download import Archive
from scenemtl.fileio import read_image, read_label_png
from scenemtl import geometry
from scenemtl.data.densemtl import (
    DENSEMTL_MEAN,
    check_normals_mode,
    DENSEMTL_STD,
    FAR_CODE,
    check_resize,
    check_split_options,
    densemtl_sample,
    densemtl_split,
    size_error,
)
from scenemtl.errors import ConfigError, DataError, did_you_mean

# the release's classes and colours (colors.txt; DenseMTL dataset/semseg/labels.py VKitti2), in id order
CLASSES = [
    ("terrain", (210, 0, 200)),
    ("sky", (90, 200, 255)),
    ("tree", (0, 199, 0)),
    ("vegetation", (90, 240, 0)),
    ("building", (140, 140, 140)),
    ("road", (100, 60, 100)),
    ("guard rail", (250, 100, 255)),
    ("traffic sign", (255, 255, 0)),
    ("traffic light", (200, 200, 0)),
    ("pole", (255, 130, 0)),
    ("misc", (80, 80, 80)),
    ("truck", (160, 60, 60)),
    ("car", (255, 127, 80)),
    ("van", (0, 139, 139)),
]
CLASS_NAMES = [name for name, _ in CLASSES]
PALETTE = np.array([colour for _, colour in CLASSES], dtype=np.uint8)
VARIATIONS = ("15-deg-left", "15-deg-right", "30-deg-left", "30-deg-right", "clone", "fog", "morning", "overcast", "rain", "sunset")
CAMERAS = ("Camera_0", "Camera_1")
BASE_URL = "https://download.europe.naverlabs.com/virtual_kitti_2.0.3"
PAGE = "https://europe.naverlabs.com/research/computer-vision/proxy-virtual-worlds-vkitti-2/"
HELP = (
    "download vkitti_2.0.3_rgb.tar, vkitti_2.0.3_classSegmentation.tar and vkitti_2.0.3_depth.tar "
    f"(`scenemtl data download vkitti2 --root DIR`, or {PAGE}), extract them into one folder and set data.root "
    "to it (it holds Scene01/ … Scene20/)"
)
# modality: (folder under frames/, file prefix, suffix, archive)
MODALITIES = {
    "rgb": ("rgb", "rgb", ".jpg", "vkitti_2.0.3_rgb.tar"),
    "semseg": ("classSegmentation", "classgt", ".png", "vkitti_2.0.3_classSegmentation.tar"),
    "depth": ("depth", "depth", ".png", "vkitti_2.0.3_depth.tar"),
}


# DenseMTL's 8 classes shared with Cityscapes (dataset/semseg/mappings.py ``VKitti2['cls08']``; colours: labels.py's vk-cs)
CLASSES_8 = [
    ("road", (128, 64, 128)),
    ("building", (70, 70, 70)),
    ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("sky", (70, 130, 180)),
    ("vehicle", (0, 0, 142)),
]
# release class id → cls08 (tree and vegetation → vegetation; truck, car and van → vehicle)
TO_8 = {5: 0, 4: 1, 9: 2, 8: 3, 7: 4, 2: 5, 3: 5, 1: 6, 11: 7, 12: 7, 13: 7}
TABLE_8 = np.full(256, 255, dtype=np.uint8)
for _source, _target in TO_8.items():
    TABLE_8[_source] = _target


def _colour_keys() -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([(r << 16) | (g << 8) | b for _, (r, g, b) in CLASSES], dtype=np.int64)
    order = np.argsort(keys)
    return keys[order], order.astype(np.uint8)


_KEYS, _KEY_CLASS = _colour_keys()


def decode_classes(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 class colours → H×W uint8 class ids, 255 for a colour outside the table."""
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2].astype(np.int64)
    where = np.minimum(np.searchsorted(_KEYS, keys), len(_KEYS) - 1)
    return np.where(_KEYS[where] == keys, _KEY_CLASS[where], 255).astype(np.uint8)


#: DenseMTL's camera matrix of every frame at 375×1242 (``dataset/vkitti2.py``)
CAMERA = geometry.intrinsics(725.0087, 725.0087, 620.5, 187.0)


@register_dataset("vkitti2")
class VirtualKitti2(DenseDataset):
    """Virtual KITTI 2: semseg (14 classes) and depth in metres, one variation and camera of every scene."""

    classes = 14

    info = DatasetInfo(
        name="vkitti2",
        tasks=("semseg", "depth", "normals"),
        class_names={"semseg": CLASS_NAMES},
        palettes={"semseg": PALETTE},
        mean=DENSEMTL_MEAN,
        std=DENSEMTL_STD,
    )
    splits = ("train", "val", "all")  # all: every frame (the source of DenseMTL's adaptation runs)
    union_splits = ("all",)
    provides_eval = ("normals_unmasked",)  # with normals: densemtl (DenseMTL's legacy normals metric)
    release_sizes = ((375, 1242),)
    archives = tuple(
        Archive(
            archive,
            url=f"{BASE_URL}/{archive}",
            mirrors=(f"http://download.europe.naverlabs.com//virtual_kitti_2.0.3/{archive}",),
            manual=f"Virtual KITTI 2 page: {PAGE}",
        )
        for _, _, _, archive in MODALITIES.values()
    )

    def __init__(
        self,
        root: str | None,
        split: str,
        tasks: list[str],
        variation: str = "15-deg-left",
        camera: str = "Camera_0",
        resize: list[int] | None = None,
        split_seed: int = 42,
        split_rule: str = "disjoint",
        far_invalid: bool = True,
        normals: str = "metric",
    ) -> None:
        super().__init__(root, split, tasks)
        if root is None:
            raise ConfigError(f"data.root is not set for dataset 'vkitti2': {HELP}")
        self.normals = check_normals_mode("vkitti2", normals)
        if variation not in VARIATIONS:
            raise ConfigError(
                f"data.options.variation for 'vkitti2': unknown variation {variation!r}.{did_you_mean(variation, VARIATIONS)}"
            )
        if camera not in CAMERAS:
            raise ConfigError(f"data.options.camera for 'vkitti2': unknown camera {camera!r}.{did_you_mean(camera, CAMERAS)}")
        check_split_options("vkitti2", split_seed, split_rule)
        self.resize = check_resize("vkitti2", resize)
        self.far_invalid = bool(far_invalid)
        self.variation, self.camera = variation, camera
        self.root_path = Path(root)
        if not self.root_path.is_dir():
            raise DataError(f"no folder {self.root_path} (data.root): {HELP}")
        self.bases = {"rgb": self._base("rgb")}
        for task in self.tasks:
            modality = "depth" if task == "normals" else task
            self.bases[modality] = self._base(modality)
        rgb_base = self.bases["rgb"]
        frames, scenes = [], []
        for scene in sorted(p for p in rgb_base.iterdir() if p.is_dir() and p.name.startswith("Scene")):
            folder = self._folder(rgb_base, scene.name, "rgb")
            if not folder.is_dir():
                continue
            scenes.append(scene.name)
            for path in folder.iterdir():
                if path.name.startswith("rgb_") and path.suffix == ".jpg":
                    frames.append(f"{scene.name}/{variation}/{camera}/{path.stem[len('rgb_') :]}")
        if not frames:
            raise DataError(f"no frames rgb_*.jpg in {rgb_base}/Scene*/{variation}/frames/rgb/{camera}: {HELP}")
        self.ids = densemtl_split(frames, split, split_seed, split_rule)
        layout = "merged" if all(base == self.root_path for base in self.bases.values()) else "one folder per archive"
        self.variant = f"Virtual KITTI 2.0.3 ({variation}, {camera}, {len(scenes)} scenes, {layout}; split {split_rule}, seed {split_seed})"
        if self.resize is not None:
            self.release_sizes = (self.resize,)  # every sample comes out at this size

    def _folder(self, base: Path, scene: str, modality: str) -> Path:
        return base / scene / self.variation / "frames" / MODALITIES[modality][0] / self.camera

    def _base(self, modality: str) -> Path:
        """The folder holding ``Scene*/`` for one modality: data.root, or its per-archive subfolder."""
        folder, _, _, archive = MODALITIES[modality]
        candidates = [self.root_path, self.root_path / folder, self.root_path / archive.removesuffix(".tar")]
        for base in candidates:
            if base.is_dir() and any(
                self._folder(base, s.name, modality).is_dir() for s in base.iterdir() if s.is_dir() and s.name.startswith("Scene")
            ):
                return base
        expected = self._folder(self.root_path, "Scene*", modality)
        raise DataError(f"no folder {expected} ({folder} of variation {self.variation}, from {archive}): {HELP}")

    def _path(self, modality: str, name: str) -> Path:
        scene, _, _, frame = name.split("/")
        _, prefix, suffix, _ = MODALITIES[modality]
        return self._folder(self.bases[modality], scene, modality) / f"{prefix}_{frame}{suffix}"

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, index: int) -> str:
        """``Scene01/15-deg-left/Camera_0/00042``."""
        return self.ids[index]

    def sample(self, index: int) -> dict:
        """One sample in the data contract (resized when ``resize`` is set)."""
        name = self.ids[index]
        image_path = self._path("rgb", name)
        image = read_image(image_path, "Virtual KITTI 2 RGB frame", HELP)
        size = image.shape[:2]
        targets: dict[str, np.ndarray] = {}
        if "semseg" in self.tasks:
            path = self._path("semseg", name)
            colours = read_image(path, "Virtual KITTI 2 class PNG", HELP)
            if colours.shape[:2] != size:
                raise size_error(path, "class map", colours.shape, size, image_path)
            targets["semseg"] = decode_classes(colours) if self.classes == 14 else TABLE_8[decode_classes(colours)]
        if "depth" in self.tasks or "normals" in self.tasks:
            path = self._path("depth", name)
            stored = read_label_png(path, "Virtual KITTI 2 depth PNG", HELP)
            if stored.dtype == np.uint8:
                raise DataError(f"{path}: expected a 16-bit depth PNG (centimetres), found 8-bit; {HELP}")
            if stored.shape != size:
                raise size_error(path, "depth map", stored.shape, size, image_path)
            depth = stored.astype(np.float32) / 100  # DenseMTL: `img / 100  # convert to m`
            if self.far_invalid:
                depth[stored == FAR_CODE] = 0.0
            targets["depth"] = depth
        normals = {"camera": CAMERA, "release_camera": CAMERA, "mode": self.normals, "evaluation": self.split != "train"}
        return densemtl_sample(image, targets, self.resize, name, self.tasks, normals, self.eval_keys)


@register_dataset("vkitti2_8")
class VirtualKitti2Eight(VirtualKitti2):
    """Virtual KITTI 2 with DenseMTL's 8 classes shared with Cityscapes (``cls08``: VKITTI2 → Cityscapes adaptation)."""

    classes = 8
    info = DatasetInfo(
        name="vkitti2_8",
        tasks=("semseg", "depth", "normals"),
        class_names={"semseg": [name for name, _ in CLASSES_8]},
        palettes={"semseg": np.array([colour for _, colour in CLASSES_8], dtype=np.uint8)},
        mean=DENSEMTL_MEAN,
        std=DENSEMTL_STD,
    )
