"""DiffusionMTL: parameter count of the official shapes, seeded sampling, detached conditioning, variants."""

import math

import pytest
import torch

import scenemtl.models.diffusionmtl  # noqa: F401  (registers the architecture)
from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models.registry import build_model
from scenemtl.tasks import build_task

NYU13 = {"semseg": [f"class{i}" for i in range(13)]}


def nyud_tasks():
    return {
        "semseg": build_task("semseg", {}, NYU13),
        "depth": build_task("depth", {}),
        "normals": build_task("normals", {}),
        "edge": build_task("edge", {}),
    }


def tiny(**options):
    options = {"channels": 16, "depth": 1, **options}
    return ModelConfig(arch="diffusionmtl", backbone={"name": "test_resnet"}, options=options)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_matches_the_official_shapes():
    # The official model (models/diffusion_net.py, models/diffusion/mtdnet.py) on ResNet-18 with
    # embed_dim C = 512 for NYUD's four tasks (NUM_OUTPUT semseg 13, depth 1, normals 3, edge 1:
    # S = 18 channels in all, T = 4 tasks):
    #   backbone_embed 3×3 960→C:                     9·960·C + C           =  4,424,192
    #   preliminary_dec 2 BasicBlocks (no conv bias): T·(36C² + 8C)         = 37,765,120
    #   preliminary_head 1×1 C→o:                     C·S + S               =      9,234
    #   FeatureCombinator 3×3 S→C:                    9·S·C + C             =     83,456
    #   4 shared CrossBlocks (q, kv no bias; proj; 2 MLPs ×4; 4 LayerNorms):
    #                                                 4·(20C² + 19C)        = 21,010,432
    #   pre_layer 3×3 C→C:                            T·(9C² + C)           =  9,439,232
    #   task_heads 1×1 C→C, 3×3 C→512, 3×3 512→C, 3×3 C→C:  T·(28C² + 4C)  = 29,368,320
    #   final_task_heads (MLPHead 1×1 C→o):           C·S + S               =      9,234
    #   TimestepEmbedder 256→C, C→C:                  256C + C + C² + C     =    394,240
    #   sum 102,503,460 + ResNet-18 without fc 11,176,512 = 113,679,972
    model = build_model(ModelConfig(arch="diffusionmtl", backbone={"name": "resnet18"}), nyud_tasks())
    assert count(model.backbone) == 11_176_512
    assert count(model) == 113_679_972
    shared = (
        count(model.backbone)
        + count(model.backbone_embed)
        + count(model.pred_combinator)
        + count(model.denoiser.crossblocks)
        + count(model.denoiser.t_embedder)
    )
    assert sum(p.numel() for p in model.shared_parameters()) == shared == 37_088_832


def test_schedule_is_the_official_linear_one():
    model = build_model(tiny(), {"depth": build_task("depth", {})})
    betas = [1e-3, 1e-2]  # linspace(√1e-3, √1e-2, 2)² with T = 2
    cumprod = [1 - betas[0], (1 - betas[0]) * (1 - betas[1])]
    assert model.sqrt_alphas_cumprod.tolist() == pytest.approx([math.sqrt(c) for c in cumprod])
    # posterior variance at t = 1: β₁ (1 − ᾱ₀) / (1 − ᾱ₁)
    variance = betas[1] * (1 - cumprod[0]) / (1 - cumprod[1])
    assert model.posterior_log_variance_clipped[1].item() == pytest.approx(math.log(variance), rel=1e-5)
    assert model.state_dict().keys().isdisjoint({"sqrt_alphas_cumprod", "posterior_mean_coef1"})


def test_eval_sampling_is_seeded_and_train_uses_the_global_rng():
    tasks = nyud_tasks()
    torch.manual_seed(0)
    model = build_model(tiny(), tasks).eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first, second = model(image).final, model(image).final
        model.sample_seed = 1
        other = model(image).final
    assert all(torch.equal(first[t], second[t]) for t in tasks)
    assert not torch.allclose(first["depth"], other["depth"])
    model.train()
    with torch.no_grad():
        torch.manual_seed(3)
        a = model(image).final["depth"]
        torch.manual_seed(3)
        b = model(image).final["depth"]
        c = model(image).final["depth"]
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("target", ["feature", "prediction"])
def test_both_variants_give_final_and_weighted_preliminary_outputs(target):
    tasks = nyud_tasks()
    model = build_model(tiny(target=target, num_timesteps=3), tasks)
    output = model(torch.randn(2, 3, 33, 47))
    assert output.aux_weights == {"preliminary": 0.5}
    for stage in (output.final, output.aux["preliminary"]):
        assert {t: v.shape for t, v in stage.items()} == {t: (2, task.out_channels, 33, 47) for t, task in tasks.items()}
    width = {"feature": 16, "prediction": 13}[target]
    assert model.denoiser.pre_layer["semseg"].in_channels == width


def test_condition_reads_detached_preliminary_predictions():
    model = build_model(tiny(), nyud_tasks())
    output = model(torch.randn(2, 3, 32, 32))
    sum(v.square().mean() for v in output.final.values()).backward()
    # feature diffusion: the final loss reaches the preliminary features (the chain starts from
    # them) and the condition combinator, never the preliminary heads (their outputs are detached)
    assert all(p.grad is None for p in model.preliminary_head.parameters())
    assert all(p.grad is not None for p in model.preliminary_dec.parameters())
    assert all(p.grad is not None for p in model.pred_combinator.parameters())


def test_options_are_checked():
    tasks = nyud_tasks()
    with pytest.raises(ConfigError, match="target"):
        build_model(tiny(target="noise"), tasks)
    with pytest.raises(ConfigError, match="divisible"):
        build_model(tiny(channels=18), tasks)
    with pytest.raises(ConfigError, match="num_timesteps"):
        build_model(tiny(num_timesteps=0), tasks)
