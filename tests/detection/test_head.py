"""The FCOS3D head: output shapes per level, the recipe's parameter count, DCN and initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from scenemtl.detection.head import BOX_CODE_SIZE, Det3DOutput, ModulatedDeformConv2d, build_det3d_head


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions run faster on one thread, and unaffected by a busy machine (after conftest's fixture)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {"fpn_channels": 16, "feat_channels": 16, "cls_branch": (16, 8), "branch_channels": 16, "gn_groups": 8}


def test_output_shapes_per_level_on_an_odd_input_size():
    torch.manual_seed(0)
    image_size = (61, 93)
    strides = [8, 16, 32, 32]
    # backbone levels of an odd input: ceil(61/8) × ceil(93/8), …; the 4th level repeats the 3rd's stride
    sizes = [(8, 12), (4, 6), (2, 3), (2, 3)]
    in_channels = [5, 6, 7, 9]
    head = build_det3d_head(in_channels, strides, **TINY)
    features = [torch.randn(2, c, h, w) for c, (h, w) in zip(in_channels, sizes)]
    out = head(features, image_size)
    assert isinstance(out, Det3DOutput)
    assert out.strides == (8.0, 16.0, 32.0, 32.0, 64.0) and out.image_size == image_size
    expected = [*sizes, (1, 2)]  # the extra stride-2 conv on the last output: ceil(2/2) × ceil(3/2)
    for level, (h, w) in enumerate(expected):
        assert out.cls_scores[level].shape == (2, 6, h, w)
        assert out.bbox_preds[level].shape == (2, BOX_CODE_SIZE, h, w)
        assert out.dir_cls_preds[level].shape == (2, 6, h, w)
        assert out.centernesses[level].shape == (2, 1, h, w)
        box = out.bbox_preds[level]
        assert bool((box[:, 2] > 0).all() and (box[:, 3:6] > 0).all() and (box[:, 9:13] >= 0).all())
    one = out.image(1)
    assert one.batch_size == 1 and torch.equal(one.cls_scores[4], out.cls_scores[4][1:])
    plain = build_det3d_head(in_channels, strides, dcn=False, **TINY)(features, image_size)
    assert [x.shape for x in plain.bbox_preds] == [x.shape for x in out.bbox_preds]


def test_parameter_count_at_the_recipe_widths():
    """TaskPrompter's shapes: 4 inputs of 450 channels, FPN 256 with one extra level, towers 256 (DCNv2 last), 6 classes."""

    def conv(cin: int, cout: int, k: int) -> int:  # weight + bias (the head's convs all have a bias: conv_bias=True)
        return cin * cout * k * k + cout

    gn = 2 * 256  # GroupNorm(32, 256) weight + bias
    fpn = 4 * conv(450, 256, 1) + 4 * conv(256, 256, 3) + conv(256, 256, 3)  # lateral, output, extra (stride 2)
    dcn = conv(256, 256, 3) + conv(256, 27, 3)  # DCNv2: 3×3 conv + its offset/mask conv (2·9 offsets + 9 masks)
    tower = 2 * (conv(256, 256, 3) + gn) + dcn + gn
    cls = conv(256, 256, 3) + gn + conv(256, 128, 3) + 2 * 128 + conv(128, 6, 1)
    reg = sum(conv(256, 256, 3) + gn + conv(256, dim, 1) for dim in (2, 1, 3, 3, 4))
    direction = conv(256, 256, 3) + gn + conv(256, 6, 1)
    centerness = conv(256, 256, 3) + gn + conv(256, 1, 1)
    scales = 5 * 4
    expected = fpn + 2 * tower + cls + reg + direction + centerness + scales
    assert fpn == 3_412_224 and expected == 12_106_212
    head = build_det3d_head([450] * 4, [8, 16, 32, 32])
    assert sum(p.numel() for p in head.neck.parameters()) == fpn
    assert sum(p.numel() for p in head.parameters()) == expected


def test_deformable_conv_starts_as_a_half_masked_plain_conv():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(4, 3)
    layer.bias.data.normal_()
    x = torch.randn(1, 4, 5, 7)
    plain = torch.nn.functional.conv2d(x, layer.weight, None, padding=1) * 0.5 + layer.bias[None, :, None, None]
    assert torch.allclose(layer(x), plain, atol=1e-5)  # zero offsets, mask sigmoid(0) = ½


def test_initialisation_follows_the_official_init_weights():
    head = build_det3d_head([8] * 4, [8, 16, 32, 32], **TINY)
    prior = -math.log(99)
    assert torch.allclose(head.conv_cls.bias, torch.full((6,), prior))
    assert torch.allclose(head.conv_dir_cls.bias, torch.full((6,), prior))  # TaskPrompter's quirk
    assert all(bool((conv.bias == 0).all()) for conv in head.conv_regs)
    assert all(scale.scale.item() == 1.0 for level in head.scales for scale in level)
    assert bool((head.cls_convs[2][0].conv_offset.weight == 0).all())
