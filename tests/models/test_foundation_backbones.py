"""Foundation-model encoders (DINOv2 with and without registers, DINOv3, SigLIP 2, EVA-02, Perception Encoder) as
tiny random-init variants of their timm models: every architecture that takes a ViT builds, runs at an odd size,
returns outputs at the input size and trains the encoder, or not when frozen; LoRA and layer-wise decay."""

from __future__ import annotations

import pytest
import torch

import scenemtl
from scenemtl.errors import ConfigError
from scenemtl.models.backbones.tuning import LoRALinear, encoders, layer_decay_scales

#: one timm model per family, made tiny by timm's model arguments (random weights)
FAMILIES = {
    "dinov2": "vit_small_patch14_dinov2",
    "dinov2_registers": "vit_small_patch14_reg4_dinov2",
    "dinov3": "vit_small_patch16_dinov3",
    "siglip2": "vit_base_patch16_siglip_gap_224",
    "eva02": "eva02_small_patch14_224",
    "perception_encoder": "vit_pe_spatial_tiny_patch16_512",
}
TINY = {"embed_dim": 32, "depth": 4, "num_heads": 2}
#: architectures and their options at test width (``img_size``: the transformers' training grid)
ARCHS = {
    "hps": {"head_channels": 8},
    "invpt": {"img_size": [56, 112], "embed_dim": 16, "pred_channels": 8},
    "mtinet": {"task_channels": 8},
    "padnet": {"head_channels": 8},
    "atrc": {"channels": 8},
    "xtam": {"decoder_channels": [4, 8, 8, 8]},  # a foundation ViT gives the last block of each quarter
}
ODD = (77, 109)


def tiny_model(arch: str, name: str, **backbone):
    options = dict(ARCHS[arch])
    timm_options = dict(TINY)
    if arch not in ("invpt",):
        timm_options["img_size"] = [56, 112]
    torch.manual_seed(0)
    return scenemtl.create_model(
        arch, tasks={"semseg": 5, "depth": None}, backbone={"name": name, "options": timm_options, **backbone}, **options
    )


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_family_serves_every_architecture_at_an_odd_size(arch, family):
    model = tiny_model(arch, FAMILIES[family])
    image = torch.randn(2, 3, *ODD)  # (two images: xtam's coarsest batch norm sees 1×1 maps here)
    output = model(image).final
    assert all(tuple(v.shape[-2:]) == ODD for v in output.values())
    sum(v.float().mean() for v in output.values()).backward()
    (encoder,) = encoders(model)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


@pytest.mark.parametrize("family", ["dinov2_registers", "eva02", "dinov3"])
def test_a_frozen_encoder_gets_no_gradient_and_the_decoder_does(family):
    model = tiny_model("hps", FAMILIES[family], freeze=True)
    (encoder,) = encoders(model)
    assert not any(p.requires_grad for p in encoder.parameters())
    sum(v.mean() for v in model(torch.randn(1, 3, *ODD)).final.values()).backward()
    assert all(p.grad is None for p in encoder.parameters())
    decoder = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert decoder and all(p.grad is not None for p in decoder)


def test_lora_adds_rank_times_in_plus_out_per_layer_and_trains_only_those():
    plain = tiny_model("hps", FAMILIES["dinov2"])
    adapted = tiny_model("hps", FAMILIES["dinov2"], lora={"rank": 4, "alpha": 8})
    (encoder,) = encoders(adapted)
    layers = [m for m in encoder.modules() if isinstance(m, LoRALinear)]
    # per block: qkv 32→96, proj 32→32, fc1 32→128, fc2 128→32
    assert len(layers) == 4 * 4
    expected = 4 * 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    extra = sum(p.numel() for p in adapted.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == expected == sum(p.numel() for n, p in adapted.named_parameters() if "lora_" in n)
    trainable_in_encoder = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable_in_encoder and all(n.endswith(("lora_a", "lora_b")) for n in trainable_in_encoder)
    # B starts at zero: the adapted model computes what the plain one does, and the keys keep their names
    adapted.load_state_dict({**adapted.state_dict(), **plain.state_dict()})
    image = torch.randn(1, 3, *ODD)
    assert torch.allclose(adapted(image).final["semseg"], plain(image).final["semseg"], atol=1e-6)
    adapted(image).final["semseg"].mean().backward()
    assert all(layer.lora_a.grad is not None and layer.weight.grad is None for layer in layers)
    with pytest.raises(ConfigError, match="match no linear layer.*qkv"):
        tiny_model("hps", FAMILIES["dinov2"], lora={"targets": ["q_proj"]})


def test_layer_decay_gives_block_k_of_l_the_rate_decay_to_the_l_minus_k(tiny_config):
    from scenemtl.engine.trainer import Trainer

    trainer = Trainer(
        tiny_config(
            "model.backbone={name: vit_small_patch14_dinov2, options: {embed_dim: 32, depth: 4, num_heads: 2, img_size: [32, 48]}}",
            "train.layer_decay=0.5",
            "train.lr=0.01",
            "train.init_output_bias=false",
        ),
        progress=False,
        log=False,
    )
    (encoder,) = encoders(trainer.model)
    # the rates before the schedule's factor (warm-up) scales every group alike
    rate = {id(p): group["initial_lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    blocks = encoder.blocks
    for k in range(4):  # block k is layer group k + 1 of 0 (stem) … 4 (last block)
        assert all(rate[id(p)] == pytest.approx(0.01 * 0.5 ** (3 - k)) for p in blocks[k].parameters())
    assert rate[id(encoder.patch_embed.proj.weight)] == pytest.approx(0.01 * 0.5**4)
    heads = [p for n, p in trainer.model.named_parameters() if n.startswith("heads.")]
    assert heads and all(rate[id(p)] == pytest.approx(0.01) for p in heads)
    assert set(layer_decay_scales(trainer.model, 0.5).values()) == {0.5**k for k in range(5)}


@pytest.mark.parametrize("family", ["dinov2_registers", "siglip2"])
def test_blocks_read_through_forward_intermediates_equal_the_blocks_run_one_by_one(family):
    """``ViTBackbone.features`` (timm's forward_intermediates, InvPT) against the block-by-block path (TaskPrompter's)."""
    from scenemtl.config import BackboneConfig
    from scenemtl.models.backbones import ViTBackbone

    torch.manual_seed(0)
    backbone = ViTBackbone(BackboneConfig(name=FAMILIES[family], options=TINY), img_size=[56, 112]).eval()
    p = backbone.patch_size
    image = torch.randn(2, 3, 4 * p, 6 * p)  # another grid than the training one: the position embedding is resampled
    with torch.no_grad():
        read = backbone.features(image, [1, 2, 4], norm_last=True)
        x, (h, w) = backbone.embed(image)
        expected = []
        for index in range(4):
            x = backbone.block(index, x)
            if index + 1 in (1, 2, 4):
                tokens = backbone.vit.norm(x) if index == 3 else x
                expected.append(tokens[:, backbone.prefix_tokens :].transpose(1, 2).reshape(2, -1, h, w))
    assert backbone.prefix_tokens == (5 if family == "dinov2_registers" else 0)
    assert [tuple(m.shape) for m in read] == [(2, 32, 4, 6)] * 3
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(read, expected))


def test_invpt_reads_the_same_blocks_of_every_family():
    """VisionTransformer and Eva classes (RoPE: DINOv3, EVA-02, PE) alike: blocks 1/2/4 of 4 (6/12/24 of 24)."""
    from scenemtl.models.backbones import ViTBackbone

    for family, name in FAMILIES.items():
        model = tiny_model("invpt", name)
        assert isinstance(model.backbone, ViTBackbone) and model.layers == (1, 2, 4), family
    with pytest.raises(ConfigError, match="rotary embeddings per block"):
        tiny_model("invpt", FAMILIES["dinov3"]).backbone.embed(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("family", ["dinov2", "dinov3"])
def test_pyramid_architectures_read_a_vit_through_the_multilevel_neck_at_strides_4_to_32(family):
    from scenemtl.models.backbones import MultiLevelNeck

    model = tiny_model("mtinet", FAMILIES[family])
    assert isinstance(model.backbone.neck, MultiLevelNeck) and model.backbone.strides == [4, 8, 16, 32]
    maps = model.backbone(torch.randn(1, 3, *ODD))
    assert [tuple(m.shape[-2:]) for m in maps] == [(-(-ODD[0] // s), -(-ODD[1] // s)) for s in (4, 8, 16, 32)]
    assert tiny_model("hps", FAMILIES[family]).backbone.neck is None  # one stride: the patch's
    flat = tiny_model("mtinet", FAMILIES[family], neck="none").backbone
    patch = 14 if family == "dinov2" else 16
    assert flat.neck is None and flat.strides == [patch] * 4
    hps = tiny_model("hps", FAMILIES[family], neck="multilevel")
    assert hps.backbone.strides == [4, 8, 16, 32] and tuple(hps(torch.randn(1, 3, *ODD)).final["semseg"].shape[-2:]) == ODD
    with pytest.raises(ConfigError, match="has a pyramid of its own"):
        scenemtl.create_model("hps", tasks={"semseg": 5}, backbone={"name": "test_resnet", "neck": "multilevel"})


@pytest.mark.parametrize(
    ("stride", "target", "cells", "size"), [(14, 32, (10, 10), (4, 4)), (14, 16, (32, 42), (28, 36)), (7, 8, (10, 19), (8, 16))]
)
def test_regrid_samples_a_patch_14_map_where_its_cells_lie(stride, target, cells, size):
    """InvPT on a patch-14 ViT: ⌈side / 14⌉ cells over the 64-padded input cover more pixels than the stage's grid.
    A map holding each cell's centre (in pixels) must come out holding the target cells' centres."""
    from scenemtl.models.layers import regrid, resize

    rows = (torch.arange(cells[0]) + 0.5) * stride
    cols = (torch.arange(cells[1]) + 0.5) * stride
    centres = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))[None]  # [1, 2, h, w]: y and x of each cell
    out = regrid(centres, stride, target, size)
    want = torch.stack(torch.meshgrid((torch.arange(size[0]) + 0.5) * target, (torch.arange(size[1]) + 0.5) * target, indexing="ij"))
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # (bilinear sampling clamps at the borders)
    assert out.shape[-2:] == size and torch.allclose(out[inner], want[None][inner], atol=1e-4)
    stretched = resize(centres, size)
    assert (stretched[inner] - want[None][inner]).abs().max() > 2  # stretching shifts them by pixels
    exact = torch.randn(1, 3, 8, 8)
    assert torch.equal(regrid(exact, 16, 32, (4, 4)), resize(exact, (4, 4)))  # same pixels covered: resize itself


def test_taskprompter_takes_patch_16_vits_and_says_why_not_patch_14():
    model = scenemtl.create_model(
        "taskprompter",
        tasks={"semseg": 5, "depth": None},
        backbone={"name": FAMILIES["siglip2"], "options": TINY},
        img_size=[64, 96],
        embed_dim=12,
        final_embed_dim=10,
        chan_nheads=4,
    )
    assert all(tuple(v.shape[-2:]) == (64, 96) for v in model(torch.randn(1, 3, 64, 96)).final.values())
    with pytest.raises(ConfigError, match="16-pixel patches.*invpt/hps"):
        scenemtl.create_model(
            "taskprompter", tasks={"semseg": 5}, backbone={"name": FAMILIES["dinov2"], "options": TINY}, img_size=[56, 84]
        )


def test_info_separates_trained_and_frozen_parameters(tiny_config):
    from scenemtl.engine.info import model_info

    backbone = "{name: vit_small_patch14_dinov2, options: {embed_dim: 32, depth: 4, num_heads: 2, img_size: [32, 48]}, lora: {rank: 2}}"
    report = model_info(tiny_config(f"model.backbone={backbone}"), (32, 48))
    assert report.frozen > 0 and report.trainable + report.frozen == report.total
    assert report.unused == 0  # the frozen encoder is still reached by every task
    assert "frozen" in report.format()


def test_info_counts_a_dinov2_large_invpt_on_the_meta_device(capsys):
    """`scenemtl info configs/nyud/invpt_dinov2.yaml --meta`: the full-size model, shapes only."""
    from pathlib import Path

    from scenemtl.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / "nyud" / "invpt_dinov2.yaml"
    assert main(["info", str(config), "--meta", "--size", "448", "576"]) == 0
    printed = capsys.readouterr().out
    # ViT-L/14 (304.4 M with its final norm) under InvPT's decoder at 512×576 padded inside to 37×42 tokens
    assert "backbone vit_large_patch14_dinov2.lvd142m" in printed and "parameters: 395,629,454" in printed
    assert "GMACs" in printed and float(printed.split("compute: ")[1].split(" GMACs")[0]) > 500


def test_foundation_families_come_from_timm_metadata_with_their_normalisation(tiny_config):
    from scenemtl.engine.builder import dataset_info
    from scenemtl.models.backbones.presets import foundation, quarter_blocks

    assert foundation("vit_small_patch14_reg4_dinov2").family == "DINOv2 with registers"
    assert foundation("vit_base_patch16_siglip_gap_224.v2_webli").family == "SigLIP 2"
    assert foundation("vit_base_patch16_siglip_gap_224.webli") is None  # SigLIP (1): not one of the families
    assert foundation("vit_large_patch16_384") is None and foundation("resnet50") is None
    assert foundation("vit_small_patch16_dinov3").licence == "dinov3-license"
    assert quarter_blocks(12) == (2, 5, 8, 11) and quarter_blocks(24) == (5, 11, 17, 23)
    siglip = "model.backbone={name: vit_base_patch16_siglip_gap_224, options: {embed_dim: 32, depth: 4, num_heads: 2}}"
    assert dataset_info(tiny_config(siglip)).mean == (0.5, 0.5, 0.5)  # what SigLIP 2's weights expect
    assert dataset_info(tiny_config(siglip, "model.backbone.normalisation=dataset")).mean != (0.5, 0.5, 0.5)
    # a Backbone over a foundation encoder reads the last block of each quarter
    model = tiny_model("hps", FAMILIES["dinov3"])
    assert len(model.backbone.channels) == 4
