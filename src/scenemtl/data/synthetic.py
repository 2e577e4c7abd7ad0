"""Synthetic scenes: the built-in dataset, rendered procedurally, no download needed."""

from __future__ import annotations

import numpy as np
import torch

from scenemtl.data.base import DatasetInfo, DenseDataset, image_to_tensor, register_dataset
from scenemtl.data.render import CLASS_NAMES, SceneConfig, render_scene
from scenemtl.errors import ConfigError

_SPLIT_CODES = {"train": 0, "val": 1}


@register_dataset("synthetic")
class SyntheticScenes(DenseDataset):
    """Rooms with spheres, boxes and cylinders, ray-cast with exact depth, normals, edges and saliency.

    Sample ``i`` of a split is a pure function of ``(seed, split, i)``; train and val scenes come
    from disjoint random streams. Rendered samples are kept in memory (``cache``) because a
    model step on a small network costs about as much as a render.
    """

    info = DatasetInfo(
        name="synthetic",
        tasks=("semseg", "depth", "normals", "edge", "saliency"),
        class_names={"semseg": list(CLASS_NAMES)},
    )

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        tasks: list[str] | None = None,
        height: int = 96,
        width: int = 128,
        num_train: int = 800,
        num_val: int = 160,
        seed: int = 0,
        min_objects: int = 3,
        max_objects: int = 6,
        cache: bool = True,
    ) -> None:
        super().__init__(root, split, list(tasks) if tasks is not None else list(self.info.tasks))
        if height < 8 or width < 8:
            raise ConfigError(f"data.options: synthetic scenes need height and width ≥ 8, got {height}×{width}")
        self.config = SceneConfig(height=height, width=width, min_objects=min_objects, max_objects=max_objects)
        self.length = num_train if split == "train" else num_val
        self.seed = seed
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> dict[str, np.ndarray]:
        """The rendered arrays of scene ``index`` (from the cache when available)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic {self.split} scenes")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        arrays = render_scene(rng, self.config)
        if self._cache is not None:
            self._cache[index] = arrays
        return arrays

    def sample(self, index: int) -> dict:
        """One scene in the data contract."""
        arrays = self.render(index)
        sample: dict = {"image": image_to_tensor(arrays["image"])}
        converters = {
            "semseg": lambda: torch.from_numpy(arrays["semseg"].astype(np.int64)),
            "depth": lambda: torch.from_numpy(arrays["depth"].astype(np.float32))[None],
            "normals": lambda: torch.from_numpy(np.ascontiguousarray(arrays["normals"].transpose(2, 0, 1))).float(),
            "edge": lambda: torch.from_numpy(arrays["edge"].astype(np.float32))[None],
            "saliency": lambda: torch.from_numpy(arrays["saliency"].astype(np.float32))[None],
        }
        for task in self.tasks:
            sample[task] = converters[task]()
        height, width = arrays["semseg"].shape
        sample["meta"] = {"id": f"{self.split}_{index:05d}", "size": (height, width), "labelled": list(self.tasks)}
        return sample
