"""The README's Python examples run as written (at toy size), in a copy of the repository's configs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import scenemtl.config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: appended to every ``load_config`` call of an example: a few steps on a few tiny scenes
TOY = [
    "train.steps=2",
    "train.log_every=1",
    "data.options.height=24",
    "data.options.width=32",
    "data.options.num_train=4",
    "data.options.num_val=4",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.num_workers=0",
]


def python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has no Python example"
    return blocks


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index, tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    real = scenemtl.config.load_config
    calls = []

    def toy_load_config(path=None, overrides=None):
        calls.append(path)
        return real(path, [*(overrides or []), *TOY])

    monkeypatch.setattr(scenemtl.config, "load_config", toy_load_config)
    block = python_blocks()[index]
    exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    assert calls or "scenemtl.create_model" in block, "the example loads no config and creates no model"
    printed = capsys.readouterr().out.split()
    promised = re.search(r"# .*: ([\w ]+)$", block.strip().splitlines()[-1])
    if promised and "print(" in block.strip().splitlines()[-1]:  # an example that says what it prints prints that
        assert printed == promised.group(1).split(), (printed, promised.group(1))
    elif printed:  # what a training example prints are numbers: the metric and Δm
        assert all(re.fullmatch(r"-?[\d.]+(e-?\d+)?|nan", word) for word in printed), printed
