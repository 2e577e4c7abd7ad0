"""Config files: inheritance, overrides, and errors that name the key and the nearest valid one."""

import pytest

from scenemtl.config import load_config
from scenemtl.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train: {lr: 0.01, steps: 10}\ntasks: {depth: {weight: 2.0}}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntrain: {steps: 20}\n")
    config = load_config(child, ["train.lr=1e-4", "tasks.depth.weight=3", "model.backbone.name=test_resnet"])
    assert config.train.steps == 20 and config.train.lr == 1e-4
    assert config.tasks["depth"].weight == 3.0 and list(config.tasks) == ["depth"]
    assert config.model.backbone.name == "test_resnet"


def test_shipped_configs_are_valid_and_build_their_models(monkeypatch, tmp_path):
    from pathlib import Path

    import torch
    import yaml

    from scenemtl.engine.benchmark import load_benchmark
    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.models import build_model

    for variable in ("NYUV2_13", "NYUD", "PASCAL_CONTEXT", "CITYSCAPES", "CITYSCAPES_NPY", "SYNTHIA", "VKITTI2"):
        monkeypatch.setenv(f"SCENEMTL_{variable}", str(tmp_path))
    configs = sorted(Path(__file__).parents[1].joinpath("configs").rglob("*.yaml"))
    assert configs
    built = set()
    for path in configs:
        if "experiment" in (yaml.safe_load(path.read_text()) or {}):  # a benchmark of several runs
            bench, _ = load_benchmark(path)
            bench.specs()
            continue
        config = load_config(path)
        config.model.backbone.weights = None
        with torch.device("meta"):  # full size, no memory: the options and shapes are checked
            model = build_model(config.model, build_tasks(config, dataset_info(config)))
        assert sum(p.numel() for p in model.parameters()) > 0, path
        built.add(config.model.arch)
    assert {"hps", "stl", "cross_stitch", "mtan", "mtan_deeplab", "padnet", "mtinet", "atrc", "xtam"} <= built


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lrr=1"], "unknown key 'train.lrr'. Did you mean 'lr'?"),
        (["data.augment.flp=true"], "unknown key 'data.augment.flp'. Did you mean 'flip'?"),
        (["train.lr=fast"], "'train.lr': Input should be a valid number"),
        (["train.precision=fp8"], "'train.precision'"),
        (["tasks.semsg.weight=1"], "unknown task 'semsg'. Did you mean 'semseg'?"),
        (["train.lr"], "must look like key.path=value"),
    ],
)
def test_errors_name_the_key_and_the_nearest_valid_one(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="named as base"):
        load_config(write(tmp_path / "a.yaml", "base: nothere.yaml\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "b.yaml", "train: {lr: [\n"))
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(write(tmp_path / "c.yaml", "base: c.yaml\n"))


def test_environment_variables_in_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENEMTL_DATA", str(tmp_path))
    config = load_config(None, ["data.root=$SCENEMTL_DATA/NYUDv2"])
    assert config.data_root == f"{tmp_path}/NYUDv2"
    monkeypatch.delenv("SCENEMTL_DATA")
    with pytest.raises(ConfigError, match="SCENEMTL_DATA, which is not set"):
        _ = config.data_root


def test_the_synthetic_base_config_is_the_demo_experiment():
    from pathlib import Path

    from scenemtl.engine.demo import DEMO_OVERRIDES

    base = load_config(Path(__file__).parents[1] / "configs" / "synthetic" / "base.yaml").to_dict()
    default = load_config(None, DEMO_OVERRIDES).to_dict()
    base.pop("name"), default.pop("name")
    assert base == default


def test_overrides_edit_one_default_task_without_dropping_the_others():
    config = load_config(None, ["tasks.edge.weight=5"])
    assert config.tasks["edge"].weight == 5 and len(config.tasks) == 5
    assert config.tasks["edge"].options == {"pos_weight": 0.95}
    replaced = load_config(None, ["tasks={depth: {weight: 2}}"])
    assert list(replaced.tasks) == ["depth"]
