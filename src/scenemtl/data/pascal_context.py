"""PASCAL-Context as the multi-task seeds read it (PASCAL-MT): 4,998 train / 5,105 val images, five tasks.

Two distributions of one release exist, with the same inner layout as far as the loaders read it:
``PASCAL_MT.tgz`` (ASTMT/MTI-Net, https://data.vision.ee.ethz.ch/kmaninis/share/MTL/PASCAL_MT.tgz,
extracting to ``PASCAL_MT/``; ATRC's current loader) and ``PASCALContext.tar.gz`` (ATRC's first
release, re-hosted by InvPT's README; extracting to ``PASCALContext/``). ``data.root`` may be
either folder or the folder it was extracted into. The layout and its decoding (facts from
``facebookresearch/astmt:fblib/dataloaders/pascal_context.py``, copied into
``SimonVandenhende/Multi-Task-Learning-PyTorch:data/pascal_context.py``,
``brdav/atrc:src/data/pascal_context.py`` and
``prismformore/Multi-Task-Transformer:InvPT/data/pascal_context.py``):

- ``ImageSets/Context/{train,val}.txt``: one id per line (e.g. ``2008_000002``);
- ``JPEGImages/<id>.jpg``: RGB, up to 500 px a side (sizes vary, so ``release_sizes`` is empty;
  the recipes crop/pad to 512×512);
- ``semseg``: ``semseg/VOC12/<id>.png`` when it exists, else ``semseg/pascal-context/<id>.png``
  (the seeds' ``_get_semseg_fname``): single-channel PNG read as stored, 21 classes (VOC's 20
  and background 0), 255 ignored;
- ``human_parts``: ``human_parts/<id>.mat``, a PASCAL-Part ``anno`` struct whose ``objects``
  (fields ``class``, ``class_ind``, ``mask``, ``parts``; the seeds index them by position 1–3)
  carry ``parts`` (``part_name``, ``mask``). If no person object (``class_ind`` 15) has a
  non-empty mask (the seeds' parts index, with ``area_thres`` 0), the whole map is 255.
  Otherwise the map starts at 0 (background) and, object after object in file order, every
  part of every person object that has parts writes its class into its mask (later parts
  overwrite earlier ones), the part name mapped by the seeds' ``HUMAN_PART[6]`` table
  (:data:`PART_CLASSES`). A map without any part pixel is all 255, as the seeds'
  ``AddIgnoreRegions`` makes it. 7 classes: background, head, torso, upper/lower arm,
  upper/lower leg. (The seeds also offer 1, 4 and 14 part classes; the benchmark uses 6.)
- ``normals``: ``normals_distill/<id>.png``, RGB uint8 → ``2x/255 − 1`` (not re-normalised,
  as the seeds), then set to zero (invalid) at every pixel whose PASCAL-Context class
  (``LabelMap`` of ``pascal-context/trainval/<id>.mat``) is not one of the 170 classes of
  :data:`NORMALS_CLASSES`: the seeds keep ``context_classes.json[name]`` for every name of
  ``nyu_classes.json`` that ``context_classes.json`` also has, except ``unknown``, plus
  ``tvmonitor`` (``data/db_info/*.json`` of InvPT, ATRC and ASTMT, identical content). The
  normals are distilled pseudo-labels (a network trained on NYUD), not annotation;
- ``saliency``: ``sal_distill/<id>.png``, grey uint8 → ``x/255 > 0.5`` → {0, 1} (also distilled);
- ``edge``: from ``pascal-context/trainval/<id>.mat`` ``LabelMap``: ``thin(|Laplacian(LabelMap)| > 0)``.
  The seeds use OpenCV's ``Laplacian`` (ksize 1: the kernel [[0,1,0],[1,−4,1],[0,1,0]], border
  ``BORDER_REFLECT_101``) and skimage's ``thin``; here it is ``scipy.ndimage.correlate`` with
  ``mode='mirror'`` (the same reflection) and :func:`scenemtl.metrics.boundary.thin`
  (MATLAB's ``bwmorph thin``, equal to skimage's), so OpenCV is not needed.

Differences from the seeds, and why:

- The seeds write the parts index (``ImageSets/Parts/<split>.txt``, JSON ``{id: [class ids of
  the objects, −1 for empty ones]}``) into the dataset folder on first use, which fails on a
  read-only copy. This loader reads that file when the release ships it (and it lists exactly
  the split's ids, the seeds' own test), and otherwise writes the same index to
  ``<cache_dir>/pascal_context/<hash of the dataset folder's absolute path>/parts_<split>.json``
  (``cache_dir``: option, else ``$SCENEMTL_CACHE``, else ``~/.cache/scenemtl``). The index is
  only needed to leave out images without people (option ``people_only``; by default, as in
  ASTMT/MTI-Net/InvPT, when human parts is the only task; ATRC always loads semseg and so never
  leaves any out). ``sample()`` decides "no person" from the ``.mat`` itself with the same rule.
- MTI-Net/ASTMT/InvPT resize a target whose size differs from its image (nearest; cubic for
  normals); ATRC asserts equal sizes. No file of the release needs resizing, so a size mismatch
  is an error naming the file here.
- ``AddIgnoreRegions`` in the seeds runs after the training crop, so a crop with no part pixel
  becomes all 255 there; this loader applies the rule to the whole image.

Class names: VOC's 21 in id order (the seeds' ``VOC_CATEGORY_NAMES``) and the 7 part classes;
palettes: the PASCAL VOC colour map (bit-interleaved ids), as the seeds' ``labelcolormap``.

Over 400 lines because the release has five label sources read five ways (.mat contexts, part
annotations, saliency, normals, boundaries) plus the seeds' id lists; each reader is short.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from scenemtl.data.base import DatasetInfo, DenseDataset, image_to_tensor, register_dataset
from scenemtl.data.download import Archive
from scenemtl.fileio import Stored, decode_stored, read_image, read_json, read_label_png, read_mat, read_split, require_folder
from scenemtl.errors import ConfigError, DataError
from scenemtl.metrics.boundary import relabel, thin
from scenemtl.tasks.colors import label_palette

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
PART_NAMES = ["background", "head", "torso", "upper arm", "lower arm", "upper leg", "lower leg"]

#: PASCAL-Part person part name → part class (the seeds' ``HUMAN_PART[6]``)
PART_CLASSES = {
    "hair": 1,
    "head": 1,
    "lear": 1,
    "lebrow": 1,
    "leye": 1,
    "mouth": 1,
    "nose": 1,
    "rear": 1,
    "rebrow": 1,
    "reye": 1,
    "neck": 2,
    "torso": 2,
    "luarm": 3,
    "ruarm": 3,
    "lhand": 4,
    "llarm": 4,
    "rhand": 4,
    "rlarm": 4,
    "luleg": 5,
    "ruleg": 5,
    "lfoot": 6,
    "llleg": 6,
    "rfoot": 6,
    "rlleg": 6,
}
#: PASCAL-Part's class_ind of "person" (VOC id 15)
PERSON = 15

#: PASCAL-Context classes (ids of ``LabelMap``) whose distilled normals are kept: the names of
#: ``nyu_classes.json`` found in ``context_classes.json`` (without ``unknown``), plus ``tvmonitor``
#: (prismformore/Multi-Task-Transformer:InvPT/data/db_info/, == brdav/atrc:src/data/db_info/)
NORMALS_CLASSES = {
    3: "air conditioner",
    4: "antenna",
    6: "ashtray",
    9: "bag",
    10: "ball",
    11: "balloon",
    13: "barrel",
    15: "basket",
    17: "bathtub",
    18: "bed",
    22: "bench",
    23: "bicycle",
    29: "blackboard",
    30: "board",
    33: "book",
    34: "bottle",
    36: "bowl",
    37: "box",
    38: "bracelet",
    39: "brick",
    41: "broom",
    43: "bucket",
    46: "cabinet",
    49: "cake",
    50: "calculator",
    51: "calendar",
    53: "camera",
    55: "can",
    56: "candle",
    59: "car",
    61: "cart",
    62: "case",
    65: "cat",
    66: "cd",
    68: "ceiling",
    69: "cell phone",
    72: "chair",
    73: "chessboard",
    78: "clock",
    83: "coffee machine",
    84: "comb",
    85: "computer",
    87: "cone",
    88: "container",
    95: "corkscrew",
    96: "counter",
    101: "crate",
    104: "cup",
    105: "curtain",
    107: "cutting board",
    111: "dishwasher",
    113: "dog",
    115: "door",
    122: "drum",
    124: "duck",
    135: "envelope",
    141: "fan",
    142: "faucet",
    143: "fax machine",
    146: "fire extinguisher",
    150: "fish tank",
    154: "flag",
    157: "flashlight",
    158: "floor",
    159: "flower",
    165: "fork",
    172: "fruit",
    174: "furnace",
    181: "glass",
    183: "globe",
    184: "glove",
    191: "guitar",
    193: "hammer",
    195: "handle",
    197: "hanger",
    199: "hat",
    202: "heater",
    213: "ipod",
    215: "ironing board",
    216: "jar",
    219: "key",
    220: "keyboard",
    223: "knife",
    225: "ladder",
    228: "laptop",
    230: "lid",
    232: "light",
    233: "light bulb",
    238: "lock",
    239: "machine",
    242: "map",
    243: "mask",
    246: "mattress",
    250: "microphone",
    251: "microwave",
    252: "mirror",
    255: "money",
    260: "mouse",
    261: "mouse pad",
    263: "napkin",
    269: "oven",
    272: "pan",
    273: "paper",
    275: "paper cutter",
    281: "pen",
    283: "pencil",
    284: "person",
    285: "photo",
    286: "piano",
    287: "picture",
    288: "pig",
    290: "pillow",
    291: "pipe",
    292: "pitcher",
    293: "plant",
    295: "plate",
    304: "pool table",
    307: "pot",
    309: "printer",
    310: "projector",
    314: "radiator",
    315: "radio",
    319: "range hood",
    323: "remote control",
    329: "rope",
    330: "rug",
    331: "ruler",
    336: "scale",
    342: "sculpture",
    345: "sewing machine",
    349: "shelves",
    350: "shoe",
    351: "shopping cart",
    352: "shovel",
    355: "sign",
    357: "sink",
    368: "sofa",
    370: "spatula",
    371: "speaker",
    374: "spoon",
    379: "stapler",
    380: "stick",
    383: "stool",
    384: "stove",
    397: "table",
    401: "tape",
    403: "telephone",
    405: "tent",
    407: "toaster",
    408: "toilet",
    411: "toothbrush",
    412: "towel",
    413: "toy",
    414: "toy car",
    417: "trampoline",
    419: "tray",
    421: "tricycle",
    423: "trophy",
    427: "tvmonitor",
    429: "typewriter",
    430: "umbrella",
    432: "vacuum cleaner",
    440: "wall",
    441: "wallet",
    442: "wardrobe",
    443: "washing machine",
    444: "watch",
    446: "water dispenser",
    454: "window",
    457: "wire",
}
_NORMALS_IDS = np.array(sorted(NORMALS_CLASSES), dtype=np.int64)
# stored byte → contract value (labels as stored; saliency as the seeds threshold it; 0/1 edges)
_LABEL_TABLE = np.arange(256, dtype=np.int64)
_SALIENCY_TABLE = (np.arange(256, dtype=np.float32) / 255.0 > 0.5).astype(np.float32)
_EDGE_TABLE = np.arange(256, dtype=np.float32)

# OpenCV's Laplacian with ksize 1
_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)

MT_RELEASE = "PASCAL_MT (ASTMT/MTI-Net release, PASCAL_MT.tgz)"
CONTEXT_RELEASE = "PASCALContext (ATRC/InvPT release, PASCALContext.tar.gz)"
HELP = (
    "download PASCAL_MT.tgz (`scenemtl data download pascal_context --root DIR`, or the link in "
    "ATRC's or MTI-Net's code; InvPT's README links the same data as PASCALContext.tar.gz) and set data.root "
    "to the extracted PASCAL_MT/ (or PASCALContext/) folder or the folder holding it"
)
TARGETS = {
    "semseg": "semseg",
    "human_parts": "human_parts",
    "normals": "normals_distill",
    "saliency": "sal_distill",
    "edge": "pascal-context/trainval",
}


def default_cache_dir() -> Path:
    """``$SCENEMTL_CACHE``, else ``~/.cache/scenemtl``."""
    return Path(os.environ.get("SCENEMTL_CACHE") or Path.home() / ".cache" / "scenemtl").expanduser()


def label_edges(labels: np.ndarray) -> np.ndarray:
    """Boundaries of a label map as the seeds compute them: ``thin(|Laplacian(labels)| > 0)`` (bool H×W)."""
    response = ndimage.correlate(np.asarray(labels, dtype=np.float64), _LAPLACIAN, mode="mirror")
    return thin(np.abs(response) > 0)


def _items(value) -> list:
    """A MATLAB struct array as read with ``squeeze_me``: one struct, an array of them, or empty."""
    if isinstance(value, np.ndarray):
        return list(value.ravel()) if value.size else []
    return [value]


def _field(struct, name: str, path: Path):
    if not hasattr(struct, name):
        fields = getattr(struct, "_fieldnames", None)
        raise DataError(f"{path}: a PASCAL-Part struct has no field '{name}' (fields: {fields}); re-extract it from the release")
    return getattr(struct, name)


@register_dataset("pascal_context")
class PascalContext(DenseDataset):
    """PASCAL-Context (PASCAL-MT): semseg (21), human parts (7), saliency, normals, edge."""

    info = DatasetInfo(
        name="pascal_context",
        tasks=("semseg", "human_parts", "saliency", "normals", "edge"),
        class_names={"semseg": VOC_CLASSES, "human_parts": PART_NAMES},
        palettes={"semseg": label_palette(len(VOC_CLASSES)), "human_parts": label_palette(len(PART_NAMES))},
    )
    # SEISM draws the boundary ground truth from this label image (metrics/boundary.py)
    provides_eval = ("edge_labels",)
    archives = (
        Archive(
            "PASCAL_MT.tgz",
            url="https://data.vision.ee.ethz.ch/kmaninis/share/MTL/PASCAL_MT.tgz",
            manual="if the ETH address no longer answers, InvPT's README (prismformore/Multi-Task-Transformer) "
            "links the same data as PASCALContext.tar.gz; extract it and set data.root to PASCALContext/",
        ),
    )

    def __init__(
        self, root: str | None, split: str, tasks: list[str], people_only: bool | None = None, cache_dir: str | None = None
    ) -> None:
        """``people_only``: keep only images with a person (None: when human_parts is the only task, as the
        seeds); ``cache_dir``: where the parts index is written when the release has none (see the module)."""
        super().__init__(root, split, tasks)
        if root is None:
            raise ConfigError(f"data.root is not set for dataset 'pascal_context': {HELP}")
        self.folder = self._find_folder(Path(root))
        name = self.folder.name
        self.variant = {"PASCAL_MT": MT_RELEASE, "PASCALContext": CONTEXT_RELEASE}.get(name, f"PASCAL-MT layout (folder {name})")
        require_folder(self.folder / "ImageSets" / "Context", "the split lists", HELP)
        self.ids = read_split(self.folder / "ImageSets" / "Context" / f"{split}.txt", HELP)
        require_folder(self.folder / "JPEGImages", "the RGB images", HELP)
        needed = set(self.tasks)
        if people_only is None:
            people_only = self.tasks == ["human_parts"]
        if people_only:
            needed.add("human_parts")
        for task in sorted(needed):
            require_folder(self.folder / TARGETS[task], f"the {task} labels", HELP)
        if "normals" in needed:
            require_folder(self.folder / TARGETS["edge"], "the PASCAL-Context label maps (normals mask)", HELP)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.people_only = bool(people_only)
        self.all_ids = list(self.ids)
        if self.people_only:
            index = self._parts_index()
            # an id the index could not classify (unreadable file) stays, so sample() reports it
            self.ids = [i for i in self.ids if index.get(i) is None or PERSON in index[i]]

    @staticmethod
    def _find_folder(root: Path) -> Path:
        """The release folder: ``root`` itself, or the ``PASCAL_MT/`` / ``PASCALContext/`` folder inside it."""
        if (root / "ImageSets").is_dir() or (root / "JPEGImages").is_dir():
            return root
        for name in ("PASCAL_MT", "PASCALContext"):
            if (root / name / "ImageSets").is_dir():
                return root / name
        raise DataError(
            f"no PASCAL-Context release in {root}: expected ImageSets/ and JPEGImages/ there or in "
            f"{root / 'PASCAL_MT'} or {root / 'PASCALContext'}; {HELP}"
        )

    # ------------------------------------------------------------------------------------------
    # the parts index: which images hold a person

    @property
    def index_file(self) -> Path:
        """Where this split's parts index is cached (outside the dataset folder)."""
        key = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:16]
        return self.cache_dir / "pascal_context" / key / f"parts_{self.split}.json"

    def _parts_index(self) -> dict[str, list[int] | None]:
        """``{id: [class_ind per object, −1 if empty]}`` from the release, the cache, or the ``.mat`` files."""
        wanted = set(self.all_ids)
        shipped = self.folder / "ImageSets" / "Parts" / f"{self.split}.txt"
        if shipped.is_file():
            try:
                index = read_json(shipped, "parts index")
                if isinstance(index, dict) and set(index) == wanted:
                    return index
                self.notes.append(
                    f"{shipped} does not list exactly the ids of the {self.split} split; using an index in {self.index_file.parent}"
                )
            except DataError as error:
                self.notes.append(f"{error}; using an index in {self.index_file.parent}")
        cached = self.index_file
        if cached.is_file():
            try:
                data = json.loads(cached.read_text())
                if data.get("root") == str(self.folder.resolve()) and set(data.get("objects", {})) == wanted:
                    return data["objects"]
            except (ValueError, OSError, AttributeError):
                pass  # rebuilt below
        index: dict[str, list[int] | None] = {}
        for image_id in self.all_ids:
            try:
                index[image_id] = [int(c) if area > 0 else -1 for c, area in self._objects(image_id)]
            except DataError:
                index[image_id] = None
        if all(v is not None for v in index.values()):
            self._write_index(index)
        return index

    def _write_index(self, index: dict) -> None:
        data = {"root": str(self.folder.resolve()), "split": self.split, "objects": index}
        target = self.index_file
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(data))
            partial.replace(target)
        except OSError as error:
            self.notes.append(f"cannot cache the parts index in {target.parent} ({error}); set data.options.cache_dir")

    def _objects(self, image_id: str) -> list[tuple[int, int]]:
        """(class_ind, mask area) of each object of ``human_parts/<id>.mat``."""
        path = self.folder / "human_parts" / f"{image_id}.mat"
        anno = self._anno(path)
        out = []
        for obj in _items(_field(anno, "objects", path)):
            out.append((int(np.asarray(_field(obj, "class_ind", path)).ravel()[0]), int(np.count_nonzero(_field(obj, "mask", path)))))
        return out

    @staticmethod
    def _anno(path: Path):
        mat = read_mat(path, "PASCAL-Part annotation (human parts)", HELP)
        if "anno" not in mat:
            raise DataError(f"{path}: no 'anno' struct (a PASCAL-Part annotation file has one); {HELP}")
        return mat["anno"]

    # ------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, index: int) -> str:
        """The id from ``ImageSets/Context/<split>.txt``."""
        return self.ids[index]

    def sample(self, index: int) -> dict:
        """One sample in the data contract."""
        return decode_stored(self.stored_sample(index))

    def stored_sample(self, index: int) -> dict:
        """One sample, its 8-bit maps (labels, human parts, saliency, edges) still ``Stored``."""
        image_id = self.ids[index]
        image_path = self.folder / "JPEGImages" / f"{image_id}.jpg"
        image = read_image(image_path, "PASCAL image", HELP)
        size = image.shape[:2]
        sample: dict = {"image": image_to_tensor(image)}
        context: dict = {"size": size}  # and the LabelMap, read once for normals and edges
        for task in self.tasks:
            target, path = getattr(self, f"_{task}")(image_id, context)
            if tuple(target.shape[-2:]) != size:
                raise DataError(
                    f"{path}: the {task} map is {tuple(target.shape[-2:])} but its image {image_path.name} "
                    f"is {size}; re-extract both from the release"
                )
            sample[task] = target
        if "edge_labels" in self.eval_keys:
            labels, path = self._label_map(image_id, context)
            if tuple(labels.shape) != size:
                raise DataError(
                    f"{path}: LabelMap is {tuple(labels.shape)} but its image {image_path.name} is {size}; re-extract both from the release"
                )
            sample["edge_labels"] = torch.from_numpy(relabel(labels))[None]
        sample["meta"] = {"id": image_id, "size": size, "labelled": list(self.tasks)}
        return sample

    def _label_map(self, image_id: str, context: dict) -> tuple[np.ndarray, Path]:
        path = self.folder / "pascal-context" / "trainval" / f"{image_id}.mat"
        if "labels" not in context:
            mat = read_mat(path, "PASCAL-Context label map", HELP)
            labels = mat.get("LabelMap")
            if labels is None or np.ndim(labels) != 2:
                found = sorted(k for k in mat if not k.startswith("__"))
                raise DataError(f"{path}: no 2-D 'LabelMap' (found {found}); {HELP}")
            context["labels"] = np.asarray(labels)
        return context["labels"], path

    def _semseg(self, image_id: str, context: dict) -> tuple[Stored, Path]:
        voc = self.folder / "semseg" / "VOC12" / f"{image_id}.png"
        path = voc if voc.is_file() else self.folder / "semseg" / "pascal-context" / f"{image_id}.png"
        if not path.is_file():
            raise DataError(f"missing file {voc} or {path} (semantic segmentation); {HELP}")
        labels = read_label_png(path, "semantic label map (0..20, 255 ignored)", HELP)
        return Stored(labels, [_LABEL_TABLE]), path

    def _human_parts(self, image_id: str, context: dict) -> tuple[Stored, Path]:
        path = self.folder / "human_parts" / f"{image_id}.mat"
        anno = self._anno(path)
        objects = _items(_field(anno, "objects", path))
        people = [o for o in objects if int(np.asarray(_field(o, "class_ind", path)).ravel()[0]) == PERSON]
        target = None
        if any(np.count_nonzero(_field(o, "mask", path)) > 0 for o in people):
            for obj in people:
                parts = _items(_field(obj, "parts", path))
                if not parts:
                    continue
                if target is None:
                    target = np.zeros(np.shape(_field(obj, "mask", path)), dtype=np.int64)
                for part in parts:
                    name = str(_field(part, "part_name", path))
                    if name not in PART_CLASSES:
                        raise DataError(f"{path}: unknown person part '{name}' (known: {sorted(PART_CLASSES)}); {HELP}")
                    mask = np.asarray(_field(part, "mask", path)).astype(bool)
                    if mask.shape != target.shape:
                        raise DataError(f"{path}: part '{name}' mask is {mask.shape}, the person mask {target.shape}")
                    target[mask] = PART_CLASSES[name]
        if target is None or not (target > 0).any():
            # no person, or no part pixel: the whole map is ignored (the seeds' AddIgnoreRegions)
            target = np.full(context["size"], 255, dtype=np.int64)
        return Stored(target.astype(np.uint8), [_LABEL_TABLE]), path  # part ids 0..6 and 255

    def _normals(self, image_id: str, context: dict) -> tuple[torch.Tensor, Path]:
        path = self.folder / "normals_distill" / f"{image_id}.png"
        stored = read_image(path, "distilled normals PNG (RGB)", HELP, mode=None)
        if stored.ndim != 3 or stored.shape[2] != 3 or stored.dtype != np.uint8:
            raise DataError(f"{path}: distilled normals must be an 8-bit RGB PNG, found shape {stored.shape} {stored.dtype}; {HELP}")
        labels, label_path = self._label_map(image_id, context)
        if labels.shape != stored.shape[:2]:
            raise DataError(
                f"{label_path}: LabelMap is {labels.shape} but the normals {path.name} are "
                f"{stored.shape[:2]}; re-extract both from the release"
            )
        normals = np.float32(2.0) * stored.astype(np.float32) / np.float32(255.0) - np.float32(1.0)
        normals[~np.isin(labels.astype(np.int64), _NORMALS_IDS)] = 0.0
        return torch.from_numpy(np.ascontiguousarray(normals.transpose(2, 0, 1))), path

    def _saliency(self, image_id: str, context: dict) -> tuple[Stored, Path]:
        path = self.folder / "sal_distill" / f"{image_id}.png"
        grey = read_label_png(path, "distilled saliency PNG (grey)", HELP)
        return Stored(grey, [_SALIENCY_TABLE], channel_axis=True), path  # grey/255 > 0.5

    def _edge(self, image_id: str, context: dict) -> tuple[Stored, Path]:
        labels, path = self._label_map(image_id, context)
        return Stored(label_edges(labels).astype(np.uint8), [_EDGE_TABLE], channel_axis=True), path
