"""Surface normal estimation."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scenemtl.fileio import Stored, read_image, read_npy
from scenemtl.errors import ConfigError, DataError
from scenemtl.metrics import NormalsMetric
from scenemtl.metrics.normals import NORMALS_POOLINGS, unit_vectors
from scenemtl.tasks.base import PREDICTION_FIX, Task, masked_mean
from scenemtl.tasks.colors import Key, colorize_normals
from scenemtl.tasks.registry import register_task


@register_task("normals")
class NormalsTask(Task):
    """Surface normals: L1 on the L2-normalised prediction, summed over xyz, averaged over valid pixels.

    As InvPT's ``L1Loss(normalize=True)``; ``loss: cosine`` is MTAN's 1 − mean over valid pixels
    of n̂·n instead. Invalid pixels are the all-zero vector. A horizontal flip negates the x
    component. ``pooling`` of the errors: 'pixel' (MTI-Net style, default), 'image' (DenseMTL)
    or 'batch' (MTAN: per test batch, averaged over batches), or 'densemtl_columns' (DenseMTL's
    column-wise numbers, legacy); see ``NormalsMetric``.
    """

    #: the normals at every pixel (DenseMTL's ground truth, invalid pixels included), for 'densemtl_columns'
    eval_target = "normals_unmasked"

    out_channels = 3
    pad_value = 0.0

    def __init__(self, name: str = "normals", loss: str = "l1", pooling: str = "pixel") -> None:
        super().__init__(name)
        if loss not in ("l1", "cosine"):
            raise ConfigError(f"tasks.{name}.loss must be 'l1' (InvPT) or 'cosine' (MTAN), got {loss!r}")
        if pooling not in NORMALS_POOLINGS:
            raise ConfigError(
                f"tasks.{name}.pooling must be 'pixel' (MTI-Net), 'image' (DenseMTL's quantity, per pixel), 'batch' (MTAN) "
                f"or 'densemtl_columns' (DenseMTL's code, legacy), got {pooling!r}"
            )
        self.loss_kind, self.pooling = loss, pooling

    #: beyond ``UNIT_BAD_SHARE`` of labelled pixels off unit length by more than ``UNIT_TOLERANCE``, the normals are wrong
    UNIT_TOLERANCE = 0.1
    UNIT_BAD_SHARE = 0.01

    def check_target(self, target: torch.Tensor, sample: bool = False) -> str | None:
        """Labelled (non-zero) vectors that are not unit vectors, on more than 1 % of the pixels."""
        norm = target.float().norm(dim=-3)
        labelled = norm > 0
        if bool(labelled.any()):
            off = float(((norm[labelled] - 1).abs() > self.UNIT_TOLERANCE).float().mean())
            if off > self.UNIT_BAD_SHARE:
                return f"{self.name}: {off:.1%} of labelled pixels are not unit vectors (norm off by more than {self.UNIT_TOLERANCE})"
        return None

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        """Pixels whose normal is not the zero vector."""
        return (target != 0).any(dim=1) & torch.isfinite(target).all(dim=1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Σ_xyz |n̂ − n| (or 1 − n̂·n) over valid pixels / number of valid pixels."""
        valid = self.valid_mask(target)
        clean = torch.where(valid[:, None], target, torch.zeros_like(target))
        unit = unit_vectors(logits.float())
        if self.loss_kind == "cosine":
            return 1 - masked_mean((unit * clean).sum(dim=1), valid)
        per_pixel = (unit - clean).abs().sum(dim=1)
        return masked_mean(per_pixel, valid)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Unit normals ``[B,3,H,W]``."""
        return unit_vectors(logits.float())

    def metric(self) -> NormalsMetric:
        """Angular errors pooled as ``pooling`` says."""
        return NormalsMetric(pooling=self.pooling)

    def output_prior(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The normalised mean of the valid training normals."""
        total = torch.zeros(3, dtype=torch.float64)
        for target in targets:
            total += target.permute(1, 0, 2, 3)[:, self.valid_mask(target)].double().sum(dim=1).cpu()
        return F.normalize(total, dim=0).float()

    output_kind = "direction"
    prediction_extensions = (".png", ".npy")

    def read_prediction(self, path: Path) -> torch.Tensor:
        """An RGB PNG of ``(n + 1)·255/2`` or an H×W×3 ``.npy`` of unit vectors, as ``[1,3,H,W]``."""
        what = f"{self.name} prediction"
        if path.suffix == ".png":
            normals = read_image(path, f"{what} (RGB PNG of (n+1)·255/2)", PREDICTION_FIX).astype(np.float32) * (2 / 255) - 1
        else:
            normals = np.asarray(read_npy(path, f"{what} (.npy H×W×3)", PREDICTION_FIX), dtype=np.float32)
        if normals.ndim != 3 or normals.shape[-1] != 3:
            raise DataError(f"{path}: a normals prediction must be H×W×3, got shape {normals.shape}; {PREDICTION_FIX}")
        return torch.from_numpy(np.ascontiguousarray(normals.transpose(2, 0, 1)))[None]

    def colorize(self, prediction: torch.Tensor) -> np.ndarray:
        """RGB = 255·(n+1)/2."""
        return colorize_normals(prediction.float().cpu().numpy())

    def key(self, prediction: torch.Tensor) -> Key:
        """The colours of normals along the camera frame's axes (RGB = 255·(n+1)/2)."""
        colors = colorize_normals(np.eye(3, dtype=np.float32)[:, :, None])[:, 0]  # one pixel per axis
        return Key(
            swatches=[(f"n = {axis}", tuple(int(c) for c in color)) for axis, color in zip(("+x", "+y", "+z"), colors)],
            note="RGB = 255·(n+1)/2",
        )

    def flip_horizontal(self, target: torch.Tensor | Stored) -> torch.Tensor | Stored:
        """Mirror left–right and negate the x component (``[3,H,W]`` or ``[B,3,H,W]``, or ``Stored``)."""
        if isinstance(target, Stored):
            return target.flip(negate=(0,))
        flipped = target.flip(-1)  # a copy
        flipped[..., 0, :, :] *= -1
        return flipped
