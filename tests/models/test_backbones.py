"""Backbones: timm families, dilated ResNets, HRNet branches and their 1/4 concatenation (the seeds' HRNet
representation), the stage and layer views architectures run themselves."""

import pytest
import torch

from scenemtl.config import BackboneConfig, ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models import build_model
from scenemtl.models.backbones import Backbone, backbone_family
from scenemtl.tasks import build_task


@pytest.mark.parametrize(
    "name, family",
    [
        ("test_resnet", "resnet"),
        ("resnet50.tv_in1k", "resnet"),
        ("resnext50_32x4d", "resnet"),
        ("test_vit", "vit"),
        ("vit_large_patch16_384", "vit"),
        ("deit_small_patch16_224", "vit"),
        ("swin_base_patch4_window12_384", "swin"),
        ("swinv2_tiny_window8_256", "swinv2"),
        ("hrnet_w18_small_v2", "hrnet"),
        ("convnext_tiny", "convnext"),
        ("eva02_tiny_patch14_224", "eva"),
    ],
)
def test_backbone_family_comes_from_timms_registry(name, family):
    assert backbone_family(name) == family


def test_unknown_backbone_family_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown backbone"):
        backbone_family("resnet_nonexistent")


def test_stages_and_residual_layers_run_as_the_backbone_does():
    backbone = Backbone(BackboneConfig(name="test_resnet", options={"output_stride": 8})).eval()
    image = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        expected = backbone(image)
        x, maps = image, []
        for stage in backbone.stages():
            x = stage.module(x)
            if stage.level is not None:
                maps.append(x)
        assert all(torch.equal(a, b) for a, b in zip(maps, expected)) and len(maps) == len(expected)
        stem, layers = backbone.residual_layers()
        x = image
        for module in stem:
            x = module(x)
        for layer, feature in zip(layers, expected[1:]):
            x = layer.blocks(x)
            assert torch.equal(x, feature) and layer.out_channels == feature.shape[1]
    assert [layer.in_channels for layer in layers] == [32, 32, 48, 192]
    with pytest.raises(ConfigError, match="four residual layers"):
        Backbone(BackboneConfig(name="convnext_atto")).residual_layers()
    with pytest.raises(ConfigError, match="stage by stage"):
        Backbone(BackboneConfig(name="hrnet_w18_small_v2")).stages()


def test_dilated_resnet_keeps_stride_8_and_hrnet_gives_its_raw_branches():
    dilated = Backbone(BackboneConfig(name="resnet18", options={"output_stride": 8}))
    assert dilated.strides == [2, 4, 8, 8, 8]
    assert [tuple(f.shape[-2:]) for f in dilated(torch.randn(1, 3, 64, 96))][-1] == (8, 12)
    hrnet = Backbone(BackboneConfig(name="hrnet_w18_small_v2"))
    assert hrnet.channels == [64, 18, 36, 72, 144] and hrnet.strides == [2, 4, 8, 16, 32]


def test_concat_fuse_upsamples_every_branch_to_a_quarter():
    fused = Backbone(BackboneConfig(name="hrnet_w18_small_v2", fuse="concat"))
    assert fused.channels == [18 + 36 + 72 + 144] and fused.strides == [4]
    plain = Backbone(BackboneConfig(name="hrnet_w18_small_v2"))
    plain.load_state_dict(fused.state_dict())
    image = torch.randn(1, 3, 66, 98)
    fused.eval(), plain.eval()
    with torch.no_grad():
        (out,), branches = fused(image), plain(image)
    assert out.shape == (1, 270, 17, 25) and branches[1].shape[-2:] == (17, 25)  # ⌈66/4⌉ × ⌈98/4⌉ (padded inside)
    assert torch.equal(out[:, :18], branches[1])  # the 1/4 branch is kept as is
    upsampled = torch.nn.functional.interpolate(branches[4], size=out.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(out[:, -144:], upsampled)


def test_hps_on_the_fused_hrnet_predicts_at_input_size():
    tasks = {name: build_task(name, {}, {"semseg": ["a", "b", "c"]}) for name in ("semseg", "depth")}
    config = ModelConfig(
        arch="hps", backbone={"name": "hrnet_w18_small_v2", "fuse": "concat"}, options={"head_channels": 8, "decoder_stride": 4}
    )
    model = build_model(config, tasks)
    output = model(torch.randn(1, 3, 33, 47))
    assert output.final["semseg"].shape == (1, 3, 33, 47) and output.final["depth"].shape == (1, 1, 33, 47)
