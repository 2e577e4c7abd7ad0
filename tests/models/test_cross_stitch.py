"""Cross-stitch networks: MTAN's SegNet parameter count, the units' form and initialisation, sharing, options."""

import pytest
import torch

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError, ScenemtlError
from scenemtl.models import build_model
from scenemtl.models.cross_stitch import CrossStitchUnit
from scenemtl.tasks import build_task

NYU13 = {"semseg": [f"class{i}" for i in range(13)]}
TINY = [4, 8, 8, 16, 16]


def nyu_tasks():
    return {
        "semseg": build_task("semseg", {}, NYU13),
        "depth": build_task("depth", {}),
        "normals": build_task("normals", {"loss": "cosine"}),
    }


def count(module):
    return sum(p.numel() for p in module.parameters())


def tiny_timm(tasks, **options):
    return build_model(ModelConfig(arch="cross_stitch", backbone={"name": "test_resnet"}, options={"head_channels": 8, **options}), tasks)


def test_segnet_variant_has_the_parameter_count_of_mtans_cross_stitch_segnet():
    # lorenmt/mtan im2im_pred/model_segnet_cross.py, per task: a SegNet without head = MTAN's
    # single-task SegNet 24,981,069 less its 13-class prediction block (64·64·9 + 64 + 64·13 + 13 =
    # 37,773) = 24,943,296; prediction blocks 37,773 + 36,993 (depth: 36,928 + 64 + 1) + 37,123
    # (normals: 36,928 + 192 + 3) = 111,889; units cs_unit_encoder 4×3 + cs_unit_decoder 5×3 = 27.
    # 3 × 24,943,296 + 111,889 + 27 = 74,941,804 (the script prints 74,941,807: + 3 logsigma)
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="cross_stitch", options={"backbone": "segnet"}), nyu_tasks())
        channel = build_model(ModelConfig(arch="cross_stitch", options={"backbone": "segnet", "unit": "channel"}), nyu_tasks())
    assert count(model) == 74_941_804
    assert round(count(model) / 24_981_069, 2) == 3.00  # the script's REL: / its single-task SegNet
    units = [*model.encoder_stitch, *model.decoder_stitch]
    assert len(units) == 9 and all(u.unit == "mtan" and u.alpha.shape == (3,) for u in units)
    # the channel unit instead: K² weights per stitched channel, 3² × (64 + 128 + 256 + 512 encoder,
    # 512 + 512 + 256 + 128 + 64 decoder = 2,432)
    assert count(channel) == 74_941_804 - 27 + 9 * 2_432


def test_units_initialisation_and_mixing():
    features = [torch.randn(2, 4, 3, 5) for _ in range(3)]
    mtan = CrossStitchUnit(3, 4, "mtan")
    assert torch.equal(mtan.alpha.detach(), torch.ones(3))  # MTAN: torch.ones, never re-initialised
    out = mtan(features)
    # MTAN's form: every task receives the same combination of all tasks' maps
    assert all(torch.allclose(o, sum(features)) for o in out)
    channel = CrossStitchUnit(3, 4, "channel", alpha_same=0.9, alpha_diff=0.1)
    alpha = channel.alpha.detach()
    assert alpha.shape == (3, 3, 4)
    assert torch.all(alpha.diagonal(dim1=0, dim2=1) == 0.9)
    assert torch.allclose(alpha.sum(dim=1), torch.full((3, 4), 1.1))
    out = channel(features)
    for i in range(3):
        expected = 0.9 * features[i] + sum(0.1 * features[j] for j in range(3) if j != i)
        assert torch.allclose(out[i], expected, atol=1e-6)
    with torch.no_grad():
        channel.alpha[0, 1, 2] = 5.0  # per channel: only channel 2 of task 0 changes
    changed = channel(features)[0] != out[0]
    assert changed[:, 2].all() and not changed[:, [0, 1, 3]].any()


def test_default_initialisation_is_a_convex_combination():
    # Vandenhende: 0.9 / 0.1 for NYUD's two tasks, 0.8 / 0.05 for PASCAL's five: rows sum to 1
    three = tiny_timm(nyu_tasks()).stitch["1"].alpha.detach()
    assert torch.all(three.diagonal(dim1=0, dim2=1) == 0.9) and torch.allclose(three.sum(dim=1), torch.ones(3, 32))
    assert three[0, 1, 0].item() == pytest.approx(0.05)
    five = {
        n: build_task(n, {}, {"semseg": ["a", "b"], "human_parts": ["a", "b"]})
        for n in ("semseg", "human_parts", "saliency", "edge", "normals")
    }
    assert tiny_timm(five, alpha_same=0.8).stitch["4"].alpha[1, 0, 0].item() == pytest.approx(0.05)


def test_timm_variant_stitches_every_stage_of_stride_4_or_more():
    tasks = {name: build_task(name, {}, NYU13) for name in ("semseg", "depth")}
    model = tiny_timm(tasks)
    backbone = model.backbones["semseg"]
    # test_resnet: channels 32/32/48/192/96 at strides 2/4/8/16/32; the stride-2 stem is no stage
    assert backbone.strides == [2, 4, 8, 16, 32] and list(model.stitch) == ["1", "2", "3", "4"]
    assert count(model) == 2 * count(backbone) + count(model.heads) + 2 * 2 * (32 + 48 + 192 + 96)
    assert model.backbones["semseg"] is not model.backbones["depth"]
    output = model(torch.randn(2, 3, 33, 47))
    assert output.final["semseg"].shape == (2, 13, 33, 47) and output.final["depth"].shape == (2, 1, 33, 47)


def test_units_are_what_couples_the_networks():
    tasks = {name: build_task(name, {}, NYU13) for name in ("semseg", "depth")}
    image = torch.randn(1, 3, 32, 32)
    for same, diff, coupled in ((1.0, 0.0, False), (0.9, 0.1, True)):
        torch.manual_seed(0)
        model = tiny_timm(tasks, alpha_same=same, alpha_diff=diff).eval()
        with torch.no_grad():
            before = model(image).final["semseg"]
            for p in model.backbones["depth"].parameters():
                p.add_(0.5)
            after = model(image).final["semseg"]
        assert (not torch.allclose(before, after)) == coupled


def test_shared_parameters_are_everything_before_the_last_unit():
    tasks = nyu_tasks()
    timm_model = tiny_timm(tasks)
    shared = {id(p) for p in timm_model.shared_parameters()}
    own = [n for n, p in timm_model.named_parameters() if id(p) not in shared]
    assert own and all(n.startswith("heads.") for n in own)
    assert {id(p) for p in timm_model.stitch.parameters()} <= shared

    segnet = build_model(ModelConfig(arch="cross_stitch", options={"backbone": "segnet", "filters": TINY}), tasks)
    shared = {id(p) for p in segnet.shared_parameters()}
    own = [n for n, p in segnet.named_parameters() if id(p) not in shared]
    # after the last unit: each SegNet's last decoder level and its prediction block
    assert own and all(n.startswith("heads.") or ".decoder_block.0." in n or ".conv_block_dec.0." in n for n in own)
    assert {id(p) for p in segnet.decoder_stitch.parameters()} <= shared


def test_segnet_variant_forward_backward_and_output_bias():
    tasks = nyu_tasks()
    model = build_model(ModelConfig(arch="cross_stitch", options={"backbone": "segnet", "filters": TINY}), tasks)
    output = model(torch.randn(2, 3, 33, 47))
    assert {n: tuple(v.shape) for n, v in output.final.items()} == {
        "semseg": (2, 13, 33, 47),
        "depth": (2, 1, 33, 47),
        "normals": (2, 3, 33, 47),
    }
    sum((v * torch.randn_like(v)).mean() for v in output.final.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.init_output_bias({"depth": torch.tensor([0.7])})
    assert model.heads["depth"][-1].bias.item() == pytest.approx(0.7)
    with pytest.raises(ScenemtlError, match="at least 32"):
        model(torch.zeros(1, 3, 24, 64))


def test_options_are_checked():
    tasks = {"depth": build_task("depth", {})}
    with pytest.raises(ConfigError, match="model.options.backbone"):
        tiny_timm(tasks, backbone="vgg")
    with pytest.raises(ConfigError, match="model.options.unit"):
        tiny_timm(tasks, unit="matrix")
    with pytest.raises(ConfigError, match="alpha_same"):
        tiny_timm(tasks, unit="mtan", alpha_same=0.5)
    segnet = ModelConfig(arch="cross_stitch", options={"backbone": "segnet", "filters": [4, 8]})
    with pytest.raises(ConfigError, match="five positive"):
        build_model(segnet, tasks)
    # an option of the other backbone is an error, not ignored
    with pytest.raises(ConfigError, match="head_channels/decoder_stride set the FPN heads of backbone: timm"):
        tiny_timm(tasks, backbone="segnet")
    with pytest.raises(ConfigError, match="filters sets the widths of backbone: segnet"):
        tiny_timm(tasks, filters=[4, 8, 8, 16, 16])
    with pytest.raises(ConfigError, match="model.backbone configures a timm network"):
        build_model(ModelConfig(arch="cross_stitch", backbone={"name": "resnet18"}, options={"backbone": "segnet"}), tasks)
    with pytest.raises(ConfigError, match="fuse"):
        build_model(ModelConfig(arch="cross_stitch", backbone={"name": "test_resnet", "fuse": "concat"}), tasks)
    with pytest.raises(ConfigError, match="stage by stage"):
        build_model(ModelConfig(arch="cross_stitch", backbone={"name": "vit_tiny_patch16_224"}), tasks)
