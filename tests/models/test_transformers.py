"""InvPT and TaskPrompter: official checkpoints through the key maps, parameter counts, sizes, efficiency options."""

from __future__ import annotations

import random

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scenemtl.config import ModelConfig, load_config
from scenemtl.errors import CheckpointError, ConfigError
from scenemtl.models import build_model
from scenemtl.models.official import (
    convert_state,
    load_official_into,
    official_parameter_count,
    read_official,
    to_official_state,
)
from scenemtl.tasks import build_task

REPO = Path(__file__).resolve().parents[2]  # configs/ are read from the checkout, whatever the working directory

PASCAL = ("semseg", "human_parts", "saliency", "normals", "edge")
CLASSES = {"semseg": [str(i) for i in range(5)], "human_parts": [str(i) for i in range(3)]}
TINY = {
    "invpt": {"img_size": [64, 64], "embed_dim": 16, "pred_channels": 8},
    "taskprompter": {"img_size": [64, 64], "embed_dim": 16, "final_embed_dim": 12, "chan_nheads": 4},
    "taskprompter_swin": {
        "img_size": [64, 128],
        "embed_dim": 12,
        "final_embed_dim": 10,
        "chan_embed_dim": 16,
        "chan_nheads": 4,
        "head": "deconv",
    },
}
TINY_SWIN = {
    "name": "swin_base_patch4_window12_384",
    "options": {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4], "window_size": 4},
}
VARIANTS = list(TINY)


def make(variant: str, tasks=PASCAL, seed: int = 0, **options):
    """A tiny model: ``invpt``, ``taskprompter`` (ViT) or ``taskprompter_swin`` (the Swin variant)."""
    torch.manual_seed(seed)
    built = {t: build_task(t, {}, CLASSES) for t in tasks}
    arch, backbone = variant, {"name": "test_vit"}
    if variant == "taskprompter_swin":
        arch, backbone = "taskprompter", TINY_SWIN
    config = ModelConfig(arch=arch, backbone=backbone, options={**TINY[variant], **options})
    model = build_model(config, built)
    with torch.no_grad():  # non-trivial batch-norm statistics, so evaluation mode is a real test
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def official_file(model, path, extra: dict | None = None):
    """Write the model's weights as the official code saves them: DDP's ``module.`` names in {'model': …}."""
    state = to_official_state(model, model.official_key_map, model.task_names)
    state.update(extra or {})
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {"state": {}}, "epoch": 3, "iter_count": 1234}, path)
    return state


@pytest.mark.parametrize("arch", VARIANTS)
def test_an_official_state_dict_converts_with_no_missing_or_unexpected_key_and_identical_outputs(arch, tmp_path):
    source = make(arch, seed=0)
    path = tmp_path / "official.pth.tar"
    state = official_file(source, path)
    # the documented official names (models/invpt.py, models/taskprompter.py)
    if arch == "invpt":
        assert "multi_task_decoder.invpt.invpt_stages.1.patch_embed.0.proj.1.weight" in state
        assert "multi_task_decoder.preliminary_decoder.sal.0.bn1.running_var" in state
        assert "multi_task_decoder.invpt.invpt_stages.2.blocks.0.attn.conv_proj_q.4.bn.weight" in state
        assert state["heads.sal.linear_pred.weight"].shape[0] == 2  # the official two-class saliency head
        assert state["multi_task_decoder.intermediate_head.sal.weight"].shape[0] == 2
    elif arch == "taskprompter_swin":
        assert "backbone.layers.1.blocks.1.chan_kv.weight" in state
        assert "backbone.layers.2.downsample.spa_attn_ds.weight" in state
        assert "backbone.layers.3.blocks.1.token_trans1.weight" not in state  # the last block has none
        assert "backbone.multi_scale_fuse.sal.weight" in state
        assert state["heads.sal.linear_pred.weight"].shape[0] == 2
    else:
        assert "backbone.task_prompts" in state and "backbone.cls_token" not in state
        assert "backbone.blocks.3.attn.token_trans.weight" in state
        assert "backbone.fea_fuse.3.sal.2.running_mean" in state
        assert "backbone.ctr_attn_conv.0.edge.2.weight" in state
        assert state["heads.sal.linear_pred.weight"].shape[0] == 2
    target = make(arch, seed=1)
    image = torch.randn(2, 3, *TINY[arch]["img_size"])
    with torch.no_grad():
        assert not torch.allclose(target(image).final["semseg"], source(image).final["semseg"])
        extra = load_official_into(target, path)
        assert extra["iter_count"] == 1234 and extra["dropped"] == []
        expected, got = source(image), target(image)
    for task in PASCAL:
        assert torch.equal(got.final[task], expected.final[task]), task
    for stage, outputs in expected.aux.items():
        for task, value in outputs.items():
            assert torch.equal(got.aux[stage][task], value)


@pytest.mark.parametrize("arch", VARIANTS)
def test_the_config_task_order_does_not_matter(arch, tmp_path):
    source = make(arch, seed=0)
    path = tmp_path / "official.pth.tar"
    official_file(source, path)
    shuffled = list(PASCAL)
    random.Random(3).shuffle(shuffled)
    target = make(arch, tasks=tuple(shuffled), seed=2)
    assert target.task_names == source.task_names  # processed in the official order
    load_official_into(target, path)
    image = torch.randn(1, 3, 64, 64)  # the Swin variant resizes it to its 64×128
    with torch.no_grad():
        assert all(torch.equal(target(image).final[t], source(image).final[t]) for t in PASCAL)


@pytest.mark.parametrize("arch", VARIANTS)
def test_the_key_maps_give_the_official_module_names_and_shapes(arch):
    """Against the official state dicts of the same tiny models: every key name and shape, as the official
    module definitions (prismformore/Multi-Task-Transformer at 870c6be) give them (tests/models/data/,
    names and shapes only, generated outside this repository)."""
    import json
    from pathlib import Path

    official = json.loads((Path(__file__).parent / "data" / "official_state_keys.json").read_text())[arch]
    model = make(arch)
    ours = {k: list(v.shape) for k, v in to_official_state(model, model.official_key_map, model.task_names).items()}
    assert ours.keys() <= official.keys(), sorted(ours.keys() - official.keys())[:5]
    assert {k: official[k] for k in ours} == ours
    unbuilt = sorted(official.keys() - ours.keys())
    assert all(model.official_key_map.dropped(k) for k in unbuilt), unbuilt
    # and a state dict of those names and shapes converts with nothing missing or unexpected
    state = {k: torch.randn(shape) if shape else torch.tensor(0) for k, shape in official.items()}
    state = {k: (v.abs() + 0.5 if "running_var" in k else v) for k, v in state.items()}
    converted, dropped = convert_state(state, model, model.official_key_map, model.task_names)
    assert dropped == unbuilt
    model.load_state_dict(converted)
    official_params = sum(
        torch.Size(shape).numel()
        for k, shape in official.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked", "relative_position_index", "attn_mask"))
    )
    assert official_parameter_count(model) == official_params


def test_parameters_the_official_forward_never_uses_are_dropped_and_named(tmp_path):
    source = make("invpt")
    d0, t = 24, len(PASCAL)
    unused = {
        "multi_task_decoder.scale_embed.2.weight": torch.zeros(d0, 64, 3, 3),
        "multi_task_decoder.scale_embed.2.bias": torch.zeros(d0),
        "multi_task_decoder.invpt.norm_mt.weight": torch.ones(t * d0 // 4),
        "multi_task_decoder.invpt.invpt_stages.0.blocks.0.attn.fuse_attn.weight": torch.zeros(2, 4, 1, 1),
        **{f"multi_task_decoder.invpt.redu_chan.0.{i}.weight": torch.zeros(d0, d0, 1, 1) for i in range(t)},
    }
    path = tmp_path / "official.pth.tar"
    official_file(source, path, unused)
    target = make("invpt", seed=1)
    extra = load_official_into(target, path)
    assert sorted(extra["dropped"]) == sorted(unused)
    # the model's official layout counts them: ours + unused + the second channel of the saliency head
    ours = sum(p.numel() for p in source.parameters())
    saliency_head = source.heads["saliency"].weight.numel() + 1
    unbuilt = 64 * d0 * 9 + d0 + t * (d0 * d0 + d0) + 2 * t * d0 // 4 + 10
    assert official_parameter_count(source) == ours + unbuilt + saliency_head


def test_unknown_missing_and_misshapen_keys_are_listed(tmp_path):
    source = make("invpt")
    state = to_official_state(source, source.official_key_map, source.task_names)
    bad = dict(state)
    bad["multi_task_decoder.invpt.something_new.weight"] = torch.zeros(3)
    del bad["multi_task_decoder.invpt.mt_proj.edge.0.weight"]
    bad["heads.semseg.linear_pred.weight"] = torch.zeros(7, 24, 1, 1)
    target = make("invpt", seed=1)
    path = tmp_path / "bad.pth.tar"
    torch.save({"model": bad}, path)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_official_into(target, path)
    message = str(error.value)
    assert "unexpected keys: multi_task_decoder.invpt.something_new.weight" in message
    assert "missing keys: fuse.edge.0.weight" in message
    assert "heads.semseg.linear_pred.weight (7, 24, 1, 1) vs heads.semseg.weight (5, 24, 1, 1)" in message
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())  # nothing was loaded


def test_a_checkpoint_for_other_tasks_or_another_method_is_refused(tmp_path):
    nyud = make("invpt", tasks=("semseg", "depth", "normals", "edge"))
    path = tmp_path / "nyud.pth.tar"
    official_file(nyud, path)
    with pytest.raises(CheckpointError, match=r"heads for \['depth', 'edge', 'normals', 'semseg'\].*'human_parts', 'sal'"):
        load_official_into(make("invpt"), path)
    with pytest.raises(CheckpointError, match="not a TaskPrompter checkpoint"):
        load_official_into(make("taskprompter"), path)
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt.pth.tar"):
        read_official(corrupt)


# parameters of the released configurations in the official code's layout, counted by building
# the official modules (prismformore/Multi-Task-Transformer at 870c6be) outside this repository
OFFICIAL_COUNTS = {
    "configs/nyud/invpt.yaml": 402_092_888,  # published: 402.1 M (MQTransformer's README)
    "configs/pascal_context/invpt.yaml": 422_929_810,
    "configs/nyud/taskprompter.yaml": 513_505_709,
    "configs/pascal_context/taskprompter.yaml": 401_104_864,
    "configs/pascal_context/taskprompter_vitb.yaml": 418_332_214,
    "configs/cityscapes/taskprompter.yaml": 274_589_218,  # the Swin-B variant, less its 3D-detection head
}


@pytest.mark.parametrize("path", sorted(OFFICIAL_COUNTS))
def test_released_configurations_have_the_official_parameter_counts(path):
    from scenemtl.engine.builder import build_tasks, dataset_info

    config = load_config(REPO / path, ["model.backbone.weights=null"])
    with torch.device("meta"):
        model = build_model(config.model, build_tasks(config, dataset_info(config)))
    assert official_parameter_count(model) == OFFICIAL_COUNTS[path]


def test_taskprompter_resizes_other_sizes_to_its_training_grid():
    model = make("taskprompter")
    image = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        output = model(image).final
        inner = model(F.interpolate(image, size=(64, 64), mode="bilinear", align_corners=False)).final
    for task, logits in output.items():
        assert logits.shape[-2:] == (48, 80)
    # as resizing by hand (up to the extra resampling of the logits: the model goes from its
    # 1/4 map straight to the input size, by hand goes through 64×64)
    by_hand = F.interpolate(inner["normals"], size=(48, 80), mode="bilinear", align_corners=False)
    assert (by_hand - output["normals"]).abs().max() < 0.1 * output["normals"].abs().max()
    with pytest.raises(ConfigError, match="chan_nheads must be a square"):
        make("taskprompter", chan_nheads=3)
    with pytest.raises(ConfigError, match="runs on a ViT"):
        build_model(
            ModelConfig(arch="taskprompter", backbone={"name": "test_resnet"}, options=TINY["taskprompter"]),
            {"depth": build_task("depth", {})},
        )


def test_invpt_takes_any_size_and_any_backbone():
    model = make("invpt", tasks=("semseg", "depth"))
    with torch.no_grad():
        for size in ((40, 72), (128, 192)):
            assert model(torch.randn(1, 3, *size)).final["depth"].shape[-2:] == size
    cnn = build_model(
        ModelConfig(arch="invpt", backbone={"name": "test_resnet"}, options={"embed_dim": 16, "pred_channels": 8}),
        {"depth": build_task("depth", {})},
    )
    assert cnn(torch.randn(2, 3, 33, 47)).final["depth"].shape[-2:] == (33, 47)
    with pytest.raises(ConfigError, match="layers must be 3 increasing block numbers"):
        make("invpt", layers=[4, 2, 6])
    with pytest.raises(ConfigError, match="does not divide"):
        make("invpt", num_heads=[5, 2, 2])


@pytest.mark.parametrize("arch", VARIANTS)
def test_activation_checkpointing_gives_the_same_gradients(arch, monkeypatch):
    import timm.models.vision_transformer as timm_vit

    import scenemtl.models.backbones.vit as vit
    import scenemtl.models.taskprompter.prompted_swin as swin
    import scenemtl.models.taskprompter.vit as taskprompter

    calls = []

    def counting(function, *args, **kwargs):
        calls.append(function)
        kwargs.setdefault("use_reentrant", False)
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    # (InvPT reads its ViT through timm's forward_intermediates, which checkpoints with timm's own helper)
    for module in (vit, taskprompter, swin, timm_vit):
        monkeypatch.setattr(module, "checkpoint", counting)
    grads = []
    for enabled in (False, True):
        model = make(arch, tasks=("semseg", "saliency")).train()
        model.set_activation_checkpointing(enabled)
        torch.manual_seed(5)
        output = model(torch.randn(2, 3, *TINY[arch]["img_size"]))
        sum(v.float().square().mean() for v in output.final.values()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert len(calls) == (0 if not enabled else 6 if arch != "taskprompter_swin" else 8)  # one per block
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("fusion", ["dense", "factored"])
def test_invpt_fuses_contiguous_maps_and_its_checkpoints_keep_nothing_at_a_quarter(fusion):
    """The dense 1/4-resolution fusion (the step's costliest convolution) reads NCHW maps: the stage maps are views
    of tokens, whose channels-last strides resize would carry into the convolution (its backward about 1.6× slower
    on a CPU); the factored one never calls the convolution module. With activation checkpointing, no activation
    at 1/4 is kept for the backward pass: the aggregation is recomputed from the stages' maps with the fusion."""
    model = make("invpt", tasks=("semseg", "depth", "edge"), fusion=fusion).train()
    seen = []
    for block in model.fuse.values():
        block[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].is_contiguous()))
    image = torch.randn(2, 3, 64, 64)
    model(image)
    assert seen == ([True] * 3 if fusion == "dense" else [])
    model.set_activation_checkpointing(True)
    saved = []

    def pack(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(image)
    quarter = (32, 32)  # (the 64×64 image is padded to 128×128)
    assert saved and not [shape for shape in saved if len(shape) == 4 and quarter in (shape[-2:], shape[1:3])]
    sum(v.square().mean() for v in output.final.values()).backward()  # (the recomputation runs)
    assert all(p.grad is not None for p in model.fuse.parameters())


@pytest.mark.parametrize("arch", VARIANTS)
def test_bf16_autocast_runs_and_stays_close(arch):
    model = make(arch, tasks=("semseg", "depth"))
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(image).final
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(image).final
    for task, value in reference.items():
        assert low[task].dtype == torch.float32  # output convolutions in float32
        assert torch.isfinite(low[task]).all()
        assert (low[task] - value).abs().max() < 0.1 * value.abs().max() + 0.05, task


def test_vit_backbone_resamples_a_local_weight_file(tmp_path):
    import timm
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    from scenemtl.config import BackboneConfig
    from scenemtl.models.backbones import ViTBackbone

    reference = timm.create_model("test_vit", num_classes=0)  # stored at 160×160 (a 10×10 grid)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    backbone = ViTBackbone(BackboneConfig(name="test_vit", weights=str(path)), img_size=(64, 96))
    assert backbone.grid == (4, 6)
    expected = resample_abs_pos_embed(reference.pos_embed, new_size=[4, 6], old_size=[10, 10], num_prefix_tokens=1)
    assert torch.allclose(backbone.vit.pos_embed, expected, atol=1e-6)
    assert torch.equal(backbone.vit.blocks[2].mlp.fc1.weight, reference.blocks[2].mlp.fc1.weight)
    maps = backbone.features(torch.randn(1, 3, 32, 48), layers=(2, 6))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 2, 3), (1, 64, 2, 3)]
    # features pad a side that does not divide by the patch (⌈30/16⌉ = 2 rows); embed, which the prompting reads, refuses it
    assert tuple(backbone.features(torch.randn(1, 3, 30, 48), layers=(6,))[0].shape) == (1, 64, 2, 3)
    with pytest.raises(ConfigError, match="not a multiple of the patch size 16"):
        backbone.embed(torch.randn(1, 3, 30, 48))


def test_swin_and_vit_serve_the_cnn_architectures_too():
    tasks = {"semseg": build_task("semseg", {}, CLASSES), "depth": build_task("depth", {})}
    swin = {"name": "swin_tiny_patch4_window7_224", "options": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}}
    for backbone in (swin, {"name": "test_vit"}):
        model = build_model(ModelConfig(arch="hps", backbone=backbone, options={"head_channels": 8}), tasks)
        output = model(torch.randn(2, 3, 33, 47))
        assert output.final["semseg"].shape == (2, 5, 33, 47)
    assert model.backbone.strides == [16, 16, 16]
    invpt = build_model(ModelConfig(arch="invpt", backbone=swin, options={"embed_dim": 16, "pred_channels": 8}), tasks)
    assert invpt(torch.randn(1, 3, 33, 47)).final["depth"].shape[-2:] == (33, 47)


def test_swin_taskprompter_takes_any_size_and_checks_its_options():
    model = make("taskprompter_swin", tasks=("semseg", "depth")).train()
    output = model(torch.randn(2, 3, 45, 70))
    assert output.final["depth"].shape == (2, 1, 45, 70)
    sum(v.square().mean() for v in output.final.values()).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]  # every parameter reaches an output
    with pytest.raises(ConfigError, match="no use_ctr or layers"):
        make("taskprompter_swin", use_ctr=True)
    with pytest.raises(ConfigError, match="must be\n?.*squares"):
        make("taskprompter_swin", chan_embed_dim=15)
    with pytest.raises(ConfigError, match="chan_embed_dim is the Swin variant's"):
        make("taskprompter", chan_embed_dim=16)
    with pytest.raises(ConfigError, match="must divide by 32"):
        make("taskprompter_swin", img_size=[48, 96])


@pytest.mark.parametrize("arch, options", [(v, {}) for v in VARIANTS] + [("taskprompter", {"use_ctr": False})])
def test_shared_parameters_are_what_every_task_reaches(arch, options):
    model = make(arch, tasks=("semseg", "depth", "normals"), **options).train()
    shared = {id(p) for p in model.shared_parameters()}
    output = model(torch.randn(2, 3, *TINY[arch]["img_size"]))
    names = dict(model.named_parameters())
    reached = {}
    for task in ("semseg", "depth", "normals"):
        values = [output.final[task]] + [stage[task] for stage in output.aux.values()]
        grads = torch.autograd.grad(sum(v.square().mean() for v in values), list(names.values()), retain_graph=True, allow_unused=True)
        reached[task] = {n for (n, p), g in zip(names.items(), grads) if g is not None}
    everyone = set.intersection(*reached.values())
    assert {n for n, p in names.items() if id(p) in shared} == everyone


def test_option_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match="fusion"):
        make("invpt", fusion="fast")
    for arch, options, match in [
        ("invpt", {"img_size": 512}, r"'model.options.img_size' for 'invpt' must be Sequence\[int\], got 512"),
        ("invpt", {"img_size": [512]}, "img_size must be 2 positive integers"),
        ("invpt", {"num_heads": 2}, r"num_heads' for 'invpt' must be Sequence\[int\]"),
        ("invpt", {"num_heads": [2, 2]}, "num_heads must be 3 positive integers"),
        ("invpt", {"layers": [1, 2]}, "layers must be 3 increasing block numbers"),
        ("taskprompter", {"layers": [1, 2]}, "layers must be 3 increasing"),
        ("taskprompter", {"head": "mlp"}, "head must be 'conv'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            make(arch, **options)
    tasks = {"depth": build_task("depth", {})}
    with pytest.raises(ConfigError, match="16-pixel patches"):  # (invpt takes patch-14 ViTs: tests/models/test_foundation_backbones.py)
        build_model(
            ModelConfig(
                arch="taskprompter",
                backbone={"name": "vit_small_patch14_dinov2", "options": {"embed_dim": 32, "depth": 4, "num_heads": 2}},
                options={"img_size": [56, 56], "embed_dim": 8, "final_embed_dim": 8, "chan_nheads": 4},
            ),
            tasks,
        )
    with pytest.raises(ConfigError, match="Swin \\(v1"):
        build_model(
            ModelConfig(arch="taskprompter", backbone={"name": "swinv2_tiny_window8_256"}, options=TINY["taskprompter_swin"]), tasks
        )


def test_info_of_a_configuration_the_official_code_lacks_has_no_official_layout():
    tasks = {"depth": build_task("depth", {})}
    model = build_model(ModelConfig(arch="invpt", backbone=TINY_SWIN, options={"embed_dim": 16, "pred_channels": 8}), tasks)
    assert official_parameter_count(model) is None
    assert official_parameter_count(make("invpt")) is not None


def test_invpt_checkpointing_recomputes_the_decoder_with_the_same_gradients_and_statistics(monkeypatch):
    """InvPT's checkpointing also recomputes each task's preliminary decoder and upsamplings, the three
    UP-Transformer blocks and each task's 1/4-scale fusion:
    the same gradients and, with the batch norms inside them, the same running statistics and batch counts."""
    import copy

    import scenemtl.models.layers.recompute as recompute

    calls = []
    original = recompute.checkpoint
    monkeypatch.setattr(recompute, "checkpoint", lambda function, *a, **k: calls.append(function) or original(function, *a, **k))
    torch.manual_seed(3)
    plain = make("invpt", tasks=("semseg", "depth", "normals")).train()
    saved = copy.deepcopy(plain)
    saved.set_activation_checkpointing(True)
    image = torch.randn(2, 3, *TINY["invpt"]["img_size"])
    for model in (plain, saved):
        output = model(image)
        sum(v.float().square().mean() for stage in [output.final, *output.aux.values()] for v in stage.values()).backward()
    assert len(calls) == 3 + 2 * 3 + 3 + 3  # per task: preliminary decoder, two upsamplings, tail; three blocks
    for (name, p), q in zip(plain.named_parameters(), saved.parameters()):
        assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), name
    for (name, a), b in zip(plain.state_dict().items(), saved.state_dict().values()):
        assert torch.equal(a, b), name  # running means, variances and batch counts counted once


def test_invpt_factored_fusion_is_the_dense_fusion():
    """``fusion: factored`` (the CPU default) computes the reduction, resize, sum and 3×3 convolution at 1/4 at the
    stages' resolutions: the same outputs, gradients and batch-norm statistics as the dense convolution, in
    training and in evaluation, and the same counted multiply-adds (``scenemtl info`` counts the architecture)."""
    import copy

    from scenemtl.engine.info import count_macs

    torch.manual_seed(5)
    dense = make("invpt", tasks=("semseg", "depth", "normals"), fusion="dense").train()
    factored = copy.deepcopy(dense)
    factored.fusion = "factored"
    image = torch.randn(2, 3, 64, 96)
    outputs = []
    for model in (dense, factored):
        output = model(image)
        outputs.append(output.final)
        sum(v.square().mean() for v in output.final.values()).backward()
    for task, value in outputs[0].items():
        assert torch.allclose(outputs[1][task], value, rtol=1e-4, atol=1e-5), task
    for (name, p), q in zip(dense.named_parameters(), factored.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(q.grad, p.grad, rtol=1e-3, atol=1e-6 + 1e-4 * p.grad.abs().max().item()), name
    for (name, a), b in zip(dense.state_dict().items(), factored.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6), name
    with torch.no_grad():
        evaluated = [model.eval()(image).final for model in (dense, factored)]
    for task, value in evaluated[0].items():
        assert torch.allclose(evaluated[1][task], value, rtol=1e-4, atol=1e-5), task
    assert count_macs(factored, (64, 64)) == count_macs(dense, (64, 64))
    automatic = copy.deepcopy(dense)
    automatic.fusion = "auto"
    calls = []
    automatic.fuse["semseg"][0].register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        automatic(image)
    assert not calls  # on a CPU "auto" is factored
