"""`scenemtl info`: parameter attribution (shared / per task) and multiply-add counts."""

from pathlib import Path

import pytest
import torch

from scenemtl.cli import main
from scenemtl.config import load_config
from scenemtl.engine.builder import build_tasks, dataset_info
from scenemtl.engine.info import count_macs, input_size, model_info
from scenemtl.errors import ConfigError
from scenemtl.models import build_model

REPO = Path(__file__).resolve().parents[2]  # configs/ are read from the checkout, whatever the working directory


def test_hps_parameters_split_into_the_backbone_and_each_head(tiny_config):
    config = tiny_config()
    info = model_info(config, size=(32, 48), reach_size=(32, 48))
    model = build_model(config.model, build_tasks(config, dataset_info(config)))
    assert info.total == sum(p.numel() for p in model.parameters())
    assert info.shared == sum(p.numel() for p in model.backbone.parameters())
    assert info.per_task == {t: sum(p.numel() for p in head.parameters()) for t, head in model.heads.items()}
    assert info.unused == 0 and info.gmacs > 0


def test_stl_shares_nothing(tiny_config):
    info = model_info(tiny_config("model.arch=stl"), size=(32, 48), reach_size=(32, 48))
    assert info.shared == 0 and sum(info.per_task.values()) == info.total


def test_multiply_adds_of_a_convolution_are_counted_once_each():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (10, 12)) * 1e9 == pytest.approx(10 * 12 * 8 * 3 * 9)


def test_published_parameter_counts(tmp_path):
    # MTAN-SegNet on NYUv2-13: 44.2 M in the MTAN paper's table
    mtan = load_config(REPO / "configs/nyuv2_13/mtan.yaml", ["data.root=."])
    assert model_info(mtan, size=(32, 32), reach_size=(32, 32)).total == 44_229_073
    # the ResNet-50 HPS: its shared part is ResNet-50 without the classifier, 25,557,032 − 2,049,000
    # parameters (torchvision's published count of ResNet-50 and of its 2048×1000 + 1000 fc layer)
    hps = load_config(REPO / "configs/nyud/hps.yaml", ["data.root=.", "model.backbone.weights=null"])
    info = model_info(hps, size=(32, 32), reach_size=(32, 32))
    assert info.shared == 25_557_032 - 2_049_000
    assert input_size(hps) == (448, 576)


def test_cli_prints_the_table_and_asks_for_a_size_when_the_config_has_none(tiny_config, tmp_path, capsys):
    assert main(["info", str(REPO / "configs/synthetic/hps.yaml"), "--size", "32", "48"]) == 0
    out = capsys.readouterr().out
    assert "shared:" in out and "GMACs" in out and "at 32×48" in out
    with pytest.raises(ConfigError, match="--size"):
        input_size(tiny_config("data.options={}"))


def test_transformers_report_their_official_layout_attention_and_published_figures(tiny_config):
    from scenemtl.engine.info import published

    config = tiny_config(
        "model.arch=taskprompter", "model.backbone.name=test_vit", "model.options={img_size: [32, 48], embed_dim: 8, final_embed_dim: 8}"
    )
    info = model_info(config, size=(32, 48), reach_size=(32, 48))
    # the official layout adds the last block's unused feedback (2×3 pixels → 64) and the second
    # channel of the two-class saliency head (8 inputs + bias)
    assert info.official == info.total + (2 * 3 * 64 + 64) + (8 + 1)
    assert "official checkpoint layout" in info.format()

    class Attention(torch.nn.Module):  # q·kᵀ and attention·v through the fused kernel: 2 × 2 heads × 10 × 10 × 8
        def forward(self, image):
            q = image.flatten()[:160].reshape(1, 2, 10, 8)
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    assert count_macs(Attention(), (10, 16)) * 1e9 == pytest.approx(2 * 2 * 10 * 10 * 8)
    assert published("invpt", "vit_large_patch16_384.augreg_in21k_ft_in1k", "nyud").startswith("402.1 M")
    assert published("invpt", "vit_large_patch16_384", "pascal_context").startswith("none for pascal_context; on nyud")
    assert published("hps", "resnet50", "nyud") is None
