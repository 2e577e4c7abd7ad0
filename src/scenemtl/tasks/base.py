"""The task protocol: everything task-specific lives in one Task object."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scenemtl.errors import ConfigError
from scenemtl.fileio import Stored
from scenemtl.tasks.colors import Key
from scenemtl.metrics.base import StreamingMetric

#: how saved predictions should look (said by ``read_prediction``'s errors)
PREDICTION_FIX = "write predictions as `scenemtl eval --save-png` or the seeds' save code does (one file per id, original size)"


class Task:
    """One dense prediction task: its loss, post-processing, metric, colouring and label handling.

    Every other part of the package asks the task instead of branching on its name. Targets and
    predictions follow the data contract of DESIGN.md; methods take batched tensors unless said.
    """

    #: channels of the model's logits for this task
    out_channels: int = 1
    #: value that marks padded / unlabelled target pixels
    pad_value: float = 255.0
    #: a class-id map (the crop's class-ratio rule and label checks look for one)
    is_classification: bool = False
    #: what a prediction is, for parts that treat kinds of output differently (ATRC's auxiliary decoders):
    #: 'classes', 'probability' (one binary logit), 'metric_depth', 'inverse_depth', 'direction', or 'other'
    output_kind: str = "other"
    #: sample key of the evaluation ground truth the metric needs beside the training target
    #: (e.g. the label image SEISM draws boundaries from); datasets that have it provide it in
    #: evaluation splits, padded with -1; ``None``: the metric scores the training target
    eval_target: str | None = None
    #: the named evaluation protocol its metric options come from (``tasks/protocols.py``), if any
    eval_protocol: str | None = None
    #: file extensions of saved predictions ``scenemtl score`` reads (``read_prediction``), in the order tried
    prediction_extensions: tuple[str, ...] = ()
    #: a per-pixel map target (False: an instance target, one object per image such as ``detection.Boxes3D``,
    #: which the transforms move with ``flip(width)``, ``resize(old, new)`` and ``shift(top, left)``, the
    #: loader batches as a list and ``move`` sends with ``.to(device)``; its head comes from ``build_head``)
    is_map: bool = True
    #: an image-level target (``is_map`` False): one value per image, e.g. a class id (int64 ``[]``, batched
    #: ``[B]``); the geometric transforms leave it alone and its head comes from ``build_head`` too
    is_image_level: bool = False

    def build_head(self, in_channels: list[int], strides: list[int]) -> torch.nn.Module | None:
        """For an instance task, the head an architecture puts on its multi-scale task features
        (``forward(features, image_size)``); None for a map task (the architecture's own head)."""
        return None

    def __init__(self, name: str) -> None:
        self.name = name

    # -- learning -------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of ``logits [B,C,H,W]`` against ``target``, over valid pixels only."""
        raise NotImplementedError

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Post-process logits into predictions in the target's units."""
        raise NotImplementedError

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the labelled pixels, ``[B,H,W]``."""
        raise NotImplementedError

    def unlabelled(self, target: Any) -> Any:
        """The target of a sample whose label for this task is withheld (partial labels), shaped like
        ``target`` (a ``Stored`` one is decoded): every pixel at ``pad_value``, which no loss, prior or
        metric reads. Instance tasks return their own marker (``Boxes3D.labelled`` False)."""
        target = target.decode() if isinstance(target, Stored) else target
        return torch.full_like(target, self.pad_value)

    def zero_loss(self, output: Any) -> torch.Tensor:
        """A zero in the graph of the task's output (the loss of a batch without this task's label, so
        that every parameter still gets a gradient, zero)."""
        zero: torch.Tensor = output.sum() * 0.0
        return zero

    def prediction_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """What ``predict`` needs from the batch beside the output (3D detection: each image's camera); none by default."""
        return {}

    # -- evaluation -----------------------------------------------------------------------
    def metric(self) -> StreamingMetric:
        """A fresh streaming metric for this task."""
        raise NotImplementedError

    def output_prior(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """Per-channel logits ``[C]`` that predict the training prior everywhere.

        ``predict`` of these logits is the best constant prediction (majority class, mean depth,
        mean normal, positive rate): the trivial baseline, and the bias a head starts from.
        """
        raise NotImplementedError

    def valid_mean(self, targets: Iterable[torch.Tensor]) -> float:
        """Mean of a one-channel target over its valid pixels, pooled over ``targets``."""
        total, count = 0.0, 0
        for target in targets:
            values = target[:, 0][self.valid_mask(target)]
            total += float(values.double().sum())
            count += values.numel()
        return total / max(count, 1)

    def constant_prediction(self, prior: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The prediction of ``output_prior`` logits at every pixel of ``target``'s batch."""
        batch, height, width = target.shape[0], target.shape[-2], target.shape[-1]
        logits = prior.to(target.device, torch.float32).view(1, -1, 1, 1).expand(batch, -1, height, width)
        return self.predict(logits)

    # -- pictures -------------------------------------------------------------------------
    def colorize(self, prediction: torch.Tensor) -> np.ndarray:
        """uint8 RGB ``[H,W,3]`` picture of one (unbatched) prediction or target."""
        raise NotImplementedError

    # -- label checks (the trainer's first batch, ``scenemtl data check``) -----------------
    def key(self, prediction: torch.Tensor) -> Key | None:
        """What the colours of ``colorize(prediction)`` mean (a legend or a colour bar), for panels; None: none."""
        return None

    def check_target(self, target: torch.Tensor, sample: bool = False) -> str | None:
        """What is wrong with the values of a target (batched or not), in a sentence without location; None if nothing.

        ``sample``: the target is one sample's, checked by ``scenemtl data check``, which also
        reports what is merely suspicious there (e.g. a depth map without one valid pixel).
        """
        return None

    # -- geometry of labels (used by the joint transforms) -------------------------------
    def flip_horizontal(self, target: torch.Tensor | Stored) -> torch.Tensor | Stored:
        """Mirror a target left–right (``[..., H, W]``, or ``Stored``)."""
        return target.flip() if isinstance(target, Stored) else target.flip(-1)

    def resample(
        self, target: torch.Tensor | Stored, rows: torch.Tensor, cols: torch.Tensor, zoom: float, adjust_values: bool
    ) -> torch.Tensor | Stored:
        """Nearest resampling of a ``[C,H,W]`` or ``[H,W]`` target: output pixel ``(i, j)`` is source pixel
        ``(rows[i], cols[j])`` (labels are never blended; the transforms compute the indices). A
        ``Stored`` target is resampled in its stored form.

        ``zoom`` is the scale factor applied to the image; tasks whose values change with the
        apparent distance (depth) rescale them when ``adjust_values`` is set.
        """
        if isinstance(target, Stored):
            return target.take(rows.numpy(), cols.numpy())
        picked = np.take(np.take(target.numpy(), rows.numpy(), axis=-2), cols.numpy(), axis=-1)
        return torch.from_numpy(picked)

    def read_prediction(self, path: Path) -> torch.Tensor:
        """One saved prediction file as a batch of one, in the units ``metric().update`` takes."""
        raise ConfigError(f"scenemtl score cannot read saved predictions of task '{self.name}'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask``; zero (with gradient path) when the mask is empty."""
    count = mask.sum()
    return (values * mask).sum() / count.clamp_min(1)


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float | None, ignore_index: float = 255) -> torch.Tensor:
    """Balanced binary cross-entropy over valid pixels: mean of w·y·(−log σ) + (1−w)(1−y)(−log(1−σ)).

    With a fixed ``pos_weight`` w this equals the seeds' ``BalancedBinaryCrossEntropyLoss``
    (BCE with pos_weight w/(1−w), divided by 1/(1−w)); with ``None``, w is the fraction of
    negative valid pixels in the batch (HED-style), which equals the seeds' two-class
    cross-entropy with class weights [1−w, w] summed and divided by the valid pixel count.
    """
    logits = logits.float()
    valid = target != ignore_index
    y = torch.where(valid, target, torch.zeros_like(target)).float()
    if pos_weight is None:
        w = (1 - y)[valid].sum() / valid.sum().clamp_min(1)
    else:
        w = torch.tensor(pos_weight, device=logits.device)
    per_pixel = -(w * y * F.logsigmoid(logits) + (1 - w) * (1 - y) * F.logsigmoid(-logits))
    return masked_mean(per_pixel, valid)
