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


TINY = [4, 8, 8, 16, 16]


def test_dense_and_stan_parameter_counts_match_mtans_scripts():
    tasks = nyu_tasks()
    # lorenmt/mtan im2im_pred/model_segnet_dense.py prints 123,743,995 (4.95 × the single-task
    # SegNet): 3 of them are its logsigma (uncertainty weighting lives in the balancer here)
    with torch.device("meta"):  # full size, no memory
        dense = build_model(ModelConfig(arch="segnet_dense"), tasks)
    assert count(dense) == 123_743_995 - 3
    assert round((count(dense) + 3) / 24_981_069, 2) == 4.95
    # the unused 64 → 64 → 13 last block of the shared decoder is counted, as in the script
    assert count(dense.decoder_block[0]) == (64 * 64 * 9 + 64) + 2 * 64 + (64 * 13 * 9 + 13) + 2 * 13
    # im2im_pred/model_segnet_stan.py prints, with --task semantic / depth / normal:
    stan = {"semseg": 38_185_805, "depth": 38_185_025, "normals": 38_185_155}
    for name, expected in stan.items():
        with torch.device("meta"):
            assert count(build_model(ModelConfig(arch="stan"), {name: tasks[name]})) == expected, name
    assert round(stan["semseg"] / 24_981_069, 2) == 1.53
    # the heads differ by their 1×1 convolution only: 64 · 13 + 13 vs 64 · 1 + 1 vs 64 · 3 + 3
    assert stan["semseg"] - stan["depth"] == 64 * 12 + 12 and stan["normals"] - stan["depth"] == 64 * 2 + 2
    with torch.device("meta"):
        references = build_model(ModelConfig(arch="stl", options={"per_task": "stan"}), tasks)
    assert count(references) == sum(stan.values())


def test_dense_and_stan_forward_shapes_at_odd_sizes():
    tasks = nyu_tasks()
    image = torch.randn(2, 3, 40, 56)  # not multiples of 32: unpooling lands on the encoder's sizes
    dense = build_model(ModelConfig(arch="segnet_dense", options={"filters": TINY}), tasks)
    output = dense(image)
    assert {name: tuple(v.shape) for name, v in output.final.items()} == {
        "semseg": (2, 13, 40, 56),
        "depth": (2, 1, 40, 56),
        "normals": (2, 3, 40, 56),
    }
    stan = build_model(ModelConfig(arch="stan", options={"filters": TINY}), {"depth": tasks["depth"]})
    assert tuple(stan(image).final["depth"].shape) == (2, 1, 40, 56)
    references = build_model(ModelConfig(arch="stl", options={"per_task": "stan", "filters": TINY}), tasks)
    assert {name: v.shape[1] for name, v in references(image).final.items()} == {"semseg": 13, "depth": 1, "normals": 3}


def test_dense_gradients_of_one_task_reach_the_shared_net_and_its_own_only():
    torch.manual_seed(0)
    tasks = nyu_tasks()
    model = build_model(ModelConfig(arch="segnet_dense", options={"filters": TINY}), tasks)
    output = model(torch.randn(2, 3, 32, 32))
    (output.final["depth"] * torch.randn_like(output.final["depth"])).mean().backward()
    reached = {name for name, p in model.named_parameters() if p.grad is not None}
    own = {
        name
        for name, _ in model.named_parameters()
        if name.startswith(("encoder_block_t.depth.", "decoder_block_t.depth.", "heads.depth."))
    }
    shared = {name for name, p in model.named_parameters() if any(p is q for q in model.shared_parameters())}
    assert own and shared and reached == own | shared
    assert not any(name.split(".")[1] in ("semseg", "normals") for name in reached)
    # the unused 13-channel block of the shared decoder: not shared, not trained, not run
    unused = [p for p in model.decoder_block[0].parameters()]
    assert unused and not any(p.requires_grad for p in unused)
    assert not {id(p) for p in unused} & {id(p) for p in model.shared_parameters()}
    assert set(model.output_layers()) == set(tasks)


def test_stan_has_one_attention_branch_and_refuses_several_tasks():
    tasks = nyu_tasks()
    stan = build_model(ModelConfig(arch="stan", options={"filters": TINY}), {"normals": tasks["normals"]})
    assert list(stan.encoder_att) == list(stan.decoder_att) == list(stan.heads) == ["normals"]
    references = build_model(ModelConfig(arch="stl", options={"per_task": "stan", "filters": TINY}), tasks)
    assert all(list(network.encoder_att) == [name] for name, network in references.networks.items())
    with pytest.raises(ConfigError, match=r"'stan' takes at most 1 task, got 3 .*arch: stl, options: \{per_task: stan\}"):
        build_model(ModelConfig(arch="stan"), tasks)


def test_segnet_variants_name_the_architectures_of_mtans_other_baselines():
    tasks = nyu_tasks()
    with pytest.raises(ConfigError, match="set model.arch: segnet_dense"):
        build_model(ModelConfig(arch="segnet", options={"variant": "dense"}), tasks)
    with pytest.raises(ConfigError, match="set model.arch: stan"):
        build_model(ModelConfig(arch="segnet", options={"variant": "stan"}), tasks)
    with pytest.raises(ConfigError, match="five positive"):
        build_model(ModelConfig(arch="segnet_dense", options={"filters": [4, 8]}), tasks)
    with pytest.raises(ConfigError, match="builds its own encoder"):
        build_model(ModelConfig(arch="segnet_dense", backbone={"name": "resnet18"}), tasks)
    model = build_model(ModelConfig(arch="segnet_dense", options={"filters": TINY}), tasks)
    with pytest.raises(ScenemtlError, match="at least 32"):
        model(torch.zeros(1, 3, 24, 64))
