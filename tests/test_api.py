"""The Python API: create → save → load → same outputs; listing; prediction; model folders; errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import scenemtl
from scenemtl.errors import CheckpointError, ConfigError


def tiny(**kwargs):
    options = {"arch": "hps", "tasks": {"semseg": 5, "depth": None}, "backbone": "test_resnet", "head_channels": 8}
    options.update(kwargs)
    return scenemtl.create_model(options.pop("arch"), **options)


def test_the_api_is_exported_with_all():
    import scenemtl.api

    for name in scenemtl.__all__:
        assert getattr(scenemtl, name) is not None, name
    assert "create_model" in dir(scenemtl)
    assert set(scenemtl.__all__) - {"__version__", "Predictor"} <= set(vars(scenemtl.api))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scenemtl.nope  # noqa: B018


def test_lists_come_from_the_registries():
    from scenemtl.balancing import BALANCERS
    from scenemtl.data import DATASETS
    from scenemtl.models import MODELS

    assert scenemtl.list_models() == MODELS.names() and "hps" in scenemtl.list_models()
    assert scenemtl.list_models("mt*") == [n for n in MODELS.names() if n.startswith("mt")]
    assert scenemtl.list_datasets() == DATASETS.names() and scenemtl.list_balancers() == BALANCERS.names()
    assert "semseg" in scenemtl.list_tasks() and scenemtl.list_tasks("zzz*") == []


def test_create_save_load_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = tiny()
    assert model.training and model.meta.class_names["semseg"] == [f"class_{i}" for i in range(5)]
    folder = scenemtl.save_pretrained(model, tmp_path / "folder")
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.yaml", "classes.json", "README.md"}
    loaded = scenemtl.load_model(folder)
    assert not loaded.training and loaded.meta.config.model.arch == "hps"
    model.eval()
    image = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        before, after = model(image).final, loaded(image).final
    assert all(torch.equal(before[t], after[t]) for t in ("semseg", "depth"))
    assert scenemtl.from_pretrained(folder).meta.class_names == model.meta.class_names
    # the folder's side files say what the metadata says
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model"]["options"] == {"head_channels": 8} and list(config["tasks"]) == ["semseg", "depth"]
    assert json.loads((folder / "classes.json").read_text())["class_names"]["semseg"][4] == "class_4"


def test_dataset_gives_class_names_and_normalisation():
    from scenemtl.data import DATASETS

    info = DATASETS.get("nyud").info
    model = scenemtl.create_model("hps", tasks=["semseg", "normals"], dataset="nyud", backbone="test_resnet", head_channels=8)
    assert model.meta.class_names["semseg"] == list(info.class_names["semseg"])
    assert model.meta.mean == tuple(info.mean) and model.meta.config.data.name == "nyud"
    tasks = scenemtl.tasks_of(model)
    assert tasks["semseg"].out_channels == len(info.class_names["semseg"]) and set(tasks) == {"semseg", "normals"}
    # explicit names win over the dataset's; task options pass through
    named = scenemtl.create_model(
        "hps", tasks={"semseg": ["sky", "road"], "edge": {"pos_weight": 0.9}}, backbone="test_resnet", head_channels=8
    )
    assert scenemtl.tasks_of(named)["semseg"].out_channels == 2 and named.meta.config.tasks["edge"].options == {"pos_weight": 0.9}
    # own class names with a dataset: the dataset's normalisation, not its palette (it colours other classes)
    own = scenemtl.create_model("hps", tasks={"semseg": 50}, dataset="nyud", backbone="test_resnet", head_channels=8)
    assert own.meta.palettes == {} and own.meta.mean == tuple(info.mean)
    picture = scenemtl.tasks_of(own)["semseg"].colorize(torch.full((4, 4), 49))
    assert picture.shape == (4, 4, 3)


def test_predictor_takes_a_model_or_a_folder(tmp_path):
    model = tiny()
    folder = scenemtl.save_pretrained(model, tmp_path / "m")
    image = np.random.default_rng(0).integers(0, 255, (37, 50, 3), dtype=np.uint8)
    from_model = scenemtl.Predictor(model, device="cpu")(image)
    from_folder = scenemtl.Predictor(folder, device="cpu")(image)
    assert from_model["semseg"].shape == (37, 50) and from_model["semseg"].dtype == torch.int64
    assert from_model["depth"].shape == (1, 37, 50)
    assert all(torch.equal(from_model[t], from_folder[t]) for t in from_model)
    pictures = scenemtl.Predictor(model, device="cpu").pictures(from_model)
    assert all(p.shape == (37, 50, 3) and p.dtype == np.uint8 for p in pictures.values())
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        scenemtl.Predictor(model, device="cpu")(image.astype(np.float32))


def test_results_go_into_the_model_card(tmp_path):
    model = tiny()
    report = {"split": "val", "protocol": "atrc", "metrics": {"semseg": {"miou": 0.4321}, "depth": {"rmse": 0.5}}}
    folder = scenemtl.save_pretrained(model, tmp_path / "m", results=report)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: scenemtl")
    assert "| semseg | miou | 0.4321 |" in card and "protocol atrc" in card and "CC BY-NC" in card
    assert json.loads((folder / "results.json").read_text()) == report


def test_mistakes_are_named():
    with pytest.raises(ConfigError, match="unknown architecture 'hpz'.*'hps'"):
        scenemtl.create_model("hpz", tasks=["depth"])
    with pytest.raises(ConfigError, match="unknown task 'segsem'"):
        scenemtl.create_model("hps", tasks=["segsem"])
    with pytest.raises(ConfigError, match="task 'semseg' needs class names"):
        scenemtl.create_model("hps", tasks=["semseg"], backbone="test_resnet")
    with pytest.raises(ConfigError, match="unknown option 'model.options.embed_dim' for 'hps'"):
        scenemtl.create_model("hps", tasks=["depth"], backbone="test_resnet", embed_dim=8)
    with pytest.raises(ConfigError, match="no scenemtl metadata"):
        scenemtl.save_pretrained(torch.nn.Linear(2, 2), "unused")
    with pytest.raises(CheckpointError, match="neither a local path nor a downloadable"):
        scenemtl.load_model("nobody-here/no-such-model")


def test_push_to_hub_without_network_or_token_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network: the upload cannot happen
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(CheckpointError, match="could not push to the Hugging Face Hub repository 'nobody-here/m'") as error:
        scenemtl.push_to_hub(tiny(), "nobody-here/m")
    assert "\n" not in str(error.value)
