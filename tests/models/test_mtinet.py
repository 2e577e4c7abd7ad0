"""MTI-Net: parameter counts from the official layer shapes, scales, feature propagation, options."""

import pytest
import torch
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.mtinet import FeaturePropagation, mtinet
from scenemtl.tasks import build_task
from scenemtl.models.base import SharedCut

NYUD = {"semseg": [f"c{i}" for i in range(40)]}
PASCAL = {"semseg": [f"c{i}" for i in range(21)], "human_parts": [f"p{i}" for i in range(7)]}


def count(module):
    return sum(p.numel() for p in module.parameters())


def tasks_of(names, classes=None):
    return {n: build_task(n, {}, classes or {"semseg": ["a", "b", "c"]}) for n in names}


def tiny(names=("semseg", "depth", "normals"), decoder_stride=4, **options):
    config = ModelConfig(arch="mtinet", backbone={"name": "test_resnet"})
    return mtinet(config, tasks_of(names), **{"task_channels": 8, "decoder_stride": decoder_stride, **options})


def test_parameter_count_matches_the_official_hrnet18_mtinet():
    config = ModelConfig(arch="mtinet", backbone={"name": "hrnet_w18_small_v2"})
    model = mtinet(config, tasks_of(("semseg", "depth", "normals", "edge"), NYUD), decoder_stride=4)
    assert model.task_channels == [18, 36, 72, 144]
    # backbone: the official seg_hrnet hrnet_w18 (HRNet-W18-small-v2 layers) counted layer by layer
    assert count(model.backbone) == 3_860_720
    # BasicBlock(i, o) = 9io + 2o + 9o^2 + 2o (+ io + 2o projection when i != o); 4 tasks, o = 40+1+3+1 = 45 outputs.
    # initial, per task: scale 0 BB(18+36, 18) + BB(18, 18) = 18,648; scale 1 BB(36+72, 36) + BB(36, 36) = 74,232;
    # scale 2 BB(72+144, 72) + BB(72, 72) = 296,208; scale 3 2 * BB(144, 144) = 747,648; plus 1x1 decoders
    # (c+1)*o: 4 * 1,136,736 + 45 * (19 + 37 + 73 + 145) = 4,559,274
    assert count(model.initial) == 4_559_274
    # FPM at scales 1..3 (C = 36, 72, 144; S = 4C; q = S/4 = C): BB(S, q) + BB(q, q) + 1x1 conv q->S with bias
    # + BB(S, C) + 4 SE(C) (C*(C//16) + C//16 + (C//16)*C + C): 156,968 + 626,128 + 2,502,180 = 3,285,276
    assert count(model.fpm) == 3_285_276
    # distillation: 12 ordered pairs x 2 convs 3x3 C->C without bias, C = 18, 36, 72, 144: 12 * 18 * 27,540 = 5,948,640
    assert count(model.distillation) == 5_948_640
    # heads: 1x1 conv 270->270 with bias + BN + 1x1 conv 270->o: 4 * 73,710 + 271 * 45 = 307,035
    assert count(model.heads) == 307_035
    assert count(model) == 3_860_720 + 14_100_225
    # PASCAL, 5 tasks (semseg 21, parts 7, saliency 1, normals 3, edge 1), by the same arithmetic
    pascal = mtinet(config, tasks_of(("semseg", "human_parts", "saliency", "normals", "edge"), PASCAL), decoder_stride=4)
    assert count(pascal) - count(pascal.backbone) == 20_633_451


def test_initial_predictions_at_every_scale():
    torch.manual_seed(0)
    model = tiny().eval()  # test_resnet levels at strides 4, 8, 16, 32
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 47))
    assert list(out.aux) == ["scale_0", "scale_1", "scale_2", "scale_3"]
    for stage in out.aux.values():
        assert {t: tuple(v.shape) for t, v in stage.items()} == {
            "semseg": (1, 3, 33, 47),
            "depth": (1, 1, 33, 47),
            "normals": (1, 3, 33, 47),
        }
    assert len(model.fpm) == 3 and len(model.distillation) == 4
    with torch.no_grad():  # decoder_stride 8: the levels at strides 8, 16, 32
        assert list(tiny(decoder_stride=8).eval()(torch.randn(1, 3, 32, 32)).aux) == ["scale_0", "scale_1", "scale_2"]


def test_feature_propagation_softmax_groups_consecutive_channels_as_the_official_code():
    fpm = FeaturePropagation(["a", "b"], channels=2)
    # logits rising with the channel index: each softmax group of 2 consecutive channels picks its second one
    fpm.non_linear = nn.Conv2d(4, 4, 1, bias=True)
    with torch.no_grad():
        fpm.non_linear.weight.zero_()
        fpm.non_linear.bias.copy_(torch.tensor([0.0, 100.0, 0.0, 100.0]))
    seen = []
    fpm.dimensionality_reduction.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    a, b = torch.ones(1, 2, 3, 3), 2 * torch.ones(1, 2, 3, 3)
    fpm({"a": a, "b": b})
    # concatenation [a0, a1, b0, b1], groups (a0, a1) and (b0, b1): not a softmax across the two tasks
    assert torch.allclose(seen[0][0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0, 2.0]))


def test_coarser_scales_reach_the_finest_and_tasks_reach_each_other():
    torch.manual_seed(0)
    model = tiny().eval()
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(image)
        for p in model.initial[3].refinement["depth"].parameters():
            p.add_(0.5)
        after = model(image)
    # depth's coarsest branch changes semseg's finest initial prediction (through the FPMs) and its final output
    assert not torch.allclose(after.aux["scale_0"]["semseg"], before.aux["scale_0"]["semseg"])
    assert torch.equal(after.aux["scale_3"]["semseg"], before.aux["scale_3"]["semseg"])
    assert not torch.allclose(after.final["semseg"], before.final["semseg"])


def test_shared_parameters_shared_cut_and_output_bias():
    model = tiny()
    assert {id(p) for p in model.shared_parameters()} == {id(p) for p in model.backbone.parameters()}
    out = SharedCut(model)(torch.randn(2, 3, 32, 32))
    assert len(out.features) == 4 and all(f.is_leaf for f in out.features)
    model.init_output_bias({"depth": torch.tensor([0.7])})
    biases = [model.heads["depth"].last_layer[-1].bias] + [m.decoders["depth"].bias for m in model.initial]
    assert all(torch.allclose(b, torch.tensor([0.7])) for b in biases)


def test_options_and_errors():
    assert tiny(task_channels=[4, 8, 12, 16]).task_channels == [4, 8, 12, 16]
    with pytest.raises(ConfigError, match="task_channels"):
        tiny(task_channels=[8, 8])
    with pytest.raises(ConfigError, match="task_channels"):
        tiny(task_channels=0)
    with pytest.raises(ConfigError, match="at least two tasks"):
        tiny(("depth",))
    config = ModelConfig(arch="mtinet", backbone={"name": "test_resnet", "fuse": "concat"})
    with pytest.raises(ConfigError, match="at least two backbone levels"):
        mtinet(config, tasks_of(("semseg", "depth")), decoder_stride=4)
