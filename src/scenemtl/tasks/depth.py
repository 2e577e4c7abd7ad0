"""Metric depth estimation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from scenemtl.fileio import Stored, read_mat, read_npy
from scenemtl.errors import ConfigError, DataError
from scenemtl.metrics import DepthMetric
from scenemtl.metrics.base import POOLINGS
from scenemtl.tasks.base import PREDICTION_FIX, Task, masked_mean
from scenemtl.tasks.colors import Key, colorize_scalar, ramp_colors
from scenemtl.tasks.registry import register_task


#: what a depth output channel means (``DepthTask``'s ``output``)
DEPTH_OUTPUTS = ("depth", "disparity", "densemtl_code")


@register_task("depth")
class DepthTask(Task):
    """Depth in metres: L1 on valid pixels (InvPT), prediction clamped ≥ 0, pixel-pooled errors.

    Invalid pixels are 0 or non-finite in the target (the contract's single marker; the seeds'
    255 / −1 encodings are converted by their loaders). Evaluation options (see ``DepthMetric``):
    ``max_depth`` caps it as TaskPrompter's 80 m; ``pooling`` 'pixel' (InvPT, ATRC), 'image'
    (DenseMTL) or 'batch' (MTAN: per test batch, averaged over batches); ``clamp: [low, high]``
    keeps pixels with low < gt < high and clamps the prediction to [low, high] (DenseMTL:
    [0.001, 80]); ``median_scaling`` scales each image's prediction by median(gt)/median(pred)
    before the clamp (DenseMTL's option, on in its DA and SDE settings).

    ``output``, what the network's channel means: 'depth' (metres, default); 'disparity' (monodepth2's
    sigmoid disparity, DenseMTL's SDE head: depth = ``1/(1/max + (1/min − 1/max)·sigmoid(x))`` with
    ``depth_range: [min, max]``, default [0.1, 100] m); 'densemtl_code' (DenseMTL's supervised
    depth head, trained on "normalised inverse depth" ``65536/(100·m + 1)``: depth =
    ``(65536/x − 1)/100``, x floored at 1e-6), for its released weights. The loss is the L1 in
    metres of the decoded depth in every case (self-supervised depth replaces it: see
    ``scenemtl.settings``). ``legacy_offset`` (DenseMTL's numbers): the ground truth is evaluated
    0.99 m short (``DepthMetric.gt_offset``) and a 'densemtl_code' output is decoded as DenseMTL does,
    ``655.36/x − 1``; a 'disparity' output stays metric, as in DenseMTL's SDE.
    """

    out_channels = 1
    pad_value = 0.0

    def __init__(
        self,
        name: str = "depth",
        max_depth: float | None = None,
        pooling: str = "pixel",
        clamp: list[float] | None = None,
        median_scaling: bool = False,
        output: str = "depth",
        depth_range: list[float] | None = None,
        legacy_offset: bool = False,
    ) -> None:
        super().__init__(name)
        if output not in DEPTH_OUTPUTS:
            raise ConfigError(f"tasks.{name}.output must be one of {list(DEPTH_OUTPUTS)}, got {output!r}")
        low, high = (0.1, 100.0) if depth_range is None else (depth_range[0], depth_range[1])
        if depth_range is not None and not (len(depth_range) == 2 and 0 < low < high):
            raise ConfigError(f"tasks.{name}.depth_range must be [min, max] in metres with 0 < min < max, got {depth_range!r}")
        self.output, self.depth_range, self.legacy_offset = output, (float(low), float(high)), bool(legacy_offset)
        if pooling not in POOLINGS:
            raise ConfigError(f"tasks.{name}.pooling must be 'pixel', 'image' or 'batch', got {pooling!r}")
        bounds: tuple[float, float] | None = None
        if clamp is not None:
            numbers = (
                isinstance(clamp, (list, tuple))
                and len(clamp) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in clamp)
            )
            if not (numbers and 0 <= clamp[0] < clamp[1]):
                raise ConfigError(
                    f"tasks.{name}.clamp must be [low, high] in metres with 0 <= low < high (DenseMTL: [0.001, 80]), got {clamp!r}"
                )
            bounds = (float(clamp[0]), float(clamp[1]))
        if not isinstance(median_scaling, bool):
            raise ConfigError(f"tasks.{name}.median_scaling must be true or false, got {median_scaling!r}")
        self.max_depth, self.pooling, self.clamp, self.median_scaling = max_depth, pooling, bounds, median_scaling

    def check_target(self, target: torch.Tensor, sample: bool = False) -> str | None:
        """Negative values; for one sample, also no valid (positive) pixel at all."""
        finite = target[torch.isfinite(target)]
        if bool((finite < 0).any()):
            return f"{self.name} has negative values (min {float(finite.min()):.3g})"
        if sample and not bool((finite > 0).any()):
            return f"{self.name} has no valid (positive) pixel"
        return None

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        """Pixels with a finite depth > 0."""
        return (torch.isfinite(target) & (target > 0))[:, 0]

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean absolute error over valid pixels (of the decoded depth, for the other ``output`` kinds)."""
        valid = self.valid_mask(target)[:, None]
        clean = torch.where(valid, target, torch.zeros_like(target))
        depth = logits.float() if self.output == "depth" else self.decode(logits)
        return masked_mean((depth - clean).abs(), valid)

    def disparity(self, logits: torch.Tensor) -> torch.Tensor:
        """The sigmoid disparity in [0, 1] of a 'disparity' output."""
        return torch.sigmoid(logits.float())

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Depth in metres of the output (see ``output``), unclamped."""
        x = logits.float()
        if self.output == "disparity":
            low, high = 1.0 / self.depth_range[1], 1.0 / self.depth_range[0]
            return 1.0 / (low + (high - low) * torch.sigmoid(x))
        if self.output == "densemtl_code":
            x = x.clamp_min(1e-6)
            return 655.36 / x - 1.0 if self.legacy_offset else (65536.0 / x - 1.0) / 100.0
        return x

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Depth ``[B,1,H,W]`` in metres, clamped to be non-negative."""
        return self.decode(logits).clamp_min(0)

    def metric(self) -> DepthMetric:
        """Depth errors under this task's evaluation options."""
        return DepthMetric(
            max_depth=self.max_depth,
            pooling=self.pooling,
            clamp=self.clamp,
            median_scaling=self.median_scaling,
            gt_offset=0.99 if self.legacy_offset else 0.0,
        )

    def output_prior(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The output that decodes to the mean valid training depth."""
        mean = self.valid_mean(targets)
        if self.output == "disparity":
            low, high = 1.0 / self.depth_range[1], 1.0 / self.depth_range[0]
            disparity = min(max((1.0 / mean - low) / (high - low), 1e-4), 1 - 1e-4)
            return torch.tensor([math.log(disparity / (1 - disparity))])
        if self.output == "densemtl_code":
            return torch.tensor([65536.0 / (100.0 * mean + 1.0)])
        return torch.tensor([mean])

    output_kind = "metric_depth"
    prediction_extensions: tuple[str, ...] = (".npy", ".mat")

    def read_prediction(self, path: Path) -> torch.Tensor:
        """An H×W array in metres: ``.npy``, or ``.mat`` with a ``depth`` array (the seeds' save format)."""
        what = f"{self.name} prediction"
        if path.suffix == ".mat":
            content = read_mat(path, f"{what} (.mat with a 'depth' array)", PREDICTION_FIX)
            if "depth" not in content:
                raise DataError(f"{path}: no 'depth' array in this .mat file (found {sorted(content)}); {PREDICTION_FIX}")
            depth = np.asarray(content["depth"], dtype=np.float32)
        else:
            depth = np.asarray(read_npy(path, f"{what} (.npy in metres)", PREDICTION_FIX), dtype=np.float32)
        depth = depth[..., 0] if depth.ndim == 3 and depth.shape[-1] == 1 else depth
        if depth.ndim != 2:
            raise DataError(f"{path}: a depth prediction must be H×W, got shape {depth.shape}; {PREDICTION_FIX}")
        return torch.from_numpy(np.ascontiguousarray(depth))[None, None]

    def colorize(self, prediction: torch.Tensor) -> np.ndarray:
        """Depth through a colour ramp, near dark, far bright, scaled to the map's own range."""
        values = prediction[0].float().cpu().numpy()
        values = np.where(values > 0, values, np.nan)
        return colorize_scalar(values)

    #: the unit of the values, for the colour bar
    unit = "m"

    def key(self, prediction: torch.Tensor) -> Key:
        """A colour bar from the map's nearest to its farthest value (the range ``colorize`` spreads)."""
        values = prediction[0].float().cpu().numpy()
        finite = values[np.isfinite(values) & (values > 0)]
        if not finite.size:
            return Key(ramp=ramp_colors("scalar"), note="no positive value to show")
        low, high = float(finite.min()), float(finite.max())
        return Key(ramp=ramp_colors("scalar"), low=f"{low:.3g} {self.unit}".strip(), high=f"{high:.3g} {self.unit}".strip())

    def resample(
        self, target: torch.Tensor | Stored, rows: torch.Tensor, cols: torch.Tensor, zoom: float, adjust_values: bool
    ) -> torch.Tensor | Stored:
        """Nearest resampling; with ``adjust_values``, depth is divided by the zoom in float32 (as the seeds do)."""
        resized = super().resample(target, rows, cols, zoom, adjust_values)
        if not adjust_values:
            return resized
        return (resized.decode() if isinstance(resized, Stored) else resized) / zoom


@register_task("inverse_depth")
class InverseDepthTask(DepthTask):
    """Inverse depth (disparity-like values in any unit): L1 on valid pixels, the depth errors on its values.

    MTAN's preprocessed Cityscapes stores rescaled stereo disparity (about 0..0.49) in its
    ``depth`` folder: the values grow as things come closer and are not metres, so errors
    computed on them (MTAN reports the absolute and relative error) cannot be compared with
    metric depth errors. Reading them as depth is a known pitfall (lorenmt/mtan issues #15 and
    #25); a task of its own keeps the two apart in configs, reports and checkpoints.

    Invalid pixels are 0 or non-finite, as for depth. ``max_value``: evaluate only values below it
    (TaskPrompter's Cityscapes-3D evaluation keeps disparities 0 < d < 80 px, its ``depth_max`` of 80
    meant for metres, so pixels nearer than about 6 m are not scored). Under a random zoom with
    ``adjust_values`` the values are multiplied by the zoom (an object shown ``z`` times larger
    looks ``z`` times closer: depth divides by ``z``, inverse depth multiplies).
    """

    prediction_extensions = (".npy",)
    unit = "(inverse)"
    output_kind = "inverse_depth"

    def __init__(self, name: str = "inverse_depth", pooling: str = "pixel", max_value: float | None = None) -> None:
        super().__init__(name, max_depth=max_value, pooling=pooling)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """The output's values (inverse depth as they are)."""
        return logits.float()

    def resample(
        self, target: torch.Tensor | Stored, rows: torch.Tensor, cols: torch.Tensor, zoom: float, adjust_values: bool
    ) -> torch.Tensor | Stored:
        """Nearest resampling; with ``adjust_values``, inverse depth is multiplied by the zoom."""
        resized = Task.resample(self, target, rows, cols, zoom, adjust_values)
        if not adjust_values:
            return resized
        return (resized.decode() if isinstance(resized, Stored) else resized) * zoom

    def colorize(self, prediction: torch.Tensor) -> np.ndarray:
        """Inverse depth through the colour ramp: far dark, near bright, scaled to the map's own range."""
        return super().colorize(prediction)
