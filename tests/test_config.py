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


@pytest.mark.slow
def test_shipped_configs_are_valid_and_build_their_models(monkeypatch, tmp_path):
    from pathlib import Path

    import torch
    import yaml

    from scenemtl.engine.benchmark import load_benchmark
    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.models import build_model

    for variable in ("NYUV2_13", "NYUD", "PASCAL_CONTEXT", "CITYSCAPES", "CITYSCAPES_NPY", "SYNTHIA", "VKITTI2", "DECATHLON"):
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
    assert {"hps", "stl", "cross_stitch", "mtan", "mtan_deeplab", "padnet", "mtinet", "atrc", "xtam", "mtan_wrn"} <= built


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


# --------------------------------------------------------------------------------------------
# replacing a base's mapping or list: `_replace_: true` and `!replace`

FOUR_TASKS = (
    "tasks:\n"
    "  semseg: {weight: 1.0}\n"
    "  depth: {weight: 2.0}\n"
    "  normals: {weight: 3.0}\n"
    "  edge: {weight: 50.0, pos_weight: 0.9}\n"
    "data:\n"
    "  batch_size: 4\n"
    "  augment: {scale: [0.75, 1.5], flip: false, photometric: true, crop: [32, 32]}\n"
)


def test_replace_key_narrows_the_tasks_of_the_base(tmp_path):
    write(tmp_path / "base.yaml", FOUR_TASKS)
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntasks:\n  _replace_: true\n  semseg: {weight: 5.0}\n")
    config = load_config(child)
    assert list(config.tasks) == ["semseg"]
    assert config.tasks["semseg"].weight == 5.0
    assert config.data.batch_size == 4  # only the marked mapping is replaced


def test_replace_tag_narrows_the_tasks_of_the_base(tmp_path):
    write(tmp_path / "base.yaml", FOUR_TASKS)
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntasks: !replace {edge: {weight: 1.0}}\n")
    config = load_config(child)
    assert list(config.tasks) == ["edge"]
    assert config.tasks["edge"].weight == 1.0 and config.tasks["edge"].options == {}  # pos_weight not merged in


@pytest.mark.parametrize(
    "augment",
    ["augment: {_replace_: true, crop: [64, 64]}", "augment: !replace {crop: [64, 64]}"],
    ids=["key", "tag"],
)
def test_nested_replace_sends_unnamed_keys_back_to_defaults(tmp_path, augment):
    from scenemtl.config import AugmentConfig

    write(tmp_path / "base.yaml", FOUR_TASKS)
    child = write(tmp_path / "child.yaml", f"base: base.yaml\ndata:\n  {augment}\n")
    config = load_config(child)
    default = AugmentConfig()
    assert config.data.augment.crop == (64, 64)
    assert config.data.augment.scale == default.scale is None
    assert config.data.augment.flip is default.flip is True
    assert config.data.augment.photometric is default.photometric is False
    assert config.data.batch_size == 4 and len(config.tasks) == 4  # siblings and parents still merge


def test_replace_tag_on_a_list(tmp_path):
    write(tmp_path / "base.yaml", FOUR_TASKS)
    child = write(tmp_path / "child.yaml", "base: base.yaml\ndata: {augment: {scale: !replace [0.5, 1.0]}}\n")
    config = load_config(child)
    assert config.data.augment.scale == (0.5, 1.0)
    assert config.data.augment.flip is False and config.data.augment.crop == (32, 32)  # augment itself merged
    # lists replace without the tag too
    plain = write(tmp_path / "plain.yaml", "base: base.yaml\ndata: {augment: {scale: [0.5, 1.0]}}\n")
    assert load_config(plain).data.augment.scale == (0.5, 1.0)


def test_replace_through_a_chain_of_bases(tmp_path):
    write(tmp_path / "base.yaml", FOUR_TASKS)
    write(tmp_path / "middle.yaml", "base: base.yaml\ntasks: !replace {semseg: {weight: 1.0}, depth: {weight: 1.0}}\n")
    child = write(tmp_path / "child.yaml", "base: middle.yaml\ntasks: {depth: {weight: 7.0}}\n")
    config = load_config(child)
    assert list(config.tasks) == ["semseg", "depth"] and config.tasks["depth"].weight == 7.0


def test_replace_in_a_file_without_base_is_a_no_op(tmp_path):
    config = load_config(
        write(tmp_path / "alone.yaml", "tasks: {_replace_: true, depth: {weight: 2.0}}\ndata: {augment: !replace {flip: false}}\n")
    )
    assert list(config.tasks) == ["depth"] and config.data.augment.flip is False


@pytest.mark.parametrize("value", ["false", "3", "'true'", "null"])
def test_replace_key_other_than_true_is_an_error_naming_the_file_and_key(tmp_path, value):
    write(tmp_path / "base.yaml", FOUR_TASKS)
    child = write(tmp_path / "child.yaml", f"base: base.yaml\ntasks:\n  _replace_: {value}\n  semseg: {{}}\n")
    with pytest.raises(ConfigError) as error:
        load_config(child)
    message = str(error.value)
    assert "child.yaml" in message and "tasks._replace_ must be true" in message and "\n" not in message


def test_replace_misuse_is_an_error_naming_the_file_and_key(tmp_path):
    write(tmp_path / "base.yaml", FOUR_TASKS)
    scalar = write(tmp_path / "scalar.yaml", "base: base.yaml\ntrain: {lr: !replace 0.1}\n")
    with pytest.raises(ConfigError, match=r"scalar\.yaml: train\.lr is tagged !replace"):
        load_config(scalar)
    top = write(tmp_path / "top.yaml", "base: base.yaml\n_replace_: true\ntrain: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"top\.yaml: .*whole file"):
        load_config(top)
    in_list = write(tmp_path / "in_list.yaml", "base: base.yaml\nmodel: {options: {stages: [{_replace_: 0}]}}\n")
    with pytest.raises(ConfigError, match=r"in_list\.yaml: model\.options\.stages\[0\]\._replace_ must be true"):
        load_config(in_list)


def test_other_tags_are_still_refused(tmp_path):
    evil = write(tmp_path / "evil.yaml", "name: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_without_a_marker_tasks_and_mappings_still_deep_merge(tmp_path):
    write(tmp_path / "base.yaml", FOUR_TASKS)
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntasks: {semseg: {weight: 5.0}}\ndata: {augment: {crop: [64, 64]}}\n")
    config = load_config(child)
    assert list(config.tasks) == ["semseg", "depth", "normals", "edge"]  # a subset of the base's tasks merges
    assert config.tasks["semseg"].weight == 5.0 and config.tasks["edge"].options == {"pos_weight": 0.9}
    assert config.data.augment.crop == (64, 64) and config.data.augment.scale == (0.75, 1.5)
    assert config.data.augment.flip is False


def test_overrides_ignore_replace_markers(tmp_path):
    write(tmp_path / "base.yaml", FOUR_TASKS)
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntasks: !replace {semseg: {}}\n")
    config = load_config(child, ["tasks.depth.weight=2", "train.lr=1e-4"])
    assert list(config.tasks) == ["semseg", "depth"] and config.train.lr == 1e-4
    with pytest.raises(ConfigError, match="'tasks._replace_'"):  # an override assigns: no marker, a bad task
        load_config(child, ["tasks._replace_=true"])
