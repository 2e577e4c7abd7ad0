"""Cityscapes in two forms: the official release (semseg + metric depth) and MTAN's ``.npy`` copy
(semseg + inverse depth).

**The official release** (``cityscapes``, ``cityscapes_16``, ``cityscapes_7``), as extracted from
the packages of https://www.cityscapes-dataset.com/downloads/ into one folder:

- ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``: RGB, 1024×2048. Splits are
  the folders train (2975 images), val (500) and test (1525); the id of a sample is
  ``<city>_<seq>_<frame>``, and samples are in id order.
- ``gtFine/<split>/<city>/<id>_gtFine_labelIds.png``: uint8 label ids 0..33 (cityscapesScripts'
  ``labels.py``), mapped to the 19 train ids (road … bicycle; every other id → 255), to DenseMTL's
  16 classes (the 19 without truck, terrain and train, in the same order:
  ``astra-vision/DenseMTL:dataset/semseg/mappings.py`` ``cls16``), to DenseMTL's 8 classes shared
  with Virtual KITTI 2 (``cls08``: road, building, pole, traffic light, traffic sign, vegetation,
  sky, vehicle = car and bus; truck ignored) or to the 7 categories flat,
  construction, object, nature, sky, human, vehicle. The categories group the 19 evaluated
  classes, as cityscapesScripts' category IoU does (``evalPixelLevelSemanticLabeling.py``,
  ``getIouScoreForCategory``): ids ignored in the 19-class setting (parking, guard rail,
  caravan, …) stay ignored. The test split's labels are withheld by the benchmark: its maps
  hold no evaluated class, so every pixel is ignored.
- ``disparity/<split>/<city>/<id>_disparity.png``: uint16 p; p > 0 gives the disparity
  d = (p − 1) / 256 pixels (the Cityscapes README), and ``camera/<split>/<city>/<id>_camera.json``
  the baseline (``extrinsic.baseline``, metres) and focal length (``intrinsic.fx``, pixels):
  depth = baseline · fx / d metres. p = 0 (no stereo match) and d ≤ 0 are invalid: 0 here.
  DenseMTL (``dataset/cityscapes.py``) instead writes the image's largest depth into invalid
  pixels and trains on "normalised inverse depth" 65536 / (cm + 1); we keep metres and the
  contract's 0 = invalid, so the loss and metrics skip those pixels.

Normals (the task ``normals``): not a label of the release; derived from the depth as DenseMTL
does (``loss/normals.py``; see ``scenemtl.data.densemtl.derived_normals``). ``normals: metric``
(default) uses the camera file's ``intrinsic`` fx, fy, u0, v0 (of the 1024×2048 images) scaled to
the sample's size; ``normals: densemtl`` reproduces DenseMTL's numbers: its constant camera
(fx 2262.52, fy 2265.3018, u0 1096.98, v0 513.137: the full-size values, used unscaled on its
512×1024 images, ``dataset/cityscapes.py``) and its inverse depth code.

Normalisation: ImageNet's mean and std, except ``cityscapes_16`` (DenseMTL's class set, read by its
recipes), which takes DenseMTL's ``(x − 0.45) / 0.225`` (``vendor/monodepth2/resnet_encoder.py``).

Video (``sequence_folder``, e.g. ``leftImg8bit_sequence`` from ``leftImg8bit_sequence_trainvaltest.zip``,
or DenseMTL's 512×1024 copy ``leftImg8bit_sequence_small``): each annotated frame
``<city>_<seq>_<n>`` comes with its neighbours ``n − 1`` and ``n + 1``
(``<sequence_folder>/<split>/<city>/<city>_<seq>_<n±1, 6 digits>_leftImg8bit.png``, ``.jpg`` accepted),
as DenseMTL's semi-supervised depth reads them (``dataset/cityscapes.py:get_image_path``,
``only_sequences_with_segmentation``); frames whose neighbours are missing are left out (counted in
``notes``). Samples then hold ``frames`` (uint8 ``[3,3,H,W]``: n − 1, n, n + 1, resized as the
image; the middle one is the image) and ``camera`` (float32 ``[3,3]``, ``scenemtl.geometry``'s
convention): with ``camera: file`` (default) the camera file's fx, fy, u0, v0 (of the 1024×2048
images) scaled to the sample's size; with ``camera: densemtl`` DenseMTL's constant full-size matrix
used unscaled, and mirrored its way under a flip (``dataset/base.py:get_K``, a quirk inherited from
3-Ways: at 512×1024 the focal length is twice the true one).

Options: ``image_folder`` reads the images from another folder with the same layout and file
names, e.g. DenseMTL's pre-resized copy ``leftImg8bit_small``. Its images are smaller than the
label and disparity maps, so those are then resampled to the image size, nearest neighbour (what
DenseMTL does, ``dataset/cityscapes.py`` and ``dataset/utils.py``); a map whose aspect ratio
differs from its image is still an error. With the official ``leftImg8bit`` a map of another
size than its image is an error. ``size`` resizes every sample to ``[height, width]``: the image
with Lanczos (PIL's ANTIALIAS, DenseMTL's image resampling), labels and depth nearest (depth in
metres does not change with the picture's size). DenseMTL trains and evaluates at 512×1024.
``max_depth`` marks depths at or beyond it invalid (stereo depth from a disparity of a few
pixels is hundreds of metres and mostly noise).

**MTAN's preprocessed copy** (``cityscapes_npy`` with 7 classes, ``cityscapes_npy_19``), the
``lorenmt/mtan`` README's cityscapes2.zip (128×256) or cityscapes.zip (256×512):
``root/{train,val}/{image,label_7,label_19,depth}/<i>.npy`` with i = 0..N−1 (2975 train, 500
val), the layout the follow-ups read (``VICO-UoE/MTPSL:dataset/cityscapesssl.py``, Nash-MTL and
FAMO ``experiments/cityscapes/data.py``):

- ``image``: H×W×3 float in [0, 1] → uint8 (×255, rounded); the normalisation is mean 0 / std 1,
  so the network sees MTAN's [0, 1] input;
- ``label_7`` / ``label_19``: H×W float class ids, −1 unlabelled → 255;
- ``depth``: H×W×1 float, **inverse** depth (rescaled disparity, about 0..0.49; lorenmt/mtan
  issues #15 and #25), 0 invalid: served as the task ``inverse_depth``, not ``depth``.

The preprocessing of this copy was not published (the author later pointed to
``lorenmt/auto-lambda:dataset/cityscapes_preprocess.py``, which writes PNGs instead). The 7-class
names assume the category order of cityscapesScripts' table (category id − 1), the order DenseMTL's
7-class map uses too; the 19 classes are the standard train ids. A copy extracted into a
subfolder of ``data.root`` is found there.

Class set variants are registered as datasets of their own, because the class names are part of
the dataset's description, which the rest of the package reads before any dataset is opened.
Palettes: the official Cityscapes colours of the classes; a category is drawn in the colour of its
most common class (road, building, pole, vegetation, sky, person, car).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scenemtl.data.base import DatasetInfo, DenseDataset, image_to_tensor, register_dataset
from scenemtl.data.densemtl import DENSEMTL_MEAN, DENSEMTL_STD, check_normals_mode, derived_normals
from scenemtl import geometry
from scenemtl.data.download import Archive
from scenemtl.fileio import read_image, read_json, read_label_png, read_npy, require_folder
from scenemtl.errors import ConfigError, DataError

# label id → train id of the 19 evaluated classes (cityscapesScripts' labels.py)
TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CLASS_NAMES_19 = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]
COLOURS_19 = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
]
# DenseMTL's cls16: the 19 without these, order kept
DROPPED_16 = ("truck", "terrain", "train")
CATEGORY_NAMES = ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]
# category (id − 1) of each of the 19 train ids
CATEGORY_OF_TRAIN_ID = [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6]
CATEGORY_COLOURS = [(128, 64, 128), (70, 70, 70), (153, 153, 153), (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142)]
MAX_LABEL_ID = 33
RAW_IMAGES = "leftImg8bit"
#: the size (H, W) of the release's images, which the camera files describe
FULL_SIZE = (1024, 2048)
#: DenseMTL's (and 3-Ways') constant camera matrix, the full-size values (``dataset/cityscapes.py``)
DENSEMTL_CAMERA = geometry.intrinsics(2262.52, 2265.3018, 1096.98, 513.137)
IMAGE_SUFFIX = "_leftImg8bit.png"

DOWNLOADS = "https://www.cityscapes-dataset.com/downloads/"
HELP = (
    f"log in at {DOWNLOADS}, download leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip, "
    "disparity_trainvaltest.zip and camera_trainvaltest.zip, unzip them all into one folder (which then holds "
    "leftImg8bit/, gtFine/, disparity/ and camera/) and set data.root to it"
)
SEQUENCE_HELP = (
    f"download leftImg8bit_sequence_trainvaltest.zip from {DOWNLOADS} (the 30-frame snippets around every annotated "
    "frame), unzip it into data.root and set data.options.sequence_folder to leftImg8bit_sequence"
)
NPY_HELP = (
    "download MTAN's preprocessed Cityscapes (`scenemtl data download cityscapes_npy --root DIR`, or the "
    "lorenmt/mtan README's links: cityscapes2.zip 128×256, cityscapes.zip 256×512) and set data.root to "
    "the folder holding train/ and val/"
)


# DenseMTL's 8 classes shared with Virtual KITTI 2 (dataset/semseg/mappings.py ``Cityscapes['cls08']``):
# label id → class; car and bus are "vehicle", truck is ignored
LABEL_TO_8 = {7: 0, 11: 1, 17: 2, 19: 3, 20: 4, 21: 5, 23: 6, 26: 7, 28: 7}
NAMES_8 = ["road", "building", "pole", "traffic light", "traffic sign", "vegetation", "sky", "vehicle"]
COLOURS_8 = [(128, 64, 128), (70, 70, 70), (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (70, 130, 180), (0, 0, 142)]


def list_images(folder: Path, split: str) -> list[tuple[str, str]]:
    """(city, id) of every ``<city>/<id>_leftImg8bit.png`` in ``folder``, in order; a DataError naming it when none."""
    images = require_folder(folder, f"the {split} images", HELP)
    items: list[tuple[str, str]] = []
    for city in sorted(p for p in images.iterdir() if p.is_dir()):
        stems = sorted(p.name[: -len(IMAGE_SUFFIX)] for p in city.glob(f"*{IMAGE_SUFFIX}"))
        items.extend((city.name, stem) for stem in stems)
    if not items:
        raise DataError(f"no <city>/<id>{IMAGE_SUFFIX} files in {images}; {HELP}")
    return items


def login_archives(*folders: str) -> tuple[Archive, ...]:
    """The Cityscapes packages ``<folder>_trainvaltest.zip`` (behind a login: where to get them and put them)."""
    return tuple(
        Archive(
            f"{folder}_trainvaltest.zip",
            url=None,
            manual=f"Cityscapes needs a login: sign in at {DOWNLOADS}, download {folder}_trainvaltest.zip and "
            f"unzip it into the --root folder (it holds {folder}/)",
        )
        for folder in folders
    )


def class_set(classes: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, palette ``[C,3]`` and the label-id lookup table (256 entries, 255 = ignore) of a class set."""
    lookup = np.full(256, 255, dtype=np.uint8)
    if classes == 8:
        for label_id, cls in LABEL_TO_8.items():
            lookup[label_id] = cls
        return list(NAMES_8), np.array(COLOURS_8, dtype=np.uint8), lookup
    if classes == 7:
        for label_id, train_id in TRAIN_IDS.items():
            lookup[label_id] = CATEGORY_OF_TRAIN_ID[train_id]
        return list(CATEGORY_NAMES), np.array(CATEGORY_COLOURS, dtype=np.uint8), lookup
    kept = [i for i, name in enumerate(CLASS_NAMES_19) if classes == 19 or name not in DROPPED_16]
    if len(kept) != classes:
        raise ValueError(f"Cityscapes class sets are 19, 16 and 7, not {classes}")
    for label_id, train_id in TRAIN_IDS.items():
        if train_id in kept:
            lookup[label_id] = kept.index(train_id)
    names = [CLASS_NAMES_19[i] for i in kept]
    return names, np.array([COLOURS_19[i] for i in kept], dtype=np.uint8), lookup


def _info(name: str, tasks: tuple[str, ...], classes: int, **extra) -> DatasetInfo:
    names, palette, _ = class_set(classes)
    return DatasetInfo(name=name, tasks=tasks, class_names={"semseg": names}, palettes={"semseg": palette}, **extra)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of the first two axes, sampling at pixel centres (as PIL's NEAREST)."""
    height, width = array.shape[:2]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    return array[rows][:, cols]


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes disparity PNG values to metres: d = (p − 1) / 256, depth = baseline · fx / d; 0 where invalid."""
    disparity = (raw.astype(np.float64) - 1.0) / 256.0
    valid = (raw > 0) & (disparity > 0)
    depth = np.zeros(raw.shape, dtype=np.float64)
    depth[valid] = baseline * fx / disparity[valid]
    return depth.astype(np.float32)


def _size_option(size, option: str) -> tuple[int, int] | None:
    if size is None:
        return None
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ConfigError(f"{option} must be [height, width] of positive integers or null, got {size!r}")
    return int(size[0]), int(size[1])


@register_dataset("cityscapes")
class Cityscapes(DenseDataset):
    """The official Cityscapes release: semseg (19 train ids) and metric depth from stereo disparity."""

    classes = 19
    info = _info("cityscapes", ("semseg", "depth", "normals"), 19)
    splits = ("train", "val", "test")
    release_sizes = ((1024, 2048),)
    provides_eval = ("normals_unmasked",)  # with normals: densemtl (DenseMTL's legacy normals metric)
    archives = login_archives("leftImg8bit", "gtFine", "disparity", "camera")

    def __init__(
        self,
        root: str | None,
        split: str,
        tasks: list[str],
        image_folder: str = RAW_IMAGES,
        size: list[int] | None = None,
        max_depth: float | None = None,
        normals: str = "metric",
        sequence_folder: str | None = None,
        camera: str = "file",
    ) -> None:
        super().__init__(root, split, tasks)
        if root is None:
            raise ConfigError(f"data.root is not set for dataset '{self.info.name}': {HELP}")
        self.normals = check_normals_mode(self.info.name, normals)
        if camera not in ("file", "densemtl"):
            raise ConfigError(
                f"data.options.camera for '{self.info.name}' must be 'file' (the camera files) or 'densemtl' "
                f"(DenseMTL's constant full-size matrix, unscaled), got {camera!r}"
            )
        self.sequence_folder, self.camera_source = sequence_folder, camera
        self.size = _size_option(size, "data.options.size")
        if max_depth is not None and not max_depth > 0:
            raise ConfigError(f"data.options.max_depth must be positive or null, got {max_depth!r}")
        self.max_depth = max_depth
        self.image_folder = image_folder
        self.lookup = class_set(self.classes)[2]
        self.root_path = Path(root)
        self.items = list_images(self.root_path / image_folder / split, split)
        if sequence_folder is not None:
            require_folder(self.root_path / sequence_folder / split, f"the {split} video frames", SEQUENCE_HELP)
            require_folder(self.root_path / "camera" / split, f"the {split} camera files", HELP)
            complete = [item for item in self.items if all(self._neighbour(item, o) is not None for o in (-1, 1))]
            if not complete:
                raise DataError(
                    f"no annotated frame of {split} has both neighbours in {self.root_path / sequence_folder / split}; {SEQUENCE_HELP}"
                )
            if len(complete) < len(self.items):
                self.notes.append(f"{len(self.items) - len(complete)} annotated frames left out: a neighbouring video frame is missing")
            self.items = complete
        folders = {"semseg": ["gtFine"], "depth": ["disparity", "camera"], "normals": ["disparity", "camera"]}
        for task in self.tasks:
            for folder in folders[task]:
                require_folder(self.root_path / folder / split, f"the {task} labels of {split}", HELP)
        self.variant = f"Cityscapes ({self.classes} classes, images from {image_folder}/)"
        if self.size is not None:
            self.release_sizes = (self.size,)
        elif image_folder != RAW_IMAGES:
            self.release_sizes = ()  # a copy resized by its maker: no size to expect

    def __len__(self) -> int:
        return len(self.items)

    def sample_id(self, index: int) -> str:
        """``<city>_<seq>_<frame>``."""
        return self.items[index][1]

    def _neighbour(self, item: tuple[str, str], offset: int) -> Path | None:
        """The video frame ``offset`` frames from an annotated one, or None when it is not there."""
        city, stem = item
        prefix, frame = stem.rsplit("_", 1)
        folder = self.root_path / str(self.sequence_folder) / self.split / city
        for suffix in ("png", "jpg"):
            path = folder / f"{prefix}_{int(frame) + offset:06d}_leftImg8bit.{suffix}"
            if path.is_file():
                return path
        return None

    def _video(self, index: int, image: np.ndarray, target: tuple[int, int]) -> dict:
        """``frames`` and ``camera`` of a sample (see the module docstring)."""
        frames = []
        for offset in (-1, 1):
            path = self._neighbour(self.items[index], offset)
            if path is None:
                raise DataError(f"the video frame {offset:+d} of {self.sample_id(index)} is missing; {SEQUENCE_HELP}")
            frame = read_image(path, "Cityscapes video frame", SEQUENCE_HELP)
            if frame.shape[:2] != target:
                frame = np.asarray(Image.fromarray(frame).resize((target[1], target[0]), Image.Resampling.LANCZOS))
            frames.append(frame)
        frames.insert(1, image)
        out: dict = {"frames": torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()}
        if self.camera_source == "densemtl":
            matrix = DENSEMTL_CAMERA
        else:
            matrix = geometry.resize_intrinsics(self._camera_file(index)[1], FULL_SIZE, target)
        out["camera"] = torch.from_numpy(matrix.astype(np.float32))
        return out

    def _path(self, folder: str, index: int, suffix: str) -> Path:
        city, stem = self.items[index]
        return self.root_path / folder / self.split / city / f"{stem}_{suffix}"

    def sample(self, index: int) -> dict:
        """One sample in the data contract (resized to ``size`` when set)."""
        image_path = self._path(self.image_folder, index, "leftImg8bit.png")
        image = read_image(image_path, "Cityscapes image", HELP)
        stored = image.shape[:2]
        target = self.size or stored
        if target != stored:
            resized = Image.fromarray(image).resize((target[1], target[0]), Image.Resampling.LANCZOS)
            image = np.array(resized)
        sample: dict = {"image": image_to_tensor(image)}
        for task in dict.fromkeys("depth" if task == "normals" else task for task in self.tasks):
            if task == "semseg":
                path, array = self._semseg(index)
            else:
                path, array, camera = self._depth(index)
            if array.shape != stored:
                if self.image_folder == RAW_IMAGES or array.shape[0] * stored[1] != array.shape[1] * stored[0]:
                    raise DataError(
                        f"{path}: the {task} map is {array.shape[0]}×{array.shape[1]} but its image "
                        f"{image_path} is {stored[0]}×{stored[1]}; re-extract both from the release"
                    )
            source = array.shape[:2]
            if array.shape != target:
                array = resize_nearest(array, target)
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            if task == "semseg":
                sample[task] = tensor.long()
                continue
            if "depth" in self.tasks:
                sample["depth"] = tensor[None]
            if "normals" in self.tasks:
                unmasked = "normals_unmasked" in self.eval_keys and self.normals == "densemtl"
                scaled = geometry.resize_intrinsics(camera, source, target)
                sample.update(derived_normals(array, scaled, DENSEMTL_CAMERA, self.normals, self.split != "train", unmasked))
        meta = {"id": self.sample_id(index), "size": tuple(target), "labelled": list(self.tasks)}
        if self.sequence_folder is not None:
            sample.update(self._video(index, image, target))
            if self.camera_source == "densemtl":
                meta["camera_flip"] = (2048.0, 1024.0)
        sample["meta"] = meta
        return sample

    def _semseg(self, index: int) -> tuple[Path, np.ndarray]:
        path = self._path("gtFine", index, "gtFine_labelIds.png")
        ids = read_label_png(path, "Cityscapes label-id map", HELP)
        if ids.max(initial=0) > MAX_LABEL_ID:
            raise DataError(
                f"{path}: ids go up to {ids.max()}, Cityscapes label ids are 0..{MAX_LABEL_ID}; is it a *_gtFine_labelIds.png? {HELP}"
            )
        return path, self.lookup[ids]

    def _camera_file(self, index: int) -> tuple[float, np.ndarray]:
        """The stereo baseline (metres) and the camera matrix of the 1024×2048 images, from the camera file."""
        camera_path = self._path("camera", index, "camera.json")
        camera = read_json(camera_path, "Cityscapes camera file", HELP)
        try:
            baseline, intrinsic = float(camera["extrinsic"]["baseline"]), camera["intrinsic"]
            fx = float(intrinsic["fx"])
            matrix = geometry.intrinsics(fx, *(float(intrinsic.get(k, default)) for k, default in (("fy", fx), ("u0", 0), ("v0", 0))))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DataError(f"{camera_path}: no extrinsic.baseline and intrinsic.fx numbers; {HELP}") from None
        if not (baseline > 0 and fx > 0):
            raise DataError(f"{camera_path}: baseline {baseline} and fx {fx} must be positive; {HELP}")
        needs_centre = "normals" in self.tasks or (self.sequence_folder is not None and self.camera_source == "file")
        if needs_centre and not {"u0", "v0"} <= set(intrinsic):
            raise DataError(f"{camera_path}: no intrinsic.u0 and intrinsic.v0 (the principal point the camera matrix needs); {HELP}")
        return baseline, matrix

    def _depth(self, index: int) -> tuple[Path, np.ndarray, np.ndarray]:
        """The disparity file, its depth in metres and the camera matrix at the file's size (from the camera file)."""
        path = self._path("disparity", index, "disparity.png")
        raw = read_image(path, "Cityscapes disparity (16-bit PNG)", HELP, mode=None)
        if raw.ndim != 2:
            raise DataError(f"{path}: a disparity map has one channel, found shape {raw.shape}; {HELP}")
        baseline, matrix = self._camera_file(index)
        # the camera file describes the 1024×2048 images: scaled to the disparity map's size
        depth = disparity_to_depth(raw, baseline, matrix[0, 0])
        matrix = geometry.resize_intrinsics(matrix, FULL_SIZE, raw.shape[:2])
        if self.max_depth is not None:
            depth[depth >= self.max_depth] = 0.0
        return path, depth, matrix


@register_dataset("cityscapes_16")
class Cityscapes16(Cityscapes):
    """The official Cityscapes release with DenseMTL's 16 classes (the 19 without truck, terrain, train)."""

    classes = 16
    # DenseMTL's class set, with DenseMTL's input normalisation (its encoder's (x − 0.45) / 0.225)
    info = _info("cityscapes_16", ("semseg", "depth", "normals"), 16, mean=DENSEMTL_MEAN, std=DENSEMTL_STD)


@register_dataset("cityscapes_7")
class Cityscapes7(Cityscapes):
    """The official Cityscapes release with the 7 categories (flat … vehicle) of the 19 evaluated classes."""

    classes = 7
    info = _info("cityscapes_7", ("semseg", "depth", "normals"), 7)


@register_dataset("cityscapes_8")
class Cityscapes8(Cityscapes):
    """The official Cityscapes release with DenseMTL's 8 classes shared with Virtual KITTI 2 (``cls08``)."""

    classes = 8
    info = _info("cityscapes_8", ("semseg", "depth", "normals"), 8, mean=DENSEMTL_MEAN, std=DENSEMTL_STD)


@register_dataset("cityscapes_npy")
class CityscapesNpy(DenseDataset):
    """MTAN's preprocessed Cityscapes (``.npy``): semseg with 7 classes and inverse depth."""

    classes = 7
    info = _info("cityscapes_npy", ("semseg", "inverse_depth"), 7, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    release_sizes = ((128, 256), (256, 512))
    archives = (
        Archive(
            "cityscapes2.zip",
            url="https://www.dropbox.com/s/lg2ktu7o8hzwf99/cityscapes2.zip?dl=1",
            manual="the 128×256 copy MTAN's paper uses; the 256×512 one is "
            "https://www.dropbox.com/s/q2333k4eyrnezbh/cityscapes.zip?dl=1 (lorenmt/mtan README)",
        ),
    )

    def __init__(self, root: str | None, split: str, tasks: list[str]) -> None:
        super().__init__(root, split, tasks)
        if root is None:
            raise ConfigError(f"data.root is not set for dataset '{self.info.name}': {NPY_HELP}")
        self.folders = {"semseg": f"label_{self.classes}", "inverse_depth": "depth"}
        self.folder = self._split_folder(Path(root), split)
        images = require_folder(self.folder / "image", f"the {split} images", NPY_HELP)
        numbers = [int(m.group(1)) for p in images.iterdir() if (m := re.fullmatch(r"(\d+)\.npy", p.name))]
        if not numbers:
            raise DataError(f"no <i>.npy files in {images}; {NPY_HELP}")
        # ids are 0..N−1: a gap is a missing image, reported by sample() like any missing file
        self.count = max(numbers) + 1
        for task in self.tasks:
            folder = self.folder / self.folders[task]
            if not folder.is_dir():
                other = sorted(p.name for p in self.folder.glob("label_*") if p.is_dir())
                hint = f" (this copy has {', '.join(other)}: see the cityscapes_npy* datasets)" if other else ""
                raise DataError(f"no folder {folder} for task '{task}'{hint}; {NPY_HELP}")
        self.variant = f"MTAN's preprocessed Cityscapes ({self.classes} classes)"

    @staticmethod
    def _split_folder(root: Path, split: str) -> Path:
        """``root/<split>``, or ``root/<child>/<split>`` for the one child that holds it (the archive's folder)."""
        if (root / split).is_dir():
            return root / split
        nested = [child / split for child in sorted(root.iterdir()) if (child / split / "image").is_dir()] if root.is_dir() else []
        if len(nested) == 1:
            return nested[0]
        raise DataError(f"no folder {root / split} (expected {split}/ inside data.root {root}); {NPY_HELP}")

    def __len__(self) -> int:
        return self.count

    def sample_id(self, index: int) -> str:
        """``<split>_<i>`` (the file is ``<split>/image/<i>.npy``)."""
        return f"{self.split}_{index:04d}"

    def sample(self, index: int) -> dict:
        """One sample in the data contract."""
        image_path = self.folder / "image" / f"{index}.npy"
        image = read_npy(image_path, "H×W×3 float image in [0, 1]", NPY_HELP)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"{image_path}: expected an H×W×3 image, got shape {image.shape}; {NPY_HELP}")
        size = image.shape[:2]
        sample: dict = {"image": image_to_tensor(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))}
        for task in self.tasks:
            path = self.folder / self.folders[task] / f"{index}.npy"
            array = read_npy(path, task, NPY_HELP)
            if array.ndim == 3 and array.shape[2] == 1:
                array = array[..., 0]
            if array.shape != size:
                raise DataError(
                    f"{path}: the {task} map is {'×'.join(map(str, array.shape))} but its image "
                    f"{image_path} is {size[0]}×{size[1]}; re-extract both from the release"
                )
            if task == "semseg":
                labels = np.rint(np.nan_to_num(array, nan=-1.0)).astype(np.int64)
                labels[labels < 0] = 255
                sample[task] = torch.from_numpy(labels)
            else:
                sample[task] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        sample["meta"] = {"id": self.sample_id(index), "size": tuple(size), "labelled": list(self.tasks)}
        return sample


@register_dataset("cityscapes_npy_19")
class CityscapesNpy19(CityscapesNpy):
    """MTAN's preprocessed Cityscapes with the 19-class labels (``label_19``) and inverse depth."""

    classes = 19
    info = _info("cityscapes_npy_19", ("semseg", "inverse_depth"), 19, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
