"""The benchmark scripts' arithmetic and their shared report: the GPU budget on paper from the model's shapes,
and reports/perf.md's sections each kept by the other script."""

from __future__ import annotations

import importlib.util

import pytest

from glu_study.model import training_flops_per_step
from glu_study.reporting.readme import marked_block, update_readme
from tests.helpers import ROOT


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_budget_is_t5_base_s_54_5_tflop_step_at_each_mfu():
    benchmark = script("benchmark")
    cfg, ffns, seeds = benchmark.preset_runs("table1_paper")
    assert len(ffns) * seeds == 32
    assert training_flops_per_step(cfg, "relu") / 1e12 == pytest.approx(54.5, abs=0.1)
    # gated variants are compute-matched: within 0.5% of ReLU's step
    assert training_flops_per_step(cfg, "swiglu") == pytest.approx(
        training_flops_per_step(cfg, "relu"), rel=5e-3
    )
    lines = benchmark.gpu_budget()
    row = next(ln for ln in lines if ln.startswith("| `table1_paper` |") and "| 30% |" in ln)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == "0.184" and cells[6] == "697"  # 54.5 TFLOP at 297 TFLOP/s; 128 examples per step
    assert float(cells[8]) == pytest.approx(32 * 65_536 * 0.1837 / 3600, rel=0.01)


def test_one_generator_keeps_the_other_s_section_of_perf_md(tmp_path):
    perf = tmp_path / "perf.md"
    assert marked_block(perf, "bench_data") == "<!-- bench_data:begin -->\n<!-- bench_data:end -->"
    perf.write_text("# throughput\n\n" + marked_block(perf, "bench_data") + "\n")
    update_readme(perf, "bench_data", "## Data pipeline\n\nfigures")
    kept = marked_block(perf, "bench_data")
    assert "figures" in kept
    perf.write_text("# throughput, again\n\n" + kept + "\n")  # what benchmark.py does when it rewrites
    assert "figures" in perf.read_text() and "again" in perf.read_text()
