"""Datasets (registered by name), joint transforms and loading."""

from scenemtl.data import nyuv2_13 as _nyuv2_13  # noqa: F401  (registers 'nyuv2_13')
from scenemtl.data import cityscapes as _cityscapes  # noqa: F401  (registers the cityscapes* datasets)
from scenemtl.data import cityscapes3d as _cityscapes3d  # noqa: F401  (registers 'cityscapes3d')
from scenemtl.data import decathlon as _decathlon  # noqa: F401  (registers 'decathlon')
from scenemtl.data import nyud as _nyud  # noqa: F401  (registers 'nyud')
from scenemtl.data import pascal_context as _pascal_context  # noqa: F401  (registers 'pascal_context')
from scenemtl.data import synthetic as _synthetic  # noqa: F401  (registers 'synthetic')
from scenemtl.data import synthetic_domains as _synthetic_domains  # noqa: F401  (registers 'synthetic_domains')
from scenemtl.data import synthia as _synthia  # noqa: F401  (registers 'synthia')
from scenemtl.data import vkitti2 as _vkitti2  # noqa: F401  (registers 'vkitti2')
from scenemtl.data.base import DATASETS, DatasetInfo, DenseDataset, register_dataset

__all__ = ["DATASETS", "DatasetInfo", "DenseDataset", "register_dataset"]
