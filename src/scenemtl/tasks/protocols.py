"""Named evaluation protocols: the metric variants each codebase's published tables use, in one table.

``eval.protocol: NAME`` sets every task option below that the config does not set itself (an
option written in the config, or with ``--set``, always wins). Reports print the protocol's
name beside each metric's variant. The facts behind each row are in the metrics' docstrings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenemtl.errors import ConfigError, did_you_mean

#: SEISM's match distance by benchmark (``src/scripts/eval_method.m``), as a fraction of the diagonal
MAX_DIST = {"nyud": 0.011, "pascal_context": 0.0075}
#: the id list a protocol scores PASCAL-Context boundaries on, inside a SEISM checkout
SEISM_TEST_NEW = "seism:gt_sets/PASCALContext/test_new.txt"
#: environment variable naming a SEISM checkout (for its ``gt_sets`` id lists)
SEISM_ENV = "SCENEMTL_SEISM"


@dataclass(frozen=True)
class Protocol:
    """One codebase's evaluation: task options, options that depend on the dataset, and what it reproduces."""

    name: str
    description: str
    reproduces: str
    tasks: dict[str, dict[str, Any]]
    by_dataset: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def options(self, task: str, dataset: str) -> dict[str, Any]:
        """The options this protocol gives ``task`` on ``dataset``."""
        options = dict(self.tasks.get(task, {}))
        if task == "edge" and dataset in MAX_DIST:
            options["max_dist"] = MAX_DIST[dataset]
        options.update(self.by_dataset.get(dataset, {}).get(task, {}))
        return options


_SEGMENTATION = {"miou": "accumulated"}
_PASCAL_TEST_NEW = {"pascal_context": {"edge": {"image_ids": SEISM_TEST_NEW}}}

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "invpt",
            "InvPT / TaskPrompter / DiffusionMTL / MTMamba lineage: SEISM with read_one_cont_png (NMS r=1), HED's 101 "
            "thresholds, E > t in single precision, truncated 8-bit PNGs, seg2bmap ground truth, PASCAL boundaries on "
            "SEISM's test_new half; saliency through the official meter's second sigmoid; pooled mIoU, depth and normals",
            "InvPT, TaskPrompter, DiffusionMTL, MLoRE, MTMamba tables on NYUD-v2 and PASCAL-Context",
            {
                "semseg": _SEGMENTATION,
                "human_parts": _SEGMENTATION,
                "depth": {"pooling": "pixel"},
                "normals": {"pooling": "pixel"},
                "saliency": {"protocol": "invpt"},
                "edge": {"thresholds": "hed", "nms": "seism", "quantize": "truncate", "ground_truth": "seism"},
            },
            _PASCAL_TEST_NEW,
        ),
        Protocol(
            "mtinet",
            "MTI-Net / ASTMT code: SEISM with read_one_png (no NMS, 99 thresholds 0.01…0.99, E >= t), PASCAL boundaries "
            "on test_new; saliency per image (β = 1, thresholds 0.2…0.9); pooled mIoU, depth and normals",
            "MTI-Net and the PAD-Net/cross-stitch baselines it re-ran",
            {
                "semseg": _SEGMENTATION,
                "human_parts": _SEGMENTATION,
                "depth": {"pooling": "pixel"},
                "normals": {"pooling": "pixel"},
                "saliency": {"protocol": "mtinet"},
                "edge": {"thresholds": "mtinet", "nms": "none", "quantize": "truncate", "ground_truth": "seism"},
            },
            _PASCAL_TEST_NEW,
        ),
        Protocol(
            "atrc",
            "ATRC: SEISM with read_one_cont_png (as invpt) on every val image (ATRC does not state its gt_set); "
            "saliency max F over dataset-pooled counts (β² = 0.3, 19 thresholds); pooled mIoU, depth and normals",
            "ATRC's tables (its gt_set is unverified)",
            {
                "semseg": _SEGMENTATION,
                "human_parts": _SEGMENTATION,
                "depth": {"pooling": "pixel"},
                "normals": {"pooling": "pixel"},
                "saliency": {"protocol": "pooled"},
                "edge": {"thresholds": "hed", "nms": "seism", "quantize": "truncate", "ground_truth": "seism"},
            },
        ),
        Protocol(
            "densemtl",
            "DenseMTL: per-image depth errors over 1e-3 < gt < 80 m with predictions clamped to [1e-3, 80] m, "
            "per-image normals, accumulated mIoU",
            "DenseMTL's Cityscapes, Synthia and VKITTI2 tables",
            {
                "semseg": _SEGMENTATION,
                "depth": {"pooling": "image", "clamp": [1e-3, 80.0]},
                "normals": {"pooling": "image"},
            },
        ),
        Protocol(
            "densemtl_legacy",
            "DenseMTL as coded: the densemtl protocol with its column-wise normals numbers (norms over image rows, "
            "no mask, raw output; needs data.options.normals: densemtl for its ground truth at every pixel)",
            "DenseMTL's released normals numbers on Cityscapes, Synthia and VKITTI2 (not an angular error per pixel)",
            {
                "semseg": _SEGMENTATION,
                "depth": {"pooling": "image", "clamp": [1e-3, 80.0]},
                "normals": {"pooling": "densemtl_columns"},
            },
        ),
        Protocol(
            "mtan",
            "MTAN: confusion-matrix mIoU over the test set; depth and normals errors per test batch, averaged over "
            "batches (as MTAN prints them)",
            "MTAN's NYUv2-13 and Cityscapes tables, and the loss-weighting papers that use its code",
            {
                "semseg": _SEGMENTATION,
                "depth": {"pooling": "batch"},
                "inverse_depth": {"pooling": "batch"},
                "normals": {"pooling": "batch"},
            },
        ),
        Protocol(
            "sak",
            "SAK / PRISM SEISM fork: a separate NMS pre-pass (convTri(E,1), edgesNmsMex r=4), re-saved as 8-bit, then "
            "read_one_png (99 thresholds, E >= t) on all val images (PASCAL 5,105); pooled mIoU, depth and normals",
            "SAK's and PRISM's ViT-B controlled comparison",
            {
                "semseg": _SEGMENTATION,
                "human_parts": _SEGMENTATION,
                "depth": {"pooling": "pixel"},
                "normals": {"pooling": "pixel"},
                "saliency": {"protocol": "pooled"},
                "edge": {"thresholds": "mtinet", "nms": "sak", "quantize": "truncate", "ground_truth": "seism"},
            },
        ),
    )
}


def get_protocol(name: str, key: str = "eval.protocol") -> Protocol:
    """The protocol called ``name``; an unknown name is a ConfigError listing the known ones."""
    if name not in PROTOCOLS:
        raise ConfigError(f"{key}: unknown protocol '{name}'.{did_you_mean(name, list(PROTOCOLS))} Known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def task_options(protocol: str | None, dataset: str, task: str, options: dict[str, Any]) -> dict[str, Any]:
    """A task's options under ``protocol``: the protocol's, overridden by those the config sets."""
    if protocol is None:
        return dict(options)
    merged = get_protocol(protocol).options(task, dataset)
    merged.update(options)
    return merged


def resolve_id_list(value: str) -> Path | None:
    """The file behind an ``image_ids`` value: a path, or ``seism:<path in a SEISM checkout>``.

    ``seism:`` paths are looked up in ``$SCENEMTL_SEISM``; ``None`` when that is not set.
    """
    if not value.startswith("seism:"):
        return Path(value).expanduser()
    root = os.environ.get(SEISM_ENV)
    return Path(root).expanduser() / value.removeprefix("seism:") if root else None
