"""SYNTHIA-RAND-CITYSCAPES as DenseMTL reads it: semseg (16 Cityscapes classes) and depth.

Layout (``SYNTHIA_RAND_CITYSCAPES.rar``, a RAR archive that extracts to ``RAND_CITYSCAPES/``;
``data.root`` is that folder or the one holding it), 9,400 frames ``<n>.png`` with 7-digit ``n``:

- ``RGB/<n>.png``: 760×1280 RGB (8 bit).
- ``GT/LABELS/<n>.png``: a 16-bit PNG with several channels. The first (red) channel holds the
  SYNTHIA class id 0..22, the second the instance id of dynamic objects. DenseMTL reads it with
  imageio's FreeImage plugin and keeps ``[..., 0]`` (``dataset/utils.py:_load``, ``is_unsigned``);
  readers that use OpenCV's ``IMREAD_UNCHANGED`` take index 2 (or −1) of its BGR order, which is
  the same channel. Pillow cannot read 16-bit colour PNGs (it keeps the high byte, so every class
  id would read 0): they are read with OpenCV. A one-channel PNG holding the class id directly is read as it is:
  that is the form of the separate ``parsed_LABELS`` downloads of DADA and CTRL-UDA (read with
  Pillow as one channel of SYNTHIA ids by ``valeoai/DADA:dada/dataset/synthia.py`` and
  ``susaha/ctrl-uda:ctrl/dataset/synthia.py``; DenseMTL's README links CTRL-UDA's, while its
  loader reads the release's ``GT/LABELS``). A ``parsed_LABELS/`` folder is used when
  ``GT/LABELS/`` is absent.
- ``Depth/Depth/<n>.png`` (``Depth/<n>.png`` accepted): a 16-bit PNG in centimetres. DenseMTL reads
  it with ``cv2.imread(path, cv2.IMREAD_ANYDEPTH)`` and multiplies by 0.01 → metres
  (``dataset/synthia.py:get_depth``); this loader reads it the same way. That OpenCV flag turns a
  PNG with several channels into one grey channel; where the colour channels hold one value (the
  form other readers of this release rely on when they keep a single channel) that is the value.
  0 is invalid (the contract's marker); with ``far_invalid`` (default) the 16-bit code 65535 (the
  largest storable depth) is marked invalid too. DenseMTL keeps every pixel for training and
  evaluates only 1 mm < depth < 80 m (``loss/depth/berhu.py``; the recipe sets the depth task's
  ``max_depth: 80``).
- ``GT/COLOR/`` (colour renderings of the labels) is not read.

Classes: DenseMTL's ``cls16`` mapping (``dataset/semseg/mappings.py``, ``Mappings.Synthia``, the
mapping of CTRL-UDA's ``ctrl/dataset/synthia.py`` too), SYNTHIA id → Cityscapes train id:
3 road, 4 sidewalk, 2 building, 21 wall, 5 fence, 7 pole, 15 traffic light, 9 traffic sign,
6 vegetation, 1 sky, 10 pedestrian → person, 17 rider, 8 car, 19 bus, 12 motorcycle, 11 bicycle;
every other id (0 void, 13 parking-slot, 14 road-work, 16 terrain, 18 truck, 20 train,
22 lanemarking) → 255 (DenseMTL's ignore value is 250, ``dataset/semseg/encoding.py``). The
palette is Cityscapes' colours of those 16 classes.

Splits: there is no official split. DenseMTL's ``prepare_filenames`` lists the frames, shuffles
them with Python's ``random.shuffle`` and keeps the first ``int(0.8·N)`` for train and the rest
for val (7,520 / 1,880 frames). Its RNG is seeded (``random.seed(training.seed)``, 42, in
``utils/train.py:setup_seeds``), but (1) its SYNTHIA listing is ``os.walk`` order, i.e. the order
the file system returns, so the permutation cannot be reproduced on another disk, and (2) the val
dataset is built after the train dataset and shuffles again with the RNG's next state, so its
val list is the tail of a *second* permutation: about 80 % of it are training frames. This
loader sorts the frame names, shuffles them once with ``random.Random(split_seed)`` (default 42,
the seed DenseMTL uses) and cuts at ``int(0.8·N)``: ``split_rule: disjoint`` (default) gives
val = the complement of train, deterministic and disjoint. ``split_rule: densemtl`` draws val
from a second shuffle of the same generator, as DenseMTL does (on a sorted listing), for
comparisons with its numbers; its train and val then overlap.

Size: DenseMTL loads every frame resized to 512×1024 (``configs/synthia/fs_bs2.yml``
``height 512, width 1024``, which changes the aspect ratio): the image with Pillow's
``ANTIALIAS`` (Lanczos), the label map with Pillow's nearest neighbour, depth with OpenCV's
``INTER_NEAREST`` (``dataset/utils.py``, ``dataset/synthia.py``), for train and val alike
(``val_downsample_gt: True``). This loader returns the release's size unless ``resize: [H, W]``
is given; it then checks that every target has its image's size and resizes the image with
Lanczos and both label maps with Pillow's nearest neighbour, which samples pixel centres
(source index ⌊(x + ½)·src/dst⌋). OpenCV's ``INTER_NEAREST`` samples ⌊x·src/dst⌋, so DenseMTL's
depth maps sit up to one source pixel away from its label maps; here depth and labels come from
the same pixels. The recipe (``configs/synthia/base.yaml``) sets ``resize: [512, 1024]``.

Normalisation: DenseMTL's encoder computes ``(x − 0.45) / 0.225`` on [0, 1] images
(``vendor/monodepth2/resnet_encoder.py``): mean 0.45, std 0.225 per channel here.

Normals: not a label of the release; DenseMTL derives them from the depth inside its loss
(``loss/normals.py``) with its SYNTHIA camera (``dataset/synthia.py``: fx = fy = 532.740352,
u0 = 640, v0 = 380 at 760×1280). ``normals: metric`` (default) scales that camera to the sample's
size and takes the metric depth; ``normals: densemtl`` reproduces DenseMTL's numbers (see
``scenemtl.data.densemtl.derived_normals``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenemtl.data.base import DatasetInfo, DenseDataset, register_dataset
from scenemtl.data.download import Archive
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
from scenemtl.fileio import read_image, read_png_opencv
from scenemtl.errors import ConfigError, DataError

CLASS_NAMES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "sky",
    "person",
    "rider",
    "car",
    "bus",
    "motorcycle",
    "bicycle",
]
# Cityscapes' colours of the 16 classes (cityscapesScripts labels.py)
PALETTE = np.array(
    [
        [128, 64, 128],
        [244, 35, 232],
        [70, 70, 70],
        [102, 102, 156],
        [190, 153, 153],
        [153, 153, 153],
        [250, 170, 30],
        [220, 220, 0],
        [107, 142, 35],
        [70, 130, 180],
        [220, 20, 60],
        [255, 0, 0],
        [0, 0, 142],
        [0, 60, 100],
        [0, 0, 230],
        [119, 11, 32],
    ],
    dtype=np.uint8,
)
# SYNTHIA class id → train id (DenseMTL dataset/semseg/mappings.py, Mappings.Synthia['cls16'])
SYNTHIA_TO_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15}
SYNTHIA_NAMES = [
    "void",
    "sky",
    "building",
    "road",
    "sidewalk",
    "fence",
    "vegetation",
    "pole",
    "car",
    "traffic sign",
    "pedestrian",
    "bicycle",
    "motorcycle",
    "parking-slot",
    "road-work",
    "traffic light",
    "terrain",
    "rider",
    "truck",
    "bus",
    "train",
    "wall",
    "lanemarking",
]
RELEASE = "SYNTHIA-RAND-CITYSCAPES"
HELP = (
    "download SYNTHIA_RAND_CITYSCAPES.rar (`scenemtl data download synthia --root DIR`, or the "
    "SYNTHIA-RAND-CITYSCAPES (CVPR16) link on https://synthia-dataset.net/downloads/), extract it with "
    "`unrar x SYNTHIA_RAND_CITYSCAPES.rar` and set data.root to the RAND_CITYSCAPES/ folder (RGB/, GT/LABELS/, "
    "Depth/Depth/)"
)


def _label_table() -> np.ndarray:
    table = np.full(1 << 16, 255, dtype=np.uint8)
    for synthia_id, train_id in SYNTHIA_TO_TRAIN.items():
        table[synthia_id] = train_id
    return table


LABEL_TABLE = _label_table()


# --------------------------------------------------------------------------------------------


#: DenseMTL's SYNTHIA camera matrix at 760×1280 (``dataset/synthia.py``)
CAMERA = geometry.intrinsics(532.740352, 532.740352, 640.0, 380.0)


@register_dataset("synthia")
class Synthia(DenseDataset):
    """SYNTHIA-RAND-CITYSCAPES (9,400 frames): semseg (16 Cityscapes classes) and depth in metres."""

    info = DatasetInfo(
        name="synthia",
        tasks=("semseg", "depth", "normals"),
        class_names={"semseg": CLASS_NAMES},
        palettes={"semseg": PALETTE},
        mean=DENSEMTL_MEAN,
        std=DENSEMTL_STD,
    )
    splits = ("train", "val", "all")  # all: every frame (the source of DenseMTL's adaptation runs)
    union_splits = ("all",)
    provides_eval = ("normals_unmasked",)  # with normals: densemtl (DenseMTL's legacy normals metric)
    release_sizes = ((760, 1280),)
    archives = (
        Archive(
            "SYNTHIA_RAND_CITYSCAPES.rar",
            url="http://synthia-dataset.cvc.uab.cat/SYNTHIA_RAND_CITYSCAPES.rar",
            extract=False,  # RAR: Python's standard library cannot unpack it
            manual="the SYNTHIA-RAND-CITYSCAPES (CVPR16) entry of https://synthia-dataset.net/downloads/; unpack it "
            "with `unrar x SYNTHIA_RAND_CITYSCAPES.rar` (some unrar runs leave a few GT/LABELS files corrupt: "
            "`scenemtl data check synthia` lists them)",
        ),
    )

    def __init__(
        self,
        root: str | None,
        split: str,
        tasks: list[str],
        resize: list[int] | None = None,
        split_seed: int = 42,
        split_rule: str = "disjoint",
        far_invalid: bool = True,
        normals: str = "metric",
    ) -> None:
        super().__init__(root, split, tasks)
        if root is None:
            raise ConfigError(f"data.root is not set for dataset 'synthia': {HELP}")
        self.normals = check_normals_mode("synthia", normals)
        check_split_options("synthia", split_seed, split_rule)
        self.resize = check_resize("synthia", resize)
        self.far_invalid = bool(far_invalid)
        folder = Path(root)
        if not (folder / "RGB").is_dir() and (folder / "RAND_CITYSCAPES" / "RGB").is_dir():
            folder = folder / "RAND_CITYSCAPES"  # the folder the archive extracts to
        self.folder = folder
        images = folder / "RGB"
        if not images.is_dir():
            raise DataError(f"no folder {images} (the RGB frames): {HELP}")
        self.labels_folder = folder / "GT" / "LABELS"
        labels_form = "GT/LABELS"
        if not self.labels_folder.is_dir() and (folder / "parsed_LABELS").is_dir():
            self.labels_folder, labels_form = folder / "parsed_LABELS", "CTRL-UDA parsed_LABELS"
        self.depth_folder = folder / "Depth" / "Depth"
        if not self.depth_folder.is_dir() and (folder / "Depth").is_dir():
            self.depth_folder = folder / "Depth"
        if "semseg" in self.tasks and not self.labels_folder.is_dir():
            raise DataError(f"no folder {folder / 'GT' / 'LABELS'} (the class labels): {HELP}")
        if ("depth" in self.tasks or "normals" in self.tasks) and not self.depth_folder.is_dir():
            raise DataError(f"no folder {folder / 'Depth' / 'Depth'} (the depth maps): {HELP}")
        frames = [p.stem for p in images.iterdir() if p.suffix == ".png"]
        if not frames:
            raise DataError(f"no .png frames in {images}: {HELP}")
        self.ids = densemtl_split(frames, split, split_seed, split_rule)
        self.variant = f"{RELEASE} ({labels_form}, split {split_rule}, seed {split_seed})"
        if self.resize is not None:
            self.release_sizes = (self.resize,)  # every sample comes out at this size

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, index: int) -> str:
        """The frame name, e.g. ``0000042``."""
        return self.ids[index]

    def sample(self, index: int) -> dict:
        """One sample in the data contract (resized when ``resize`` is set)."""
        name = self.ids[index]
        image_path = self.folder / "RGB" / f"{name}.png"
        image = read_image(image_path, "RGB frame", HELP)
        size = image.shape[:2]
        targets: dict[str, np.ndarray] = {}
        if "semseg" in self.tasks:
            path = self.labels_folder / f"{name}.png"
            stored = read_png_opencv(path, "SYNTHIA label PNG", HELP)
            if stored.shape[:2] != size:
                raise size_error(path, "label map", stored.shape, size, image_path)
            ids = stored[..., 0] if stored.ndim == 3 else stored  # the class id is the first (red) channel
            targets["semseg"] = LABEL_TABLE[ids.astype(np.uint16)]
        if "depth" in self.tasks or "normals" in self.tasks:
            path = self.depth_folder / f"{name}.png"
            centimetres = read_png_opencv(path, "SYNTHIA depth PNG", HELP, anydepth=True)  # DenseMTL's reading
            if centimetres.shape[:2] != size:
                raise size_error(path, "depth map", centimetres.shape, size, image_path)
            depth = centimetres.astype(np.float32) * 0.01  # DenseMTL: `img * .01  # to meters`
            if self.far_invalid:
                depth[centimetres == FAR_CODE] = 0.0
            targets["depth"] = depth
        normals = {"camera": CAMERA, "release_camera": CAMERA, "mode": self.normals, "evaluation": self.split != "train"}
        return densemtl_sample(image, targets, self.resize, name, self.tasks, normals, self.eval_keys)
