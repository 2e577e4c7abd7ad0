"""Monocular 3D detection: boxes, the FCOS3D-style head, target assignment, rotated NMS and Cityscapes-3D scoring."""

from scenemtl.detection.boxes import DETECTION_CLASSES, Boxes3D

__all__ = ["DETECTION_CLASSES", "Boxes3D"]
