"""PAD-Net: parameter counts from the official layer shapes, deep supervision, distillation, options."""

import pytest
import torch
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.padnet import padnet
from scenemtl.tasks import build_task
from scenemtl.models.base import SharedCut

NYUD = {"semseg": [f"c{i}" for i in range(40)]}
PASCAL = {"semseg": [f"c{i}" for i in range(21)], "human_parts": [f"p{i}" for i in range(7)]}


def count(module):
    return sum(p.numel() for p in module.parameters())


def tasks_of(names, classes=None):
    return {n: build_task(n, {}, classes or {"semseg": ["a", "b", "c"]}) for n in names}


def tiny(names=("semseg", "depth", "normals"), **options):
    config = ModelConfig(arch="padnet", backbone={"name": "test_resnet"})
    return padnet(config, tasks_of(names), **{"head_channels": 8, "decoder_stride": 8, **options})


def test_parameter_count_matches_the_official_hrnet18_padnet():
    config = ModelConfig(arch="padnet", backbone={"name": "hrnet_w18_small_v2"})
    official = {"head_channels": 256, "decoder_stride": 4}
    nyud = padnet(config, tasks_of(("semseg", "depth", "normals", "edge"), NYUD), **official)
    # backbone: the official seg_hrnet hrnet_w18 (HRNet-W18-small-v2 layers) counted layer by layer
    assert count(nyud.backbone) == 3_860_720
    # fuse (HighResolutionFuse): 1x1 conv 270->270 with bias + BN = 72,900 + 270 + 540 = 73,710
    assert count(nyud.fuse) == 73_710
    # Bottleneck(i, 64) = i*64 + 128 + 9*64^2 + 128 + 64*256 + 512 (+ i*256 + 512 projection when i != 256):
    # Bottleneck(270) = 17,280 + 128 + 36,864 + 128 + 16,384 + 512 + 69,120 + 512 = 140,928; Bottleneck(256) = 70,400
    # initial per task: 140,928 + 70,400 + 257*o  (o = 40, 1, 3, 1 outputs) -> 4 * 211,328 + 257 * 45 = 856,877
    assert count(nyud.initial) + count(nyud.initial_out) == 856_877
    # distillation: 4*3 ordered pairs x 2 convs 3x3 256->256 without bias = 12 * 1,179,648 = 14,155,776
    assert count(nyud.distillation) == 14_155_776
    # final heads: per task 2 * 70,400 + 257*o -> 4 * 140,800 + 257 * 45 = 574,765
    assert count(nyud.heads) == 574_765
    assert count(nyud) == 3_860_720 + 73_710 + 856_877 + 14_155_776 + 574_765  # 19,521,848
    # PASCAL (semseg 21, parts 7, saliency 1, normals 3, edge 1): 5 * 211,328 + 257*33 = 1,065,121 initial,
    # 20 * 1,179,648 = 23,592,960 distillation, 5 * 140,800 + 257*33 = 712,481 heads
    pascal = padnet(config, tasks_of(("semseg", "human_parts", "saliency", "normals", "edge"), PASCAL), **official)
    assert count(pascal) - count(pascal.backbone) == 73_710 + 1_065_121 + 23_592_960 + 712_481


def test_hrnet_backbone_computes_like_the_segmentation_hrnet():
    config = ModelConfig(arch="padnet", backbone={"name": "hrnet_w18_small_v2"})
    model = padnet(config, tasks_of(("semseg", "depth")), head_channels=8, decoder_stride=4)
    upsamples = [m for m in model.backbone.modules() if isinstance(m, nn.Upsample)]
    assert upsamples and all(m.mode == "bilinear" for m in upsamples)
    assert all(m.momentum == 0.01 for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_initial_predictions_supervise_and_distillation_mixes_tasks():
    torch.manual_seed(0)
    model = tiny().eval()
    image = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        out = model(image)
        assert list(out.aux) == ["initial"]
        assert {t: v.shape for t, v in out.aux["initial"].items()} == {
            "semseg": (1, 3, 32, 40),
            "depth": (1, 1, 32, 40),
            "normals": (1, 3, 32, 40),
        }
        # one gate per ordered pair of tasks
        assert sum(len(g) for g in model.distillation.self_attention.values()) == 6
        # semseg's final output reads depth's initial branch; semseg's initial prediction does not
        for p in model.initial["depth"].parameters():
            p.add_(0.5)
        changed = model(image)
    assert torch.equal(changed.aux["initial"]["semseg"], out.aux["initial"]["semseg"])
    assert not torch.allclose(changed.final["semseg"], out.final["semseg"])


def test_shared_parameters_shared_cut_and_output_bias():
    model = tiny()
    shared = {id(p) for p in model.shared_parameters()}
    assert shared == {id(p) for p in [*model.backbone.parameters(), *model.fuse.parameters()]}
    out = SharedCut(model)(torch.randn(2, 3, 32, 32))
    assert len(out.features) == 1 and out.features[0].is_leaf and out.feature_sources[0].grad_fn is not None
    model.init_output_bias({"depth": torch.tensor([1.5])})
    assert model.heads["depth"][-1].bias.item() == 1.5 and model.initial_out["depth"].bias.item() == 1.5


def test_options_and_errors():
    # the ResNet variant of the official code: last stage only, no fuse layer
    config = ModelConfig(arch="padnet", backbone={"name": "test_resnet"})
    model = padnet(config, tasks_of(("semseg", "depth")), fuse=False, head_channels=8, decoder_stride=32)
    assert isinstance(model.fuse, nn.Identity) and model.levels == [4]
    with pytest.raises(ConfigError, match="at least two tasks"):
        tiny(("depth",))
    with pytest.raises(ConfigError, match="multiple of 4"):
        padnet(config, tasks_of(("semseg", "depth")), head_channels=6)
