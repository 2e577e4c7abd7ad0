"""MTAN-DeepLabv3: parameter count of the official model at ResNet-50, dilation, attention, sharing, options."""

import pytest
import torch
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models import build_model
from scenemtl.models import mtan_deeplab as _mtan_deeplab  # noqa: F401  (registers mtan_deeplab)
from scenemtl.tasks import build_task

NYU13 = {"semseg": [f"class{i}" for i in range(13)]}


def nyu_tasks():
    return {
        "semseg": build_task("semseg", {}, NYU13),
        "depth": build_task("depth", {}),
        "normals": build_task("normals", {"loss": "cosine"}),
    }


def count(module):
    return sum(p.numel() for p in module.parameters())


def tiny(tasks, **backbone):
    return build_model(ModelConfig(arch="mtan_deeplab", backbone={"name": "test_resnet", **backbone}, options={"head_channels": 8}), tasks)


def test_parameter_count_matches_the_official_model_at_resnet50():
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="mtan_deeplab", backbone={"name": "resnet50"}, options={"head_channels": 256}), nyu_tasks())
        reference_head = DeepLabHead(2048, 13)
    # lorenmt/mtan im2im_pred/model_resnet_mtan/resnet_mtan.py with 13/1/3 outputs:
    # ResNet-50 without fc: 23,508,032
    assert count(model.backbone) == 23_508_032
    # encoder_block_att, bottlenecks 256→128→512, 512→256→1024, 1024→512→2048 with 1×1 projections:
    # (32,768 + 147,456 + 65,536 + 131,072 + BN 2·(128+128+512+512)) = 379,392; 1,512,448; 6,039,552
    assert [count(b) for b in model.encoder_block_att] == [379_392, 1_512_448, 6_039_552]
    # attention per task: att_layer(256, 64, 256) 33,728; (1024, 128, 512) 198,528;
    # (2048, 256, 1024) 790,272; (4096, 512, 2048) 3,153,408 → 4,175,936 per task
    assert [count(a) for a in model.encoder_att["semseg"]] == [33_728, 198_528, 790_272, 3_153_408]
    # DeepLabHead(2048, C): ASPP 524,800 + 3 × 4,719,104 + 524,800 + 328,192 = 15,535,104;
    # 3×3 conv-BN 590,336; classifier 257·C → 16,125,440 · 3 + 257 · (13 + 1 + 3) = 48,380,689
    assert count(model.heads) == 48_380_689
    # 23,508,032 + 3 · 4,175,936 + 7,931,392 + 48,380,689
    assert count(model) == 92_347_921
    # the heads are torchvision's DeepLabHead (MTAN's aspp.py) key for key
    ours = {k: tuple(v.shape) for k, v in model.heads["semseg"].state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in reference_head.state_dict().items()}


def test_backbone_is_dilated_to_stride_8_by_default():
    tasks = {"depth": build_task("depth", {})}
    assert tiny(tasks).backbone.strides == [2, 4, 8, 8, 8]
    assert tiny(tasks, options={"output_stride": 16}).backbone.strides == [2, 4, 8, 16, 16]
    model = tiny(tasks, options={"output_stride": 32})  # each halving gets its pooling, any size works
    assert model(torch.randn(2, 3, 37, 45)).final["depth"].shape == (2, 1, 37, 45)


def test_attention_is_per_task_and_the_rest_shared():
    tasks = nyu_tasks()
    model = tiny(tasks)
    shared = {id(p) for p in model.shared_parameters()}
    own = [n for n, p in model.named_parameters() if id(p) not in shared]
    assert own and all(n.startswith(("encoder_att.", "heads.")) for n in own)
    assert {id(p) for p in model.encoder_block_att.parameters()} <= shared
    model.eval()
    image = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        before = model(image).final
        for p in model.encoder_att["depth"].parameters():
            p.add_(0.5)
        after = model(image).final
    assert torch.equal(before["semseg"], after["semseg"]) and not torch.equal(before["depth"], after["depth"])


def test_training_on_one_image_and_output_bias():
    model = tiny({"semseg": build_task("semseg", {}, NYU13)})
    output = model(torch.randn(1, 3, 33, 47))  # ASPP's image pooling: BN over one value
    assert output.final["semseg"].shape == (1, 13, 33, 47)
    model.init_output_bias({"semseg": torch.arange(13.0)})
    assert torch.equal(model.heads["semseg"][-1].bias.detach(), torch.arange(13.0))


def test_options_are_checked():
    tasks = {"depth": build_task("depth", {})}
    with pytest.raises(ConfigError, match="model.backbone.name: efficientnet_b0"):
        build_model(ModelConfig(arch="mtan_deeplab", backbone={"name": "efficientnet_b0"}), tasks)
    with pytest.raises(ConfigError, match="out_indices"):
        tiny(tasks, out_indices=[1, 2])
    with pytest.raises(ConfigError, match="atrous_rates"):
        build_model(ModelConfig(arch="mtan_deeplab", options={"atrous_rates": []}), tasks)
