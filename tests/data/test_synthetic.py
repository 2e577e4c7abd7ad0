"""The synthetic dataset follows the data contract and is deterministic per (seed, split, index)."""

import numpy as np
import pytest
import torch

from scenemtl.data.render import SceneConfig, render_scene
from scenemtl.data.synthetic import SyntheticScenes
from scenemtl.errors import ConfigError


def test_sample_follows_the_data_contract():
    sample = SyntheticScenes(split="train", height=24, width=32, num_train=2)[0]
    assert sample["image"].shape == (3, 24, 32) and sample["image"].dtype == torch.uint8
    assert sample["semseg"].shape == (24, 32) and sample["semseg"].dtype == torch.int64
    assert sample["depth"].shape == (1, 24, 32) and bool((sample["depth"] > 0).all())
    assert sample["normals"].shape == (3, 24, 32)
    assert torch.allclose(sample["normals"].norm(dim=0), torch.ones(24, 32), atol=1e-5)
    assert set(sample["edge"].unique().tolist()) <= {0.0, 1.0}
    assert set(sample["saliency"].unique().tolist()) <= {0.0, 1.0}
    assert sample["meta"]["id"] == "train_00000" and sample["meta"]["size"] == (24, 32)


def test_deterministic_and_splits_differ():
    a = SyntheticScenes(split="train", height=24, width=32, num_train=3, cache=False)
    b = SyntheticScenes(split="train", height=24, width=32, num_train=3, cache=False)
    v = SyntheticScenes(split="val", height=24, width=32, num_val=3)
    assert torch.equal(a[2]["image"], b[2]["image"]) and torch.equal(a[2]["normals"], b[2]["normals"])
    assert not torch.equal(a[0]["image"], a[1]["image"])
    assert not torch.equal(a[0]["image"], v[0]["image"])
    assert not torch.equal(a[0]["image"], SyntheticScenes(split="train", height=24, width=32, seed=1)[0]["image"])


def test_only_requested_tasks_and_clear_errors():
    sample = SyntheticScenes(split="val", tasks=["depth"], height=16, width=16)[0]
    assert set(sample) == {"image", "depth", "meta"}
    with pytest.raises(ConfigError, match="human_parts"):
        SyntheticScenes(split="train", tasks=["human_parts"])
    with pytest.raises(ConfigError, match="Did you mean 'val'"):
        SyntheticScenes(split="vall")
    with pytest.raises(IndexError):
        SyntheticScenes(split="val", num_val=2)[2]


def test_default_options_render_the_seeded_scene() -> None:
    """The default options (no frames, source domain) render ``render_scene`` of the stream ``(seed, split, index)``."""
    sample = SyntheticScenes(split="val", height=24, width=32, num_val=4, seed=3)[2]
    arrays = render_scene(np.random.default_rng([3, 1, 2]), SceneConfig(height=24, width=32))
    assert np.array_equal(sample["image"].permute(1, 2, 0).numpy(), arrays["image"])
    assert np.array_equal(sample["depth"][0].numpy(), arrays["depth"])
    assert set(sample) == {"image", "semseg", "depth", "normals", "edge", "saliency", "meta"}
