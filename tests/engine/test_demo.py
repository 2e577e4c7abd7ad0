"""The demo end to end at a tiny size: table, baselines, Δm, checks and panels."""

import json

import pytest

from scenemtl.engine.demo import MARKER, run_demo
from scenemtl.errors import ScenemtlError
from scenemtl.metrics import relative_change

TINY = [
    "data.options.height=32",
    "data.options.width=48",
    "data.options.num_train=16",
    "data.options.num_val=8",
    "data.batch_size=4",
    "model.options.head_channels=8",
    "train.device=cpu",
]


def test_demo_writes_a_report_with_baselines_and_checks(tmp_path, capsys):
    out = tmp_path / "demo"
    code = run_demo(out, steps=3, progress=False, overrides=TINY)
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"trivial", "stl", "hps", "delta_m", "checks"}
    assert code == (0 if all(report["checks"].values()) else 1)
    assert len(report["checks"]) == 10  # five tasks, STL and HPS
    # the trivial baseline is the majority class: its mIoU is one class's IoU averaged over present classes
    assert 0 < report["trivial"]["semseg"]["miou"] < 50
    # Δm of a row is the mean relative change of its main metrics against the STL row
    expected = sum(
        relative_change(report["trivial"][t][m], report["stl"][t][m], higher_is_better=report["directions"][t][m])
        for t, m in report["main"].items()
    ) / len(report["main"])
    assert report["delta_m"]["trivial"] == pytest.approx(expected)
    table = capsys.readouterr().out
    assert "| trivial (constant) |" in table and "| HPS (shared backbone) |" in table
    assert len(list((out / "predictions" / "panels").glob("*.png"))) == 4
    # a second run replaces its own folder, and refuses a folder it did not write
    assert (out / MARKER).exists()
    run_demo(out, steps=1, progress=False, overrides=TINY)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(ScenemtlError, match="not a demo folder"):
        run_demo(other, steps=1, progress=False, overrides=TINY)
    assert (other / "notes.txt").read_text() == "keep"
