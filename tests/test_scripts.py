"""The benchmark scripts' arithmetic and their report: the GPU budget on paper from the model's shapes, and
reports/perf.md rendered from the raw measurement records the two scripts save."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glu_study.model import training_flops_per_step
from glu_study.reporting.perf import gpu_budget, preset_runs, write_perf
from tests.helpers import ROOT


def test_the_gpu_budget_is_t5_base_s_54_5_tflop_step_at_each_mfu():
    cfg, ffns, seeds = preset_runs("table1_paper")
    assert len(ffns) * seeds == 32
    assert training_flops_per_step(cfg, "relu") / 1e12 == pytest.approx(54.5, abs=0.1)
    # gated variants are compute-matched: within 0.5% of ReLU's step
    assert training_flops_per_step(cfg, "swiglu") == pytest.approx(
        training_flops_per_step(cfg, "relu"), rel=5e-3
    )
    lines = gpu_budget()
    row = next(ln for ln in lines if ln.startswith("| `table1_paper` |") and "| 30% |" in ln)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == "0.184" and cells[6] == "697"  # 54.5 TFLOP at 297 TFLOP/s; 128 examples per step
    assert float(cells[8]) == pytest.approx(32 * 65_536 * 0.1837 / 3600, rel=0.01)


def record_dir(tmp_path, **records) -> Path:
    out = tmp_path / "perf"
    out.mkdir()
    for name, rec in records.items():
        (out / f"{name}.json").write_text(json.dumps(rec))
    return out


def test_committed_perf_md_regenerates_from_its_raw_records(tmp_path):
    """reports/perf.md is rendered from reports/perf/*.json byte for byte, and its figures recompute from them."""
    records = ROOT / "reports" / "perf"
    if not records.is_dir():
        pytest.skip("no perf records committed yet")
    assert write_perf(records, tmp_path / "perf.md") == (ROOT / "reports" / "perf.md").read_text()
    text = (tmp_path / "perf.md").read_text()
    bench = json.loads((records / "benchmark.json").read_text())
    for m in bench["models"]:
        speedup = m["seconds"]["baseline"] / m["seconds"]["study"]
        assert f"baseline on {m['model']}: **{speedup:.2f}x**" in text
    data = json.loads((records / "bench_data.json").read_text())
    pipe = data["pipeline"]
    # batches built per second over batches trained per second (the same tokens per batch)
    ratio = (pipe["batches"] / pipe["pipeline_seconds"]) / (pipe["train_steps"] / pipe["train_seconds"])
    assert f"**{ratio:.1f}x** (target >= 10x)" in text and ratio >= 10


def test_perf_md_says_what_was_not_measured(tmp_path):
    rec = json.loads((ROOT / "reports" / "perf" / "bench_data.json").read_text())
    text = write_perf(record_dir(tmp_path, bench_data=rec), tmp_path / "perf.md")
    assert "Not measured: run `python scripts/benchmark.py" in text and "## GPU budget on paper" in text
    assert "## Data pipeline" in text and "Not measured: run `python scripts/bench_data.py`" not in text


def test_perf_render_refuses_a_damaged_record_before_writing(tmp_path):
    records = record_dir(tmp_path)
    (records / "benchmark.json").write_text('{"command": "t5_ti')  # a killed writer's half file
    out = tmp_path / "perf.md"
    done = subprocess.run(
        [sys.executable, "-m", "glu_study.reporting.perf", str(records), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_benchmark_script_saves_raw_figures_and_renders_from_them(tmp_path):
    records = tmp_path / "perf"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "benchmark.py"),
        "t5_tiny",
        "--steps",
        "1",
        "--rounds",
        "1",
    ]
    subprocess.run([*command, "--records", str(records)], check=True, capture_output=True, cwd=ROOT)
    rec = json.loads((records / "benchmark.json").read_text())
    (m,) = rec["models"]
    assert m["model"] == "t5_tiny" and m["rounds"] == 1 and m["steps"] == 1
    assert all(m["seconds"][loop] > 0 and m["peak_bytes"][loop] > 0 for loop in ("baseline", "study"))
    assert (tmp_path / "perf.md").read_text() == write_perf(records, tmp_path / "again.md")
