"""Binary per-pixel tasks: boundaries (edges) and saliency."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from scenemtl.fileio import read_label_png
from scenemtl.errors import ConfigError
from scenemtl.metrics import BoundaryMetric, LossMetric, SaliencyMetric
from scenemtl.metrics.boundary import QUANTIZE, nms_mode
from scenemtl.tasks.protocols import SEISM_ENV, resolve_id_list
from scenemtl.tasks.base import PREDICTION_FIX, Task, balanced_bce
from scenemtl.tasks.colors import Key, colorize_gray, ramp_colors
from scenemtl.tasks.registry import register_task

IGNORE = 255.0


class BinaryTask(Task):
    """A {0,1} map predicted by one logit per pixel, trained with balanced BCE, predicted by sigmoid."""

    output_kind = "probability"
    out_channels = 1
    pad_value = IGNORE

    def __init__(self, name: str, pos_weight: float | None) -> None:
        super().__init__(name)
        if pos_weight is not None and not (isinstance(pos_weight, (int, float)) and 0.0 < pos_weight < 1.0):
            raise ConfigError(f"tasks.{name}.pos_weight must be a number in (0, 1), got {pos_weight!r}")
        self.pos_weight = pos_weight

    def check_target(self, target: torch.Tensor, sample: bool = False) -> str | None:
        """Values other than 0, 1 and the ignore value."""
        if bool(((target != 0) & (target != 1) & (target != IGNORE)).any()):
            return f"{self.name} has values other than 0, 1 and {int(IGNORE)} (ignore)"
        return None

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        """Pixels whose label is not 255."""
        return (target != IGNORE)[:, 0]

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Balanced binary cross-entropy over the labelled pixels."""
        return balanced_bce(logits, target, self.pos_weight, IGNORE)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B,1,H,W]``."""
        return torch.sigmoid(logits.float())

    def output_prior(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The logit of the fraction of positive labelled training pixels."""
        rate = min(max(self.valid_mean(targets), 1e-4), 1 - 1e-4)
        return torch.tensor([math.log(rate / (1 - rate))])

    prediction_extensions = (".png",)

    def read_prediction(self, path: Path) -> torch.Tensor:
        """An 8-bit PNG of ``uint8(255·p)`` as its uint8 levels (what the boundary metric scores)."""
        levels = read_label_png(path, f"{self.name} prediction (8-bit PNG of 255·p)", PREDICTION_FIX)
        return torch.from_numpy(np.ascontiguousarray(levels, dtype=np.uint8))[None, None]

    def colorize(self, prediction: torch.Tensor) -> np.ndarray:
        """Probability as grey level."""
        values = prediction[0].float().cpu().numpy()
        return colorize_gray(np.where(values == IGNORE, 0.0, values))

    def key(self, prediction: torch.Tensor) -> Key:
        """A grey bar from probability 0 to 1."""
        return Key(ramp=ramp_colors("gray"), low="p = 0", high="1")


@register_task("edge")
class EdgeTask(BinaryTask):
    """Boundary detection: balanced BCE with a fixed positive weight (0.95, InvPT's default).

    Evaluated by SEISM's ODS/OIS F-measure and AP (``metrics.boundary``; ``max_dist`` 0.011 as
    NYUD, 0.0075 for PASCAL; ``thresholds`` 'hed' or 'mtinet'; ``nms``), and by the validation
    loss the seeds' training code logs. ``boundary_metric=False`` keeps only the loss (faster).
    ``image_ids``: a text file of ids (one per line) to score only those images, e.g. SEISM's
    ``gt_sets/PASCALContext/test_new.txt``, the half of PASCAL val that published numbers use
    (``seism:gt_sets/...`` looks in ``$SCENEMTL_SEISM``, a SEISM checkout; without it every image
    is scored and the report says so). ``nms``: 'seism' (``read_one_cont_png``'s NMS), 'sak' (the
    SAK/PRISM fork's NMS pre-pass, r = 4 after ``convTri(E, 1)``, re-saved as 8-bit) or 'none'.
    ``quantize``: how probabilities become 8-bit levels before scoring ('truncate' as the seeds'
    ``uint8(255·p)``, 'round', 'none'). ``ground_truth``: 'seism' scores against
    ``thin(seg2bmap(label image))`` of the dataset's ``edge_labels`` evaluation target (NYUD's
    edge PNG as stored, PASCAL-Context's relabelled ``LabelMap``), 'target' against the training
    target.
    """

    eval_target = "edge_labels"
    pos_weight: float  # always a fixed weight here (BinaryTask's None means "the batch's share", saliency only)

    def __init__(
        self,
        name: str = "edge",
        pos_weight: float = 0.95,
        max_dist: float = 0.011,
        thresholds: str = "hed",
        nms: bool | str = "seism",
        boundary_metric: bool = True,
        image_ids: str | None = None,
        quantize: str = "truncate",
        ground_truth: str = "seism",
    ) -> None:
        super().__init__(name, pos_weight)
        if quantize not in QUANTIZE:
            raise ConfigError(f"tasks.{name}.quantize must be one of {list(QUANTIZE)}, got {quantize!r}")
        if ground_truth not in ("seism", "target"):
            raise ConfigError(f"tasks.{name}.ground_truth must be 'seism' or 'target', got {ground_truth!r}")
        self.quantize, self.ground_truth = quantize, ground_truth
        try:
            nms = nms_mode(nms)
        except ValueError as error:
            raise ConfigError(f"tasks.{name}.{error}") from None
        self.image_ids, self.ids_note = None, None
        if image_ids:
            path = resolve_id_list(image_ids)
            if path is None:  # a protocol's SEISM list, and no SEISM checkout named
                self.ids_note = (
                    f"all images: {image_ids} needs ${SEISM_ENV} (a SEISM checkout); numbers are not "
                    "comparable with tables scored on that list"
                )
            else:
                self.image_ids = _read_ids(str(path), f"tasks.{name}.image_ids")
        if not 0 < max_dist < 1:
            raise ConfigError(f"tasks.{name}.max_dist is a fraction of the image diagonal in (0, 1), got {max_dist}")
        if thresholds not in ("hed", "mtinet"):
            raise ConfigError(f"tasks.{name}.thresholds must be 'hed' (SEISM, 101) or 'mtinet' (99), got {thresholds!r}")
        self.max_dist, self.thresholds, self.nms, self.boundary_metric = max_dist, thresholds, nms, boundary_metric

    def _pixel_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE
        p = prediction[valid].double().clamp(1e-7, 1 - 1e-7)
        y = target[valid].double()
        w = self.pos_weight
        return -(w * y * p.log() + (1 - w) * (1 - y) * (1 - p).log())

    def metric(self) -> BoundaryMetric | LossMetric:
        """ODS/OIS F and AP (and the loss), or only the balanced BCE over the labelled pixels."""
        if not self.boundary_metric:
            return LossMetric(self._pixel_loss)
        if self.ids_note:  # said when scoring starts, not when a model is merely loaded
            warnings.warn(f"tasks.{self.name}.image_ids: {self.ids_note}", stacklevel=2)
        return BoundaryMetric(
            self.max_dist,
            self.thresholds,
            self.nms,
            IGNORE,
            pixel_loss=self._pixel_loss,
            image_ids=self.image_ids,
            quantize=self.quantize,
            ground_truth=self.ground_truth,
            note=self.ids_note,
        )


@register_task("saliency")
class SaliencyTask(BinaryTask):
    """Saliency: class-balanced BCE (the positive weight is the batch's share of negatives), max F_β.

    The seeds predict two channels and use a two-class balanced cross-entropy; one logit with
    this loss is the same function (softmax over two logits is the sigmoid of their difference).
    ``protocol``: 'pooled' (ATRC's max F with β² = 0.3 over dataset-pooled counts), 'invpt'
    (the same with InvPT/TaskPrompter's second sigmoid, to compare with their tables) or 'mtinet'
    (per-image precision/recall averaged, β = 1).
    """

    def __init__(self, name: str = "saliency", pos_weight: float | None = None, protocol: str = "pooled") -> None:
        super().__init__(name, pos_weight)
        if protocol not in ("pooled", "invpt", "mtinet"):
            raise ConfigError(f"tasks.{name}.protocol must be 'pooled', 'invpt' or 'mtinet', got {protocol!r}")
        self.protocol = protocol

    def metric(self) -> SaliencyMetric:
        """Max F and IoU under the configured protocol."""
        return SaliencyMetric(protocol=self.protocol)

    def read_prediction(self, path: Path) -> torch.Tensor:
        """An 8-bit PNG of ``uint8(255·p)`` as probabilities ``level / 255``."""
        return super().read_prediction(path).to(torch.float32) / 255


def _read_ids(path: str, option: str) -> set[str]:
    """Sample ids, one per line, from a text file; a missing file is an error naming the option."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{option}: id list not found: {file}")
    ids = {line.strip() for line in file.read_text().splitlines() if line.strip()}
    if not ids:
        raise ConfigError(f"{option}: {file} lists no ids")
    return ids
