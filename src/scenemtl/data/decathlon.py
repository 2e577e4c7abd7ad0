"""The Visual Decathlon (Rebuffi et al., NeurIPS 2017): ten image-classification domains, one task each.

Layout of the official release (``decathlon-1.0-devkit.tar.gz`` and ``decathlon-1.0-data.tar.gz`` from
robots.ox.ac.uk/~vgg/share, unpacked as the challenge's ``download_data.sh`` does), ``data.root`` the
``decathlon-1.0`` folder:

- ``annotations/<domain>_{train,val}.json``: COCO-style ``images`` (``id``, ``width``, ``height``,
  ``file_name`` relative to the root: ``data/<domain>/<split>/<class folder>/<image>.jpg``),
  ``annotations`` (``image_id``, ``category_id``) and ``categories`` (``id``, ``name``,
  ``supercategory`` = the domain), category ids ``domain number · 10⁷ + class`` (domains numbered
  alphabetically from 1: aircraft … vgg-flowers);
- ``annotations/<domain>_test_stripped.json`` (images only), or ``<domain>_test.json`` with the
  labels (the released ``labels_test.zip`` of the challenge's code, unzipped into ``annotations/``):
  the ``test`` split reads the labelled file when it is there, else scores nothing (labels −1);
- ``decathlon_mean_std.pickle`` (from the challenge's code repository): per domain ``<domain>mean``
  and ``<domain>std``, the normalisation MTAN and the challenge code use (read as plain arrays,
  never as code); ``normalisation: imagenet`` does without it.

Samples: the image (shorter side 72 px, as released; others are resized to it); the domain's task
holds the class id (the rank of its category id among the domain's categories), every other task −1
(unlabelled), ``meta['labelled']`` the domain, ``meta['mean']``/``meta['std']`` its normalisation
(``transforms.Normalize`` uses them). MTAN's geometry (``visual_decathlon/model_wrn_mtan.py``):
evaluation splits are centre-cropped to 72×72 here; training images of gtsrb, omniglot and svhn are
centre-cropped too and never flipped (``meta['flip']`` False), the other domains keep their width for
the recipe's random 72×72 crop and flip. ``groups()`` gives each domain's indices, for the grouped
batches of ``data.batching: grouped`` (MTAN visits the domains one after another).

Differences: the challenge code pairs images with annotations by list position; here by
``image_id``. Class ids are ranks of the category ids (the code subtracts the smallest category id
present, which is the same whenever every class has an image). Resizing uses OpenCV's area
interpolation (torchvision's ``Resize`` on PIL images: bilinear with antialiasing) and applies only
to images whose shorter side is not already 72.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenemtl.data.base import DatasetInfo, DenseDataset, image_to_tensor, register_dataset
from scenemtl.data.download import Archive
from scenemtl.errors import ConfigError, DataError
from scenemtl.fileio import read_array_pickle, read_image

#: the domains in MTAN's task order, with their class counts (``model_wrn_mtan.py``: data_name, data_class)
DOMAINS: dict[str, int] = {
    "imagenet12": 1000,
    "aircraft": 100,
    "cifar100": 100,
    "daimlerpedcls": 2,
    "dtd": 47,
    "gtsrb": 43,
    "omniglot": 1623,
    "svhn": 10,
    "ucf101": 101,
    "vgg-flowers": 102,
}
#: the category-id prefix of each domain (domain number · 10⁷ + class; alphabetical from 1)
CATEGORY_BASE = {name: (k + 1) * 10**7 for k, name in enumerate(sorted(DOMAINS))}
#: domains MTAN centre-crops and never flips in training (text, digits, traffic signs)
NO_FLIP = ("gtsrb", "omniglot", "svhn")
#: the images' shorter side and the crop (pixels)
SIZE = 72
HELP = (
    "run `scenemtl data download decathlon --root <folder>` and set data.root to <folder>/decathlon-1.0, or by hand: download "
    "decathlon-1.0-devkit.tar.gz and decathlon-1.0-data.tar.gz from http://www.robots.ox.ac.uk/~vgg/share/, unpack the devkit, "
    "unpack the data archive and each domain's .tar inside decathlon-1.0/data/, and set data.root to decathlon-1.0 (it holds "
    "annotations/ and data/)"
)
PICKLE_HELP = (
    "put decathlon_mean_std.pickle (srebuffi/residual_adapters on GitHub) in data.root, or set data.options.normalisation=imagenet"
)


def _palette(count: int) -> np.ndarray:
    return np.random.default_rng(count).integers(0, 256, size=(count, 3), dtype=np.uint8)


def resize_shorter(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """``image`` (H×W×3) scaled so that its shorter side is ``size`` (unchanged when it already is)."""
    import cv2

    height, width = image.shape[:2]
    if min(height, width) == size:
        return image
    scale = size / min(height, width)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    return cv2.resize(image, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def center_crop(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The centred ``size``×``size`` window (torchvision's ``CenterCrop`` rounding)."""
    height, width = image.shape[:2]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def read_annotations(path: Path, domain: str) -> tuple[list[dict], dict[int, int], list[str], list[int]]:
    """A COCO-style annotation file: its images, ``{image id: category id}``, and the domain's class names
    and category ids in class order (ranked by id). Malformed files raise a DataError naming the key."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read the annotation file {path}: {error}; {HELP}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("categories"), list):
        raise DataError(f"{path}: a Decathlon annotation file holds 'images' and 'categories' lists (COCO style); {HELP}")
    for key, items, fields in (("images", data["images"], ("id", "file_name")), ("categories", data["categories"], ("id", "name"))):
        for item in items:
            if not isinstance(item, dict) or any(field not in item for field in fields):
                raise DataError(f"{path}: every entry of '{key}' needs {list(fields)}, found {item!r:.120}")
    categories = sorted(data["categories"], key=lambda c: int(c["id"]))
    labels: dict[int, int] = {}
    for annotation in data.get("annotations") or []:
        if not isinstance(annotation, dict) or "image_id" not in annotation or "category_id" not in annotation:
            raise DataError(f"{path}: every entry of 'annotations' needs 'image_id' and 'category_id', found {annotation!r:.120}")
        labels[int(annotation["image_id"])] = int(annotation["category_id"])
    return data["images"], labels, [str(c["name"]) for c in categories], [int(c["id"]) for c in categories]


@register_dataset("decathlon")
class VisualDecathlon(DenseDataset):
    """The ten domains of the Visual Decathlon as ten ``classification`` tasks named by the domains.

    Options: ``normalisation`` ('per_domain': the release's ``decathlon_mean_std.pickle``, as MTAN and
    the challenge code; 'imagenet': ImageNet's mean and std for every domain); ``train_domains``: the
    domains whose training images are read (default all the tasks'; MTAN's second phase trains without
    imagenet12, whose task stays in the model), other splits are unaffected.
    """

    info = DatasetInfo(
        name="decathlon",
        tasks=tuple(DOMAINS),
        class_names={name: [f"{name} {k}" for k in range(count)] for name, count in DOMAINS.items()},
        palettes={name: _palette(count) for name, count in DOMAINS.items()},
        task_types={name: "classification" for name in DOMAINS},
    )
    splits = ("train", "val", "test")
    # as the challenge's download_data.sh: the devkit unpacks decathlon-1.0/ (annotations/, data/), the data archive
    # goes into decathlon-1.0/data/ with one tar per domain; data.root is then <download root>/decathlon-1.0
    archives = (
        Archive("decathlon-1.0-devkit.tar.gz", url="http://www.robots.ox.ac.uk/~vgg/share/decathlon-1.0-devkit.tar.gz"),
        Archive(
            "decathlon-1.0-data.tar.gz",
            url="http://www.robots.ox.ac.uk/~vgg/share/decathlon-1.0-data.tar.gz",
            into="decathlon-1.0/data",
            inner=True,
        ),
        Archive(
            "decathlon_mean_std.pickle",
            url="https://github.com/srebuffi/residual_adapters/raw/master/decathlon_mean_std.pickle",
            into="decathlon-1.0",
            extract=False,
        ),
    )

    def __init__(
        self, root: str | None, split: str, tasks: list[str], normalisation: str = "per_domain", train_domains: list[str] | None = None
    ) -> None:
        super().__init__(root, split, tasks)
        unknown = [d for d in train_domains or [] if d not in tasks]
        if unknown:
            raise ConfigError(f"data.options.train_domains: {unknown} are not among the tasks {list(tasks)}")
        if root is None:
            raise ConfigError(f"data.root is not set for dataset 'decathlon': {HELP}")
        if normalisation not in ("per_domain", "imagenet"):
            raise ConfigError(f"data.options.normalisation must be 'per_domain' or 'imagenet', got {normalisation!r}")
        self.folder = Path(root)
        if not (self.folder / "annotations").is_dir():
            raise DataError(f"no folder {self.folder / 'annotations'} in data.root: {HELP}")
        self.domains = [name for name in DOMAINS if name in tasks and (split != "train" or train_domains is None or name in train_domains)]
        self.normalisation = normalisation
        stats = (
            read_array_pickle(self.folder / "decathlon_mean_std.pickle", "per-domain mean and std", PICKLE_HELP)
            if normalisation == "per_domain"
            else None
        )
        #: per domain: the sample records (file, image id, class or −1), class names and category ids
        self.records: list[tuple[str, str, int, int]] = []  # (domain, file, image id, class)
        self.class_names: dict[str, list[str]] = {}
        self.category_ids: dict[str, list[int]] = {}
        self.stats: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        self._groups: list[list[int]] = []
        for domain in self.domains:
            images, labels, names, ids = read_annotations(self._annotation_file(domain), domain)
            if len(names) != DOMAINS[domain]:
                raise DataError(
                    f"{self._annotation_file(domain)}: {len(names)} categories, but {domain} has {DOMAINS[domain]} classes; {HELP}"
                )
            rank = {category: k for k, category in enumerate(ids)}
            start = len(self.records)
            for image in sorted(images, key=lambda item: int(item["id"])):
                category = labels.get(int(image["id"]))
                if category is not None and category not in rank:
                    raise DataError(f"{self._annotation_file(domain)}: image {image['id']} has category {category}, not one of {domain}'s")
                self.records.append((domain, str(image["file_name"]), int(image["id"]), -1 if category is None else rank[category]))
            self._groups.append(list(range(start, len(self.records))))
            self.class_names[domain], self.category_ids[domain] = names, ids
            if stats is not None:
                try:
                    mean, std = stats[f"{domain}mean"], stats[f"{domain}std"]
                    self.stats[domain] = (
                        tuple(float(v) for v in np.asarray(mean).reshape(3)),
                        tuple(float(v) for v in np.asarray(std).reshape(3)),
                    )
                except (KeyError, TypeError, ValueError):
                    raise DataError(
                        f"{self.folder / 'decathlon_mean_std.pickle'} has no 3-channel '{domain}mean'/'{domain}std'; {PICKLE_HELP}"
                    ) from None
        if not self.records:
            raise DataError(f"no {split} images of {self.domains} in {self.folder / 'annotations'}: {HELP}")

    def _annotation_file(self, domain: str) -> Path:
        folder = self.folder / "annotations"
        if self.split != "test":
            path = folder / f"{domain}_{self.split}.json"
        else:
            labelled = folder / f"{domain}_test.json"
            path = labelled if labelled.is_file() else folder / f"{domain}_test_stripped.json"
        if not path.is_file():
            raise DataError(f"missing annotation file {path}: {HELP}")
        return path

    def __len__(self) -> int:
        return len(self.records)

    def groups(self) -> list[list[int]]:
        """The indices of each domain, in MTAN's domain order (``data.batching: grouped``)."""
        return [list(group) for group in self._groups]

    def sample_id(self, index: int) -> str:
        domain, _, image_id, _ = self.records[index]
        return f"{domain}/{image_id}"

    def sample(self, index: int) -> dict[str, Any]:
        domain, file, image_id, label = self.records[index]
        image = resize_shorter(read_image(self.folder / file, f"{domain} image", HELP))
        train = self.split == "train"
        if not train or domain in NO_FLIP:
            image = center_crop(image)
        sample: dict[str, Any] = {"image": image_to_tensor(image)}
        for task in self.tasks:
            sample[task] = torch.tensor(label if task == domain else -1, dtype=torch.int64)
        meta: dict[str, Any] = {"id": self.sample_id(index), "size": tuple(image.shape[:2]), "labelled": [domain], "domain": domain}
        if domain in self.stats:
            meta["mean"], meta["std"] = self.stats[domain]
        if train and domain in NO_FLIP:
            meta["flip"] = False
        sample["meta"] = meta
        return sample

    def category_id(self, domain: str, label: int) -> int:
        """The release's category id of class ``label`` of ``domain`` (for the challenge's results.json)."""
        return self.category_ids[domain][label]


class ChallengeResults:
    """Predictions in the challenge's submission format (``results.json``: one ``{"image_id", "category_id"}`` per
    image, as the evaluation server and MTAN's ``coco_results.py`` write it), collected from evaluation batches:
    ``writer(task)`` is the ``evaluate`` writer of a domain's task (it keeps the predictions of that domain's
    images); ``save(path)`` writes them sorted by image id. Category ids come from the annotation file's
    categories (MTAN maps its ImageFolder indices by the order of first appearance instead)."""

    def __init__(self, dataset: VisualDecathlon) -> None:
        self.dataset = dataset
        self.rows: dict[int, int] = {}

    def writer(self, task: str):
        """The callable ``evaluate`` gives each batch's predictions (class ids ``[B]``) and ``meta``."""

        def write(prediction: torch.Tensor, meta: list[dict]) -> None:
            for value, info in zip(prediction.reshape(-1).tolist(), meta):
                if info.get("domain") == task:
                    self.rows[int(str(info["id"]).split("/")[1])] = self.dataset.category_id(task, int(value))

        return write

    def save(self, path: str | Path) -> Path:
        """Write ``results.json``; returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{"image_id": k, "category_id": v} for k, v in sorted(self.rows.items())]))
        return path
