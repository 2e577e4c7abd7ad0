"""Streaming metrics (update / sync / compute) and the multi-task Δm."""

from scenemtl.metrics.base import StreamingMetric
from scenemtl.metrics.boundary import BoundaryMetric
from scenemtl.metrics.delta import delta_m, relative_change
from scenemtl.metrics.depth import DepthMetric
from scenemtl.metrics.loss import LossMetric
from scenemtl.metrics.normals import NormalsMetric, angular_error
from scenemtl.metrics.saliency import SaliencyMetric
from scenemtl.metrics.segmentation import ConfusionMatrixMetric

__all__ = [
    "BoundaryMetric",
    "ConfusionMatrixMetric",
    "DepthMetric",
    "LossMetric",
    "NormalsMetric",
    "SaliencyMetric",
    "StreamingMetric",
    "angular_error",
    "delta_m",
    "relative_change",
]
