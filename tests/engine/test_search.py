"""ATRC's architecture search: `scenemtl search` writes a genotype that `atrc` loads and trains with."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scenemtl.cli import main
from scenemtl.config import apply_overrides, load_config, validate
from scenemtl.engine import checkpoint as ckpt
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError
from scenemtl.models.atrc import load_genotype

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "atrc_search.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: a second thread only adds hand-off costs on a shared CPU
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_overrides(tmp_path):
    return [
        f"out_dir={tmp_path}/{{name}}",
        "train.steps=2",
        "train.log_every=1",
        "train.device=cpu",
        "data.options={height: 32, width: 48, num_train: 4, num_val: 2}",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "model.options.channels=8",
        "tasks.edge.boundary_metric=false",
    ]


def test_search_writes_a_genotype_that_atrc_trains_with(tmp_path, capsys):
    overrides = tiny_overrides(tmp_path)
    out = tmp_path / "genotype.json"
    args = ["search", str(CONFIG), *[a for o in overrides for a in ("--set", o)], "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "train ATRC with it" in capsys.readouterr().out
    written = json.loads(out.read_text())
    run = tmp_path / "synthetic_atrc_search"
    assert json.loads((run / "genotype.json").read_text()) == written
    # ATRC's released format: {"data": target → source → code, "step"}, its task names (sal)
    tasks = ["semseg", "depth", "normals", "edge", "saliency"]
    assert written["step"] == 2 and set(written["data"]) == {"semseg", "depth", "normals", "edge", "sal"}
    genotype = load_genotype(out, tasks)
    assert all(genotype[t][t] != 4 for t in tasks)  # no s-label context from a task to itself
    # the choice logits moved (Adam, lr 5e-4) and their optimiser is in the checkpoint for --resume
    folder = ckpt.list_checkpoints(run / "checkpoints")[-1]
    state = ckpt.load_trainer_state(folder)
    assert state["extension"]["arch_optimizer"]["state"]
    weights = load_file(str(folder / ckpt.MODEL_FILE))
    logits = [v for k, v in weights.items() if k.endswith("arch_param")]
    assert len(logits) == 25 and any(bool(v.abs().max() > 0) for v in logits)
    assert any(json.loads(line)["kind"] == "search" for line in (run / "metrics.jsonl").read_text().splitlines())
    # ATRC with the searched genotype trains a step
    raw = apply_overrides(load_config(CONFIG).to_dict(), [*overrides, "name=atrc", "model.arch=atrc", f"model.options.genotype={out}"])
    trainer = Trainer(validate(raw), progress=False, log=False)
    assert trainer.model.genotype() == genotype
    stats = trainer.train_step([next(iter(trainer.loader))])
    assert not stats["skipped"] and all(torch.isfinite(torch.tensor(v)) for v in stats["loss"].values())


def test_search_needs_the_search_space(tmp_path, capsys):
    args = ["search", str(CONFIG), *[a for o in tiny_overrides(tmp_path) for a in ("--set", o)], "--set", "model.arch=atrc"]
    assert main(args) == 2
    assert "architecture 'atrc' searches nothing" in capsys.readouterr().err
    raw = apply_overrides(load_config(CONFIG).to_dict(), [*tiny_overrides(tmp_path), "train.precision=fp16"])
    with pytest.raises(ConfigError, match="fp16"):
        Trainer(validate(raw), progress=False, log=False)
