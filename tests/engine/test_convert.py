"""Official .pth.tar checkpoints through the CLI: convert, eval and predict; InvPT and TaskPrompter train."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from scenemtl.cli import main
from scenemtl.config import load_config
from scenemtl.engine.checkpoint import read_meta
from scenemtl.engine.trainer import Trainer
from scenemtl.models.official import to_official_state
from tests.conftest import TINY

OPTIONS = {
    "invpt": {"img_size": [32, 48], "embed_dim": 16, "pred_channels": 8},
    "taskprompter": {"img_size": [32, 48], "embed_dim": 16, "final_embed_dim": 12, "chan_nheads": 1},
}


def write_config(tmp_path, arch: str):
    raw = dict(TINY, out_dir=str(tmp_path / "runs" / "{name}"), name=f"tiny_{arch}")
    raw["model"] = {"arch": arch, "backbone": {"name": "test_vit"}, "options": OPTIONS[arch]}
    raw["train"] = dict(TINY["train"], steps=2)
    path = tmp_path / f"{arch}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("arch", ["invpt", "taskprompter"])
def test_trained_model_as_an_official_file_converts_evaluates_and_predicts(arch, tmp_path, capsys):
    config_file = write_config(tmp_path, arch)
    config = load_config(config_file)
    trainer = Trainer(config, progress=False)
    report = trainer.fit()
    assert report is not None and np.isfinite(report["metrics"]["semseg"]["miou"])
    model = trainer.model.eval()
    if arch == "invpt":  # intermediate supervision: the preliminary predictions were trained too
        with torch.no_grad():
            assert "preliminary" in model(torch.zeros(1, 3, 32, 48)).aux
    # the trained weights under the official names, saved as the official code saves them
    state = to_official_state(model, model.official_key_map, model.task_names)
    official = tmp_path / "official.pth.tar"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "iter_count": 2}, official)

    assert main(["convert", str(config_file), str(official), "--out", str(tmp_path / "converted")]) == 0
    assert "converted" in capsys.readouterr().out
    converted = tmp_path / "converted" / "model.safetensors"  # a model folder, with its model card
    assert read_meta(converted).config.model.arch == arch
    card = (tmp_path / "converted" / "README.md").read_text()
    assert f"converted from the official release file `{official.name}`" in card and "CC BY-NC" in card

    results = []
    for checkpoint in (official, converted, config.run_dir):
        out = tmp_path / f"eval_{len(results)}.json"
        assert main(["eval", str(config_file), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]) == 0
        results.append(json.loads(out.read_text())["metrics"])
    assert results[0] == results[1] == results[2]  # the same weights, whichever way they come in

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(image)
    out_dir = tmp_path / "pred"
    assert main(["predict", str(image), "--checkpoint", str(official), "--out", str(out_dir), "--quiet"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["predict", str(image), "--checkpoint", str(official), "--config", str(config_file), "--out", str(out_dir), "--quiet"]) == 0
    assert np.load(out_dir / "depth" / "photo.npy").shape == (37, 53)


def test_convert_refuses_a_file_for_other_tasks(tmp_path, capsys):
    config_file = write_config(tmp_path, "invpt")
    other = tmp_path / "other.pth.tar"
    torch.save(
        {"model": {"module.multi_task_decoder.x.weight": torch.zeros(1), "module.heads.sal.linear_pred.weight": torch.zeros(2, 1, 1, 1)}},
        other,
    )
    assert main(["convert", str(config_file), str(other), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "does not fit this InvPT model" in err and "heads for ['sal']" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_predict_refuses_a_config_beside_a_scenemtl_checkpoint(tmp_path, capsys):
    config_file = write_config(tmp_path, "invpt")
    assert main(["train", str(config_file), "--quiet", "--set", "train.steps=1"]) == 0
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 48, 3), dtype=np.uint8)).save(image)
    run = load_config(config_file).run_dir
    assert main(["predict", str(image), "--checkpoint", str(run), "--config", str(config_file), "--out", str(tmp_path / "p")]) == 2
    assert "drop --config" in capsys.readouterr().err
