"""``scenemtl benchmark balancing``: methods × seeds, a table of mean ± std, Δm and cost; restartable."""

import json

import pytest
import yaml

from scenemtl.cli import main
from scenemtl.engine.benchmark import load_benchmark
from scenemtl.errors import ConfigError
from tests.conftest import TINY


@pytest.fixture
def bench_file(tmp_path):
    experiment = tmp_path / "tiny.yaml"
    # three of the five tasks (one left out of Δm): every run, STL's included, trains and evaluates less
    tasks = {name: TINY["tasks"][name] for name in ("semseg", "depth", "normals")}
    experiment.write_text(yaml.safe_dump(dict(TINY, tasks=tasks, out_dir=str(tmp_path / "unused"))))
    bench = {
        "name": "bench",
        "experiment": "tiny.yaml",
        "seeds": [0, 1],
        "set": ["train.steps=2", "train.log_every=1"],
        "methods": ["equal", {"name": "mgda", "label": "mgda-ub", "options": {"wrt": "features"}}, "famo"],
        "delta_metrics": {"semseg": ["miou", "pixel_acc"], "depth": ["rmse"]},
        "out_dir": str(tmp_path / "out" / "{name}"),
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


def test_benchmark_writes_the_table_and_reuses_finished_runs(bench_file, tmp_path, capsys):
    assert main(["benchmark", "balancing", "--config", str(bench_file), "--quiet"]) == 0
    out = tmp_path / "out" / "bench"
    summary = json.loads((out / "results.json").read_text())
    rows = {row["method"]: row for row in summary["rows"]}
    assert list(rows) == ["equal", "mgda-ub", "famo"]
    for row in rows.values():
        assert row["seeds"] == [0, 1] and len(row["delta_m_per_seed"]) == 2
        mean, std = row["delta_m"]
        assert mean == pytest.approx(sum(row["delta_m_per_seed"]) / 2)
        assert std >= 0 and set(row["metrics"]) == {"semseg", "depth"}
        assert row["seconds_per_step"] > 0
    assert rows["equal"]["time_vs_equal"] == pytest.approx(1.0)
    assert rows["famo"]["extra_forward"] and rows["mgda-ub"]["backward_passes"] == 1
    # the seeds differ, so the runs do
    assert rows["equal"]["delta_m_per_seed"][0] != rows["equal"]["delta_m_per_seed"][1]
    # Δm is against the mean of the single-task runs
    stl = [json.loads((out / "stl" / f"seed{s}" / "results.json").read_text())["metrics"] for s in (0, 1)]
    assert summary["reference"]["depth"]["rmse"] == pytest.approx((stl[0]["depth"]["rmse"] + stl[1]["depth"]["rmse"]) / 2)
    table = (out / "results.md").read_text()
    assert "| mgda-ub |" in table and "semseg pixel_acc ↑" in table and "Δm % ↑" in table
    # a second call trains nothing: every run's results are reused
    stamp = (out / "equal" / "seed0" / "results.json").stat().st_mtime_ns
    assert main(["benchmark", "balancing", "--config", str(bench_file), "--quiet", "--methods", "equal"]) == 0
    assert (out / "equal" / "seed0" / "results.json").stat().st_mtime_ns == stamp


def test_benchmark_errors_name_the_key(bench_file, tmp_path):
    raw = yaml.safe_load(bench_file.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(raw, method=["equal"])))
    with pytest.raises(ConfigError, match="method"):
        load_benchmark(bad)
    bad.write_text(yaml.safe_dump(dict(raw, methods=["equal", "upgrd"])))
    bench, base = load_benchmark(bad)
    with pytest.raises(ConfigError, match="upgrad"):
        bench.specs()
    bad.write_text(yaml.safe_dump(dict(raw, methods=["equal", {"name": "upgrad", "label": "equal"}])))
    with pytest.raises(ConfigError, match="twice"):
        load_benchmark(bad)[0].specs()
