"""DenseMTL's cross-task attention: layer shapes and parameter counts as the official code, zero-initialised attention."""

import pytest
import torch

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models import build_model
from scenemtl.models.xtam import CrossTaskAttention, Decoder, SpatialCrossTaskAttention
from scenemtl.tasks import build_task

CLASSES = {"semseg": ["a", "b", "c", "d"]}
TINY = {"decoder_channels": [4, 8, 8, 8, 8]}


def count(module):
    return sum(p.numel() for p in module.parameters())


def tasks_of(*names):
    return {name: build_task(name, {}, CLASSES) for name in names}


def tiny(*names, **options):
    config = ModelConfig(arch="xtam", backbone={"name": "test_resnet"}, options={**TINY, **options})
    torch.manual_seed(0)
    return build_model(config, tasks_of(*names))


def test_cross_task_block_parameter_count_matches_densemtl():
    # DenseMTL (models/ours_xatt.py, ablation ['SxTAM', 'SA', 'add'], stages [1] → C = 128, pool 4), per pair:
    #   extract_s   Conv2d(C, C, 3) + bias                      9·128·128 + 128          = 147,584
    #   SA_s        2 × Conv2d(C, C/2, 3, bias=False)           2·9·128·64               = 147,456
    #   SxTAM_s     3 × (Conv2d(C, C, 1, no bias) + BN(C)) + α  3·(16,384 + 256) + 128   =  50,048
    #   proj_s      Conv2d(1.5C, C, 1, no bias) + BN(C)         192·128 + 256            =  24,832
    #                                                                              pair  = 369,920
    # per target: post Conv2d((T-1)·C, C, 1, no bias) + BN(C)   (T-1)·16,384 + 256
    per_pair = 147_584 + 147_456 + 50_048 + 24_832
    assert per_pair == 369_920
    for names, expected in [
        (("semseg", "depth"), 773_120),
        (("semseg", "depth", "normals"), 2_318_592),
        (("semseg", "depth", "normals", "edge"), 4_636_672),
    ]:
        t = len(names)
        assert expected == t * (t - 1) * per_pair + t * ((t - 1) * 16_384 + 256)
        block = CrossTaskAttention(names, 128, 4)
        assert count(block) == expected, names
    message = CrossTaskAttention(("semseg", "depth"), 128, 4).messages["semseg"]["depth"]
    assert [count(m) for m in (message.extract, message.self_attention, message.cross_attention, message.project)] == [
        147_584,
        147_456,
        50_048,
        24_832,
    ]


def test_decoder_parameter_count_matches_densemtl_on_resnet101():
    # DenseMTL's "padnet+" head (vendor/monodepth2/decoder.py) on ResNet-101's [64, 256, 512, 1024, 2048]
    # channels, num_ch_dec [64, 128, 128, 256, 256], ASPP rates 6/12/18 with pooling, 40 classes:
    #   upconv(4,0) ASPP(2048→256): 1×1 524,288+512; 3 × 3×3 (4,718,592+512); pooling 524,288+512;
    #               projection 1280·256+512                                   = 15,535,104
    #   upconv(4,1) 3×3 (256+1024→256) + bias = 2,949,376;  upconv(3,0) 256→256 = 590,080
    #   upconv(3,1) 768→256 = 1,769,728;  upconv(2,0) 256→128 = 295,040;  upconv(2,1) 384→128 = 442,496
    #   upconv(1,0) 128→128 = 147,584;  upconv(1,1) 192→128 = 221,312
    #   upconv(0,0) 128→64 = 73,792;  upconv(0,1) 64→64 = 36,928
    #   side(0) 64·40+40 = 2,600;  side(1) 128·40+40 = 5,160
    aspp = 524_288 + 512 + 3 * (4_718_592 + 512) + 524_288 + 512 + 1280 * 256 + 512
    assert aspp == 15_535_104
    body = aspp + 2_949_376 + 590_080 + 1_769_728 + 295_040 + 442_496 + 147_584 + 221_312 + 73_792 + 36_928
    decoder = Decoder([64, 256, 512, 1024, 2048], [64, 128, 128, 256, 256], 40, (6, 12, 18))
    assert count(decoder.levels[4].conv0) == aspp
    assert count(decoder) == body + 2_600 + 5_160 == 22_069_200


def test_attention_is_zero_at_init_and_messages_flow_once_alpha_is_not():
    torch.manual_seed(0)
    attention = SpatialCrossTaskAttention(8, 4)
    assert torch.count_nonzero(attention.alpha) == 0
    target, source = torch.randn(2, 8, 17, 23), torch.randn(2, 8, 17, 23)
    out = attention(target, source)
    assert out.shape == target.shape and torch.count_nonzero(out) == 0
    with torch.no_grad():
        attention.alpha.fill_(1.0)
    attention.eval()
    first = attention(target, source)
    assert torch.count_nonzero(first) > 0
    assert not torch.allclose(attention(target, source + torch.randn_like(source)), first)  # keys/values from the source
    assert not torch.allclose(attention(target + torch.randn_like(target), source), first)  # queries from the target


def test_model_output_ignores_the_attention_path_at_init_and_uses_it_after():
    model = tiny("semseg", "depth", "normals").eval()
    image = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        reference = model(image).final
        # the cross-attention's projections do not matter while alpha is 0: as if the module were removed
        for name, p in model.xtam.named_parameters():
            if ".cross_attention." in name and not name.endswith("alpha"):
                p.add_(torch.randn_like(p))
        after = model(image).final
    assert all(torch.equal(reference[t], after[t]) for t in reference)
    with torch.no_grad():
        for message in (m for sources in model.xtam.messages.values() for m in sources.values()):
            message.cross_attention.alpha.fill_(0.5)
        opened = model(image).final
    assert not any(torch.allclose(reference[t], opened[t]) for t in reference)


def test_another_tasks_feature_reaches_the_target():
    model = tiny("semseg", "depth").eval()
    with torch.no_grad():
        for sources in model.xtam.messages.values():
            for message in sources.values():
                message.cross_attention.alpha.fill_(1.0)
    features = {"semseg": torch.randn(1, 8, 16, 24), "depth": torch.randn(1, 8, 16, 24)}
    with torch.no_grad():
        before = model.xtam(features)
        changed = model.xtam({**features, "depth": torch.randn(1, 8, 16, 24)})
        # the attention path alone (self-attention message of the source zeroed) still carries it
        for p in model.xtam.messages["semseg"]["depth"].self_attention.parameters():
            p.zero_()
        only_attention = model.xtam(features)["semseg"]
        only_attention_changed = model.xtam({**features, "depth": torch.randn(1, 8, 16, 24)})["semseg"]
    assert not torch.allclose(before["semseg"], changed["semseg"])
    assert not torch.allclose(only_attention, only_attention_changed)


def test_one_task_is_the_decoder_alone_with_deep_supervision():
    single = tiny("semseg")
    assert single.xtam is None
    assert count(single) == count(single.backbone) + count(single.decoders)
    output = single(torch.randn(2, 3, 32, 48))
    assert set(output.aux) == {"scale1"} and output.aux["scale1"]["semseg"].shape == (2, 4, 16, 24)  # at 1/2
    assert {id(p) for p in single.shared_parameters()} == {id(p) for p in single.backbone.parameters()}
    plain = tiny("semseg", "depth", deep_supervision=False)
    assert plain(torch.randn(2, 3, 32, 48)).aux == {}
    assert all(set(d.side) == {"0"} for d in plain.decoders.values())


def test_per_task_scales_and_regression_outputs_as_densemtls_sde():
    """SDE: semseg active_scales [0, 2]; disparity [0, 1, 2, 3] with monodepth2's reflection-padded 3×3 outputs."""
    model = tiny("semseg", "depth", scales={"semseg": [0, 2], "depth": [0, 1, 2, 3]}, regression=["depth"])
    output = model(torch.randn(2, 3, 32, 48))
    assert set(output.aux) == {"scale1", "scale2", "scale3"}
    assert set(output.aux["scale2"]) == {"semseg", "depth"} and set(output.aux["scale1"]) == {"depth"}
    assert output.aux["scale3"]["depth"].shape == (2, 1, 4, 6) and output.final["depth"].shape == (2, 1, 32, 48)
    side = model.decoders["depth"].side["2"]
    assert side.conv.kernel_size == (3, 3) and isinstance(side.pad, torch.nn.ReflectionPad2d)
    assert model.decoders["semseg"].side["2"].kernel_size == (1, 1)
    assert [layer.kernel_size for layer in model.output_layers()["depth"]] == [(3, 3)] * 4
    with pytest.raises(ConfigError, match="scales.depth must hold 0"):
        tiny("semseg", "depth", scales={"depth": [1, 2]})
    with pytest.raises(ConfigError, match="tasks the model does not have: \\['normals'\\]"):
        tiny("semseg", "depth", regression=["normals"])


def test_block_sits_after_decoder_level_one_at_eighth_resolution():
    model = tiny("semseg", "depth")
    assert model.sections == ([4, 3, 2, 1], [0]) and model.pool == 4  # enc_layers [[4,3,2,1],[0]], stage_nb[1]
    seen = {}
    hook = model.xtam.register_forward_pre_hook(lambda m, args: seen.update(shape=args[0]["semseg"].shape))
    model(torch.randn(2, 3, 32, 48))
    hook.remove()
    assert seen["shape"] == (2, 8, 16, 24)  # level 1: 8 channels at stride 2 (test_resnet's finest feature)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="one width per backbone feature map"):
        tiny("semseg", "depth", decoder_channels=[4, 8])
    with pytest.raises(ConfigError, match="stage"):
        tiny("semseg", "depth", stage=0)
    with pytest.raises(ConfigError, match="attention_pool"):
        tiny("semseg", "depth", attention_pool=0)
    with pytest.raises(ConfigError, match="aspp_rates"):
        tiny("semseg", "depth", aspp_rates=[6, -1])
    with pytest.raises(ConfigError, match="model.options.heads"):
        build_model(ModelConfig(arch="xtam", options={"heads": 2}), tasks_of("depth"))
