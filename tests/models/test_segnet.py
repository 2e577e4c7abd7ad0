"""MTAN's SegNet family: parameter counts as the paper's scripts, shared/task-specific split, sizes."""

import pytest
import torch

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError, ScenemtlError
from scenemtl.models import build_model
from scenemtl.tasks import build_task
from scenemtl.models.base import SharedCut

NYU13 = {"semseg": [f"class{i}" for i in range(13)]}


def nyu_tasks():
    return {
        "semseg": build_task("semseg", {}, NYU13),
        "depth": build_task("depth", {}),
        "normals": build_task("normals", {"loss": "cosine"}),
    }


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_mtan():
    tasks = nyu_tasks()
    # MTAN's scripts divide every count by 24,981,069: the single-task segmentation SegNet
    single = build_model(ModelConfig(arch="segnet"), {"semseg": tasks["semseg"]})
    assert count(single) == 24_981_069
    mtan = build_model(ModelConfig(arch="mtan"), tasks)
    assert count(mtan) == 44_229_073  # the paper's 1.77 × (its script adds 3 for logsigma)
    assert round(count(mtan) / 24_981_069, 2) == 1.77
    stl = build_model(ModelConfig(arch="stl", options={"per_task": "segnet"}), tasks)
    assert round(count(stl) / 24_981_069, 2) == 3.00
    shared = {id(p) for p in mtan.shared_parameters()}
    heads = [n for n, p in mtan.named_parameters() if id(p) not in shared]
    assert heads and all(n.startswith(("encoder_att.", "decoder_att.", "heads.")) for n in heads)


def test_segnet_options_are_checked():
    tasks = nyu_tasks()
    with pytest.raises(ConfigError, match="variant"):
        build_model(ModelConfig(arch="segnet", options={"variant": "huge"}), tasks)
    with pytest.raises(ConfigError, match="five positive"):
        build_model(ModelConfig(arch="mtan", options={"filters": [4, 8]}), tasks)
    model = build_model(ModelConfig(arch="segnet", options={"filters": [4, 4, 8, 8, 8]}), tasks)
    with pytest.raises(ScenemtlError, match="at least 32"):
        model(torch.zeros(1, 3, 24, 64))


def test_segnet_exposes_its_shared_representation_when_cut():
    tasks = nyu_tasks()
    model = build_model(ModelConfig(arch="segnet", options={"filters": [4, 4, 8, 8, 8]}), tasks)
    assert model(torch.zeros(1, 3, 32, 32)).features == ()
    output = SharedCut(model)(torch.zeros(1, 3, 32, 32))
    assert len(output.features) == 1 and output.features[0].is_leaf and output.feature_sources[0].grad_fn is not None
