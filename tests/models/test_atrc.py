"""ATRC: parameter counts as the official heads, released genotype files, context blocks, search choices."""

import json

import pytest
import torch
import torch.nn.functional as F

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models import build_model
from scenemtl.models.atrc import (
    ContextChoice,
    fibonacci_sphere,
    genotype_json,
    load_genotype,
    local_attention,
)
from scenemtl.tasks import build_task

NYUD = ["semseg", "depth", "normals", "edge"]
# brdav/atrc genotypes/atrc_nyud_hrnet18.json ("data": target → source → code), as released
RELEASED_NYUD_HRNET18 = {
    "data": {
        "semseg": {"semseg": 3, "depth": 3, "normals": 4, "edge": 4},
        "depth": {"semseg": 4, "depth": 3, "normals": 4, "edge": 4},
        "normals": {"semseg": 4, "depth": 3, "normals": 3, "edge": 4},
        "edge": {"semseg": 3, "depth": 3, "normals": 1, "edge": 3},
    },
    "step": 40000,
}
HRNET18 = {"name": "hrnet_w18_small_v2", "options": {"feature_location": ""}}  # the four raw branches


@pytest.fixture(autouse=True)
def _one_thread():
    # these tensors are tiny: a second thread only adds hand-off costs on a shared CPU
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def nyud_tasks(classes=40):
    return {n: build_task(n, {}, {"semseg": [f"c{i}" for i in range(classes)]}) for n in NYUD}


def tiny(arch="atrc", tasks=None, **options):
    tasks = tasks or nyud_tasks(4)
    config = ModelConfig(arch=arch, backbone={"name": "test_resnet"}, options={"channels": 8, **options})
    return build_model(config, tasks), tasks


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_official_heads(tmp_path):
    # HRNet-18 on NYUD: in = 18+36+72+144 = 270 channels at 1/4, C = 270 // 4 = 67, a = 67 // 2 = 33.
    #   bottleneck 4 × (270·67·9 + 2·67)               = 651,776
    #   aux_conv   4 × (270·270 + 2·270)               = 293,760  (every task's regions are read)
    #   aux_logits 271 × (40 + 40 + 40 + 2)            =  33,062  (semseg 40, depth/normals 40 bins, edge 2)
    #   final      68 × (40 + 1 + 3 + 1)               =   3,060
    #   a block (global or label): query/key 2 × (67·33 + 66 + 33·33 + 66), value 67·33 + 66 = 9,141;
    #   16 blocks = 146,256; projection 4 × (4·33·67 + 134) = 35,912; fusion 4 × (134·67 + 134) = 36,448
    #   head = 1,200,274: the count of brdav/atrc's RelationalContextHead built with this genotype.
    path = tmp_path / "atrc_nyud_hrnet18.json"
    path.write_text(json.dumps(RELEASED_NYUD_HRNET18, indent=4))
    tasks = nyud_tasks()
    config = ModelConfig(arch="atrc", backbone=HRNET18, options={"decoder_stride": 4, "genotype": str(path)})
    model = build_model(config, tasks)
    backbone = count(model.backbone)
    assert backbone == 3_860_720  # brdav/atrc's hrnetv2p_w18_s (timm's hrnet_w18_small_v2 is the same network)
    assert count(model) - backbone == 1_200_274
    # null: every pair global, no auxiliary heads (brdav/atrc's GlobalRelationalContextHead):
    # 651,776 + 3,060 + 146,256 + 35,912 + 36,448
    plain = build_model(config.model_copy(update={"options": {"decoder_stride": 4}}), tasks)
    assert count(plain) - backbone == 873_452
    # search space: value BNs without affine (9,141 − 66 = 9,075 per block), 12 pairs × 4 + 4 self-pairs × 3
    # blocks = 544,500, logits 12 × 5 + 4 × 4 = 76, plus projection, fusion (no dropout), bottleneck, aux, final
    search = build_model(config.model_copy(update={"arch": "atrc_search", "options": {"decoder_stride": 4}}), tasks)
    assert count(search) - backbone == 1_598_594  # brdav/atrc's RelationalContextSearchHead


def test_released_format_loads_with_atrc_task_names_and_round_trips(tmp_path):
    pascal = {"data": {t: {s: 3 for s in ("semseg", "sal", "normals")} for t in ("semseg", "sal", "normals")}, "step": 1}
    pascal["data"]["sal"]["normals"] = 4
    pascal["data"]["semseg"]["normals"] = 0
    path = tmp_path / "pascal.json"
    path.write_text(json.dumps(pascal))
    genotype = load_genotype(str(path), ["semseg", "saliency"])  # a subset of the file's tasks is fine
    assert genotype == {"semseg": {"semseg": 3, "saliency": 3}, "saliency": {"semseg": 3, "saliency": 3}}
    full = load_genotype(path, ["semseg", "saliency", "normals"])
    assert full["saliency"]["normals"] == 4 and full["semseg"]["normals"] == 0
    written = genotype_json(full, step=7)
    assert written["step"] == 7 and set(written["data"]) == {"semseg", "sal", "normals"}
    assert load_genotype(written, ["semseg", "saliency", "normals"]) == full
    assert load_genotype(None, ["depth"]) == {"depth": {"depth": 1}}  # default: global context
    assert load_genotype("s-label", ["depth", "edge"])["edge"]["depth"] == 4


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"data": {"semsag": {}}}), "unknown task 'data.semsag'"),
        (json.dumps({"data": {"semseg": {"semseg": 1, "depth": 1}}}), "no entry 'data.depth' for the target task 'depth'"),
        (json.dumps({"data": {"semseg": {"semseg": 1}, "depth": {"depth": 1}}}), "'data.semseg' has no source 'depth'"),
        (
            json.dumps({"data": {t: {s: 7 for s in ("semseg", "depth")} for t in ("semseg", "depth")}}),
            "'data.semseg.semseg' = 7 is not a context code",
        ),
    ],
)
def test_genotype_errors_name_the_file_and_the_key(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        load_genotype(str(path), ["semseg", "depth"])
    assert str(path) in str(error.value)
    with pytest.raises(ConfigError, match="genotype file not found"):
        load_genotype(str(tmp_path / "missing.json"), ["semseg"])


def test_options_are_checked():
    with pytest.raises(ConfigError, match="model.options.window"):
        tiny(window=4)
    with pytest.raises(ConfigError, match="model.options.channels"):
        tiny(channels=1)
    with pytest.raises(ConfigError, match="depth_range"):
        tiny(depth_range=[5.0, 1.0])
    with pytest.raises(ConfigError, match="temperature"):
        tiny("atrc_search", temperature=[1.0])
    with pytest.raises(ConfigError, match="Did you mean 'genotype'"):
        tiny(genotyp="global")


def test_context_starts_switched_off_and_aux_heads_read_detached_features():
    model, tasks = tiny(genotype="t-label")
    assert all(torch.all(p[1].weight == 0) and torch.all(p[1].bias == 0) for p in model.context.project.values())
    image = torch.randn(2, 3, 32, 48)
    output = model(image)
    assert set(output.aux) == {"initial"} and set(output.aux["initial"]) == set(tasks)
    for name, task in tasks.items():
        assert output.aux["initial"][name].shape == (2, task.out_channels, 32, 48)
    # ATRC's widths: classes, 40 depth bins, 40 normal directions, 2 for edges
    assert [model.aux_logits[t].out_channels for t in NYUD] == [4, 40, 40, 2]
    # the auxiliary losses never reach the backbone ...
    sum(v.square().mean() for v in output.aux["initial"].values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.aux_conv.parameters())
    # ... while the final losses train the auxiliary heads through the label contexts
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for project in model.context.project.values():
            project[1].weight.fill_(1.0)
    sum(v.square().mean() for v in model(image).final.values()).backward()
    assert any(p.grad.abs().sum() > 0 for p in model.aux_conv.parameters())


def test_aux_decoding_is_in_each_task_format():
    model, _ = tiny(genotype="t-label")
    logits = torch.randn(1, 2, 5, 5)
    assert torch.equal(model.aux_decode["edge"](logits), logits[:, 1:2] - logits[:, 0:1])
    depth = model.aux_decode["depth"](torch.randn(1, 40, 5, 5) * 10)
    assert depth.shape == (1, 1, 5, 5) and depth.min() > 0.7 and depth.max() < 10.0  # ATRC's 0.7–10 m bins
    directions = fibonacci_sphere(40)
    assert torch.allclose(directions.norm(dim=1), torch.ones(40)) and directions.mean(0).abs().max() < 0.05


def test_local_attention_is_a_window_softmax_with_zero_outside():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 6, 7), torch.randn(2, 4, 6, 7)
    window = 5
    # reference: the 25 neighbours of every pixel (zero-padded), as ATRC's CUDA kernels index them
    keys = F.unfold(k, window, padding=window // 2).view(2, 3, window * window, 6 * 7)
    values = F.unfold(v, window, padding=window // 2).view(2, 4, window * window, 6 * 7)
    scores = (q.view(2, 3, 1, 42) * keys).sum(1) / 3**0.5
    expected = (scores.softmax(1).unsqueeze(1) * values).sum(2).view(2, 4, 6, 7)
    assert torch.allclose(local_attention(q, k, v, window), expected, atol=1e-6)


def test_a_pair_freezes_once_its_margin_is_reached():
    torch.manual_seed(0)
    choice = ContextChoice([1, 2, 3, 4], channels=4, att_channels=2, window=3, margin=0.3)
    target, source = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    regions = torch.softmax(torch.randn(2, 3, 30), -1)
    weights, index = choice.mixture(temperature=1.0)  # soft Gumbel sample while undecided
    assert index is None and torch.isclose(weights.sum(), torch.tensor(1.0)) and bool((weights > 0).all())
    with torch.no_grad():
        choice.arch_param.copy_(torch.tensor([0.0, 0.0, 2.0, 0.0, 0.0]))  # softmax margin 0.65 ≥ 0.3
    out = choice(target, source, regions, regions, temperature=1.0)
    assert choice.frozen and choice.fixed_weights.tolist() == [0, 0, 1, 0, 0] and out.shape == (2, 2, 5, 6)
    with torch.no_grad():
        choice.arch_param.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0, 0.0]))
    assert choice.mixture(1.0)[1] == 2  # irreversible
    fresh = ContextChoice([1, 2, 3], channels=4, att_channels=2, window=3, margin=0.3)
    with torch.no_grad():
        fresh.arch_param.copy_(torch.tensor([0.0, 0.1, 0.0, 0.0]))
    fresh.eval()
    assert fresh.mixture(1.0)[1] == 1 and not fresh.frozen  # evaluation: the arg-max, nothing frozen
    assert fresh(target, source, regions, regions, 1.0).shape == (2, 2, 5, 6)


def test_search_schedules_entropy_and_genotype():
    model, tasks = tiny("atrc_search")
    model.set_search_progress(0, 10)
    assert (model.temperature, model.entropy_weight) == pytest.approx((1.0, -0.02))
    model.set_search_progress(5, 10)
    assert (model.temperature, model.entropy_weight) == pytest.approx((0.525, 0.02))
    model.set_search_progress(10, 10)
    assert (model.temperature, model.entropy_weight) == pytest.approx((0.05, 0.06))
    # uniform logits: 12 pairs over 5 choices, 4 self-pairs over 4 (no s-label for t = s)
    expected = (12 * torch.log(torch.tensor(5.0)) + 4 * torch.log(torch.tensor(4.0))) / 16
    assert torch.isclose(model.entropy(), expected)
    assert model.genotype() == {t: {s: 0 for s in tasks} for t in tasks}  # arg-max of ties: none, as ATRC's
    with torch.no_grad():
        model.context.choices["depth"]["edge"].arch_param[4] = 1.0
    assert model.genotype()["depth"]["edge"] == 4
    assert len(model.arch_parameters()) == 16
    assert len(model.weight_parameters()) + 16 == len(list(model.parameters()))
