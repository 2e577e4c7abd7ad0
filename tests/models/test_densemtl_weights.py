"""DenseMTL's released weights (``{sy,vk,cs}_densemtl_{SD,SDN}.pkl``) through xtam's key map.

The official state dicts are described here from the structure of the official modules, not by
importing them (astra-vision/DenseMTL):

- ``training/base.py`` (``save_model``): ``torch.save(self.model.state_dict(), 'model_<step>.pkl')``, a bare
  state dict of the ``OursAtt`` module (``training/__init__.py``: no DataParallel wrapper in the FS setting);
- ``models/ours_xatt.py``: ``OursAtt`` registers ``backbone``, ``heads`` (a ModuleDict of task heads), ``m``
  (``m[t][str(stage)]`` a ModuleDict of ``extract_<s>``, ``SA_<s>``, ``SxTAM_<s>``, ``CxTAM_<s>``,
  ``proj_<s>`` per other task s, and ``post``) and ``params`` (``params[t] = ModuleList([heads[t], m[t]])``,
  the same modules a second time); ablation ``['SxTAM', 'SA', 'add']``: ``CxTAM`` is an identity, the
  projection reads 1.5 C channels, ``post`` (T - 1) C;
- ``models/components.py``: ``SxTAM`` (``conv_b``/``conv_c``: conv-BN-ReLU-Flatten, ``conv_d``: conv-BN-ReLU,
  1×1 without bias; ``alpha``), ``Project`` (1×1 conv without bias, BN, ReLU), ``Extractor`` (3×3 conv, ReLU);
  ``vendor/mtlpt/layers.py``: ``SABlock`` (``attention``: 3×3 conv without bias + sigmoid, ``conv``);
- ``vendor/monodepth2/resnet_encoder.py``: ``ResnetEncoder.encoder`` is torchvision's ResNet
  (``models/parts.py``: ``fc`` and ``avgpool`` replaced by identities, ``use_dilation: [False, False, True]``);
- ``vendor/monodepth2/decoder.py``: ``DecoderHead.decoder = nn.ModuleList(convs.values())`` with ``convs``
  in the order upconv(i, 0), skip_proj(i) (an identity for i > 0), upconv(i, 1) for i = 4 … 0, then
  side(0), side(1) (1×1 convolutions: ``is_regression`` is off); upconv(4, 0) is the ASPP of
  ``vendor/three_ways/model_parts.py`` (``convs``: 1×1, one 3×3 per rate, image pooling; ``project``), the
  others monodepth2's ``ConvBlock`` (``vendor/monodepth2/layers.py``: ``block = [Conv3x3(pad, conv),
  Identity (no batch norm), ELU, Identity (no dropout)]``).
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
import yaml
from torch import nn

from scenemtl.cli import main
from scenemtl.config import ModelConfig, load_config
from scenemtl.engine.builder import build_tasks, dataset_info
from scenemtl.engine.checkpoint import read_meta
from scenemtl.errors import CheckpointError
from scenemtl.models import build_model
from scenemtl.models.official import (
    convert_state,
    is_official_file,
    load_official_into,
    official_parameter_count,
    to_official_state,
)
from scenemtl.tasks import build_task
from tests.conftest import TINY
from tests.models.test_transformers import REPO

RESNET101 = (64, 256, 512, 1024, 2048)  # monodepth2's num_ch_enc for ResNet-101
DECODER = (64, 128, 128, 256, 256)  # the configs' num_ch_dec
RATES = (6, 12, 18)
TINY_DECODER = [4, 8, 8, 8, 8]


# -- the official module structure, described independently ------------------------------------------------------
def _named(**children: nn.Module) -> nn.Module:
    module = nn.Module()
    for name, child in children.items():
        module.add_module(name, child)
    return module


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, *tail: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), *tail)


def _conv_block(cin: int, cout: int) -> nn.Module:
    """monodepth2's ConvBlock(bn=False, dropout=0)."""
    conv3x3 = _named(pad=nn.ReflectionPad2d(1), conv=nn.Conv2d(cin, cout, 3))
    return _named(block=nn.Sequential(conv3x3, nn.Identity(), nn.ELU(), nn.Identity()))


def _aspp(cin: int, cout: int) -> nn.Module:
    pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    convs = nn.ModuleList([_conv_bn_relu(cin, cout), *[_conv_bn_relu(cin, cout, 3) for _ in RATES], pooling])
    return _named(convs=convs, project=_conv_bn_relu((2 + len(RATES)) * cout, cout, 1, nn.Dropout(0.5)))


def _decoder_head(encoder: tuple[int, ...], decoder: tuple[int, ...], out: int) -> nn.Module:
    convs: list[nn.Module] = []
    for i in range(4, -1, -1):
        cin = encoder[-1] if i == 4 else decoder[i + 1]
        convs.append(_aspp(cin, decoder[i]) if i == 4 else _conv_block(cin, decoder[i]))
        cin = decoder[i]
        if i > 0:
            convs.append(nn.Identity())  # skip_proj (n_project_skip_ch = -1)
            cin += encoder[i - 1]
        convs.append(_conv_block(cin, decoder[i]))
    convs += [nn.Conv2d(decoder[s], out, 1) for s in (0, 1)]  # side(0), side(1)
    return _named(decoder=nn.ModuleList(convs))


def _sxtam(c: int) -> nn.Module:
    module = _named(
        conv_b=_conv_bn_relu(c, c, 1, nn.Flatten(2)),
        conv_c=_conv_bn_relu(c, c, 1, nn.Flatten(2)),
        conv_d=_conv_bn_relu(c, c),
    )
    module.alpha = nn.Parameter(torch.zeros(1, c, 1, 1))
    return module


def official_model(outs: dict[str, int], encoder: nn.Module, channels: tuple[int, ...], decoder: tuple[int, ...]) -> nn.Module:
    """A module with the state-dict names and shapes of DenseMTL's ``OursAtt`` (stage 1, C = decoder[1])."""
    c, tasks = decoder[1], list(outs)
    heads = nn.ModuleDict({t: _decoder_head(channels, decoder, n) for t, n in outs.items()})
    m = nn.ModuleDict()
    for t in tasks:
        others = [s for s in tasks if s != t]
        block = nn.ModuleDict()
        for s in others:
            block[f"extract_{s}"] = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        for s in others:
            attention = nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1, bias=False), nn.Sigmoid())
            block[f"SA_{s}"] = _named(attention=attention, conv=nn.Conv2d(c, c // 2, 3, padding=1, bias=False))
        for s in others:
            block[f"SxTAM_{s}"] = _sxtam(c)
        for s in others:
            block[f"CxTAM_{s}"] = nn.Identity()
        for s in others:
            block[f"proj_{s}"] = _conv_bn_relu(int(1.5 * c), c)
        block["post"] = _conv_bn_relu((len(tasks) - 1) * c, c)
        m[t] = nn.ModuleDict({"1": block})
    setup = _named(backbone=_named(encoder=encoder), heads=heads, m=m)
    setup.params = nn.ModuleDict({t: nn.ModuleList([heads[t], m[t]]) for t in tasks})
    return setup


def resnet101_encoder() -> nn.Module:
    encoder = torchvision.models.resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
    encoder.avgpool, encoder.fc = nn.Identity(), nn.Identity()
    return encoder


def randomised(state: dict[str, torch.Tensor], seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """The state with random values (a tensor stored under two names keeps one value, as in the official file)."""
    generator = torch.Generator().manual_seed(seed)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    seen: dict[int, torch.Tensor] = {}
    for key, value in state.items():
        if value.data_ptr() not in seen:
            if value.is_floating_point():
                fresh = torch.rand(value.shape, generator=generator) + 0.5
            else:
                fresh = torch.randint(0, 1000, value.shape, generator=generator, dtype=value.dtype)
            seen[value.data_ptr()] = fresh
        out[key] = seen[value.data_ptr()]
    return out


# -- our models ----------------------------------------------------------------------------------------------------
def tiny_model(names=("semseg", "depth", "normals"), seed: int = 0) -> nn.Module:
    classes = {"semseg": [str(i) for i in range(5)]}
    config = ModelConfig(arch="xtam", backbone={"name": "test_resnet"}, options={"decoder_channels": TINY_DECODER})
    torch.manual_seed(seed)
    return build_model(config, {n: build_task(n, {}, classes) for n in names}).eval()


def tiny_official(model: nn.Module, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """DenseMTL's state dict for a model of ``model``'s widths (its encoder: the same timm ResNet under ``encoder``)."""
    import copy

    outs = {t: d.side["0"].out_channels for t, d in model.decoders.items()}
    official = official_model(outs, copy.deepcopy(model.backbone.body), tuple(model.backbone.channels), tuple(TINY_DECODER))
    return randomised(official.state_dict(), seed)


def aliases(state) -> list[str]:
    return sorted(k for k in state if k.startswith("params."))


# -- (a) every official key mapped or dropped, every model key produced: the full-size models ------------------------
def full_size_model(tasks) -> nn.Module:
    config = ModelConfig(arch="xtam", backbone={"name": "resnet101.tv_in1k", "weights": None, "options": {"output_stride": 16}})
    with torch.device("meta"):
        return build_model(config, tasks)


@pytest.mark.parametrize("setting", ["SD", "SDN"])
def test_the_released_models_key_lists_map_exactly(setting):
    if setting == "SD":  # the repository's DenseMTL recipe (configs/cityscapes/xtam.yaml: semseg with 16 classes, depth)
        config = load_config(REPO / "configs/cityscapes/xtam.yaml")
        tasks = build_tasks(config, dataset_info(config))
    else:  # resnet101_ours_SDN.yml adds normals (3 channels)
        tasks = {n: build_task(n, {}, {"semseg": [str(i) for i in range(16)]}) for n in ("semseg", "depth", "normals")}
    model = full_size_model(tasks)
    outs = {"semseg": 16, "depth": 1, "normals": 3}
    with torch.device("meta"):
        official = official_model({t: outs[t] for t in tasks}, resnet101_encoder(), RESNET101, DECODER)
    state = official.state_dict()
    key_map, names = model.official_key_map, model.task_names
    expected = model.state_dict()

    mapped = {}
    for key, value in state.items():
        target = key_map.to_ours(key, names)
        if target is None:
            assert key_map.dropped(key), f"official key neither mapped nor dropped: {key}"
            continue
        assert target[0] in expected and expected[target[0]].shape == value.shape, key
        mapped[target[0]] = key
    assert set(mapped) == set(expected)  # every model key produced, each by exactly one official key
    assert aliases(state) and len(mapped) == len(state) - len(aliases(state))  # state_dict() writes the aliases
    assert {k for k in state if key_map.dropped(k)} == set(aliases(state))
    assert not any(k.startswith(("backbone.encoder.fc", "heads.semseg.decoder.1.")) for k in state)  # identities

    converted, dropped = convert_state(state, model, key_map, names)
    assert set(converted) == set(expected) and dropped == aliases(state)
    inverse = to_official_state(model, key_map, names)
    assert {k: tuple(v.shape) for k, v in inverse.items()} == {k: tuple(v.shape) for k, v in state.items() if not k.startswith("params.")}
    # the official parameters (each Parameter once: the aliases are the same tensors) are ours
    assert official_parameter_count(model) == sum(p.numel() for p in official.parameters()) == sum(p.numel() for p in model.parameters())


# -- (b) the official tensors land at the mapped places, and back --------------------------------------------------
def test_a_bare_state_dict_pkl_loads_into_the_mapped_places_and_round_trips(tmp_path):
    model = tiny_model()
    official = tiny_official(model)
    path = tmp_path / "sy_densemtl_SDN.pkl"
    torch.save(official, path)  # what DenseMTL's save_model writes
    assert is_official_file(path)
    extra = load_official_into(model, path)
    assert extra["dropped"] == aliases(official)
    ours = model.state_dict()
    expected_places = {
        "backbone.encoder.conv1.0.weight": "backbone.body.conv1.0.weight",
        "backbone.encoder.layer4.0.downsample.2.running_var": "backbone.body.layer4.0.downsample.2.running_var",
        "heads.semseg.decoder.0.convs.4.2.running_mean": "decoders.semseg.levels.4.conv0.convs.4.2.running_mean",
        "heads.semseg.decoder.0.project.0.weight": "decoders.semseg.levels.4.conv0.project.0.weight",
        "heads.depth.decoder.2.block.0.conv.weight": "decoders.depth.levels.4.conv1.0.weight",
        "heads.depth.decoder.9.block.0.conv.bias": "decoders.depth.levels.1.conv0.0.bias",
        "heads.normals.decoder.11.block.0.conv.weight": "decoders.normals.levels.1.conv1.0.weight",
        "heads.normals.decoder.12.block.0.conv.weight": "decoders.normals.levels.0.conv0.0.weight",
        "heads.normals.decoder.13.block.0.conv.weight": "decoders.normals.levels.0.conv1.0.weight",
        "heads.semseg.decoder.14.weight": "decoders.semseg.side.0.weight",
        "heads.semseg.decoder.15.bias": "decoders.semseg.side.1.bias",
        "m.semseg.1.extract_depth.0.weight": "xtam.messages.semseg.depth.extract.0.weight",
        "m.depth.1.SA_normals.attention.0.weight": "xtam.messages.depth.normals.self_attention.gate.0.weight",
        "m.depth.1.SA_normals.conv.weight": "xtam.messages.depth.normals.self_attention.conv.weight",
        "m.normals.1.SxTAM_semseg.conv_b.0.weight": "xtam.messages.normals.semseg.cross_attention.query.0.weight",
        "m.normals.1.SxTAM_semseg.conv_c.1.running_var": "xtam.messages.normals.semseg.cross_attention.key.1.running_var",
        "m.normals.1.SxTAM_semseg.conv_d.1.weight": "xtam.messages.normals.semseg.cross_attention.value.1.weight",
        "m.semseg.1.SxTAM_normals.alpha": "xtam.messages.semseg.normals.cross_attention.alpha",
        "m.depth.1.proj_semseg.0.weight": "xtam.messages.depth.semseg.project.0.weight",
        "m.semseg.1.post.1.bias": "xtam.fuse.semseg.1.bias",
    }
    for theirs, mine in expected_places.items():
        assert torch.equal(ours[mine], official[theirs]), theirs
    for key, value in official.items():  # and every other mapped key
        target = model.official_key_map.to_ours(key, model.task_names)
        assert (target is None) == key.startswith("params.")
        if target is not None:
            assert torch.equal(ours[target[0]], value), key
    back = to_official_state(model, model.official_key_map, model.task_names)
    assert back.keys() == {k for k in official if not k.startswith("params.")}
    assert all(torch.equal(back[k], official[k]) for k in back)
    with torch.no_grad():
        output = model(torch.randn(1, 3, 32, 48))
    assert output.final["normals"].shape == (1, 3, 32, 48) and output.aux["scale1"]["semseg"].shape == (1, 5, 16, 24)


def write_config(tmp_path):
    raw = dict(TINY, out_dir=str(tmp_path / "runs" / "{name}"), name="tiny_xtam")
    raw["tasks"] = {"semseg": {"weight": 1.0}, "depth": {"weight": 1.0}, "normals": {"weight": 1.0}}
    raw["model"] = {"arch": "xtam", "backbone": {"name": "test_resnet"}, "options": {"decoder_channels": TINY_DECODER}}
    path = tmp_path / "xtam.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_scenemtl_convert_and_eval_take_a_densemtl_pkl(tmp_path, capsys):
    config_file = write_config(tmp_path)
    config = load_config(config_file)
    model_config = config.model.model_copy(deep=True)
    model = build_model(model_config, build_tasks(config, dataset_info(config)))
    official = tmp_path / "vk_densemtl_SDN.pkl"
    torch.save(tiny_official(model, seed=3), official)

    assert main(["convert", str(config_file), str(official), "--out", str(tmp_path / "converted")]) == 0
    assert "converted" in capsys.readouterr().out
    converted = tmp_path / "converted" / "model.safetensors"
    assert read_meta(converted).config.model.arch == "xtam"
    assert f"`{official.name}`" in (tmp_path / "converted" / "README.md").read_text()
    results = []
    for checkpoint in (official, converted):
        out = tmp_path / f"eval_{len(results)}.json"
        assert main(["eval", str(config_file), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]) == 0
        results.append(json.loads(out.read_text())["metrics"])
    assert results[0] == results[1]  # the same weights, whichever way they come in


# -- (c) unknown and missing keys ---------------------------------------------------------------------------------
def test_unknown_missing_and_misplaced_keys_are_named_and_nothing_loads(tmp_path):
    model = tiny_model()
    official = tiny_official(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def refused(state, *fragments):
        path = tmp_path / "bad.pkl"
        torch.save(state, path)
        with pytest.raises(CheckpointError) as error:
            load_official_into(model, path)
        for fragment in fragments:
            assert fragment in str(error.value), (fragment, str(error.value))
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing was loaded

    unknown = OrderedDict(official, **{"m.semseg.1.CxTAM_depth.beta": torch.zeros(1)})
    refused(unknown, "does not fit this DenseMTL model", "unexpected keys: m.semseg.1.CxTAM_depth.beta")
    missing = OrderedDict((k, v) for k, v in official.items() if k != "heads.depth.decoder.14.weight")
    refused(missing, "missing keys: decoders.depth.side.0.weight")
    # the xTAM block of another decoder level (stages: [2]) is not ours (stage 1), though its widths fit
    other_stage = OrderedDict((k.replace(".1.", ".2.", 1) if k.startswith("m.") else k, v) for k, v in official.items())
    refused(other_stage, "unexpected keys: m.", ".2.", "missing keys: xtam.")
    # weights of two tasks for a three-task model (the SD file with the SDN config)
    sd = OrderedDict((k, v) for k, v in official.items() if "normals" not in k)
    refused(sd, "missing keys: decoders.normals.", "heads for ['depth', 'semseg']")
    with pytest.raises(CheckpointError, match="not a DenseMTL checkpoint"):
        convert_state({"multi_task_decoder.x.weight": torch.zeros(1)}, model, model.official_key_map, model.task_names)


# -- (d) pickled classes are refused, with the one-off step named ------------------------------------------------
TRIPPED: list[str] = []


def _trip() -> dict:
    TRIPPED.append("unpickled")
    return {}


class Tripwire:
    """An object whose unpickling runs code (it calls ``_trip``)."""

    def __reduce__(self):
        return (_trip, ())


@pytest.mark.parametrize(
    "extra",
    [
        {"cfg": argparse.Namespace(lr=3e-4)},  # a pickled config object
        {"best": np.float64(5.33)},  # a NumPy scalar, as a metric may be
        {"optimizer": Tripwire()},  # any other object: its unpickling would run code
    ],
    ids=["namespace", "numpy", "code"],
)
def test_a_file_with_pickled_objects_is_refused_naming_the_one_off_step(tmp_path, extra):
    model = tiny_model(("semseg", "depth"))
    path = tmp_path / "cs_densemtl_SD.pkl"
    torch.save({"model": tiny_official(model), "step": 40_000, **extra}, path)
    TRIPPED.clear()
    with pytest.raises(CheckpointError) as error:
        load_official_into(model, path)
    message = str(error.value)
    assert str(path) in message and "pickled Python objects" in message
    assert "scenemtl.models.official ('Pickled objects')" in message
    assert TRIPPED == []  # nothing from the file ran
    import scenemtl.models.official as official

    assert "Pickled objects." in official.__doc__ and "weights_only=False" in official.__doc__


def test_the_trainers_resume_file_without_objects_loads(tmp_path):
    """DenseMTL's ``resume.pkl`` (``{'model', 'optimizer', 'scheduler', 'step', 'best'}``) with plain values reads weights-only."""
    model = tiny_model(("semseg", "depth"))
    official = tiny_official(model)
    path = tmp_path / "resume.pkl"
    optimizer = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 3e-4, "params": [0]}]}
    torch.save({"model": official, "optimizer": optimizer, "scheduler": {"last_epoch": 40_000}, "step": 40_000, "best": 5.33}, path)
    extra = load_official_into(model, path)
    assert extra["step"] == 40_000 and extra["dropped"] == aliases(official)
    assert torch.equal(model.state_dict()["xtam.fuse.depth.0.weight"], official["m.depth.1.post.0.weight"])
