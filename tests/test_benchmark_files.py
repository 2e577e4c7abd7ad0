"""The comparison files of ``benchmarks/architectures.py``: every row is a valid config whose model builds (on the meta
device, so the GPU-sized rows cost no memory here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from scenemtl.config import load_config
from scenemtl.engine.builder import build_tasks, dataset_info
from scenemtl.models import build_model

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def rows(file: str) -> list[tuple[str, list[str]]]:
    spec = yaml.safe_load((BENCHMARKS / file).read_text())
    common = list(spec.get("set", []))
    return [("stl", common + spec["stl_set"])] + [(row["label"], common + row["set"]) for row in spec["architectures"]]


@pytest.mark.parametrize("file", ["backbones.yaml", "backbones_gpu.yaml"])
def test_every_row_of_the_backbone_comparisons_is_a_config_whose_model_builds(file):
    spec = yaml.safe_load((BENCHMARKS / file).read_text())
    experiment = (BENCHMARKS / spec["experiment"]).resolve()
    families = set()
    for label, overrides in rows(file):
        config = load_config(experiment, overrides)
        with torch.device("meta"):
            model = build_model(config.model, build_tasks(config, dataset_info(config)))
        assert sum(p.numel() for p in model.parameters()) > 0, label
        families.add(config.model.backbone.name)
    # the families the issue names, each under hps and invpt
    assert len(families) == 6
    labels = [label for label, _ in rows(file)]
    assert sum(label.startswith("hps ") for label in labels) == 6 and sum(label.startswith("invpt ") for label in labels) == 6
