"""Issue 5: a tiny 2-variant x 2-seed sweep, the report on it, and the table's numbers recomputed by hand."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from glu_study.config import compose
from glu_study.report import main as report_main
from glu_study.train import train
from tests.helpers import ROOT, TINY, run_cli


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    r = run_cli(
        "glu_study.train",
        "-m",
        *TINY,
        "ffn=relu,swiglu",
        "seed=0,1",
        "logger.group=tiny_table",
        f"hydra.sweep.dir={d}",
    )
    assert r.returncode == 0, r.stderr
    return d


def _row(table: str, paper_name: str) -> list[str]:
    line = next(ln for ln in table.splitlines() if ln.startswith(f"| {paper_name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_numbers_equal_recomputed_from_run_records(sweep_dir, tmp_path):
    out = tmp_path / "report"
    assert report_main([str(sweep_dir), "--out", str(out)]) == 0
    table = (out / "table1.md").read_text()
    finals = {}
    for d in sorted(p.parent for p in sweep_dir.glob("*/summary.json")):
        s = json.loads((d / "summary.json").read_text())
        finals.setdefault(s["ffn"], {})[s["seed"]] = s["eval/log_perplexity"]
    relu, swiglu = (np.array([finals[v][k] for k in (0, 1)]) for v in ("relu", "swiglu"))

    row = _row(table, "FFN_SwiGLU")
    mean, std, n = re.match(r"([\d.]+) ± ([\d.]+) \((\d+)\)", row[2]).groups()
    assert float(mean) == round(swiglu.mean(), 4) and float(std) == round(swiglu.std(ddof=1), 4) and n == "2"
    delta, se = re.match(r"([+-][\d.]+) ± ([\d.]+)", row[3]).groups()
    assert float(delta) == round(swiglu.mean() - relu.mean(), 4)
    assert float(se) == round(np.sqrt(swiglu.var(ddof=1) / 2 + relu.var(ddof=1) / 2), 4)
    assert float(row[4]) == pytest.approx(st.ttest_ind(swiglu, relu, equal_var=False).pvalue, rel=1e-2)
    paired = re.match(r"([+-][\d.]+) ±", row[5]).group(1)
    assert float(paired) == round((swiglu - relu).mean(), 4)
    assert row[6] == "1.944 ± 0.010" and row[7] == "1.636"  # the paper's figures
    assert _row(table, "FFN_ReLU")[3].startswith("–")

    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {(r["ffn"], int(r["seed"])): float(r["eval/log_perplexity"]) for r in rows} == {
        (v, k): finals[v][k] for v in finals for k in finals[v]
    }
    for png in ("curves.png", "ranking.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "relu-s0",
        "relu-s1",
        "swiglu-s0",
        "swiglu-s1",
    ]
    assert "Kendall τ" in table and "## Reading" in table


def test_report_regenerates_byte_for_byte_from_copied_records(sweep_dir, tmp_path):
    out = tmp_path / "report"
    assert report_main([str(sweep_dir), "--out", str(out)]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    again = tmp_path / "again"
    assert report_main([str(out / "runs"), "--out", str(again)]) == 0
    assert {p.name: p.read_bytes() for p in again.iterdir() if p.is_file()} == first


def test_report_bad_input(tmp_path):
    assert report_main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 2


@pytest.mark.parametrize("preset", ["table1_cpu", "table1_paper", "table1_paper_long"])
def test_experiment_presets_compose(preset):
    cfg = compose([f"experiment={preset}"])
    assert cfg.logger.group == preset
    if preset == "table1_cpu":
        assert (cfg.model.name, cfg.data.source, cfg.trainer.device) == ("t5_tiny", "embedded", "cpu")
    else:
        assert (cfg.model.name, cfg.data.source, cfg.data.inputs_length, cfg.trainer.batch_size) == (
            "t5_base",
            "c4",
            512,
            128,
        )
        assert cfg.trainer.optimizer == "adafactor" and cfg.trainer.warmup_steps == 10_000


def test_committed_table1_cpu_report_is_complete():
    """The committed study: eight variants x 3 seeds, produced by the committed preset."""
    runs = ROOT / "reports" / "table1_cpu" / "runs"
    if not runs.is_dir():
        pytest.skip("reports/table1_cpu not committed yet")
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    assert sorted({s["ffn"] for s in summaries}) == sorted(
        ["relu", "gelu", "swish", "glu", "bilinear", "geglu", "swiglu", "reglu"]
    )
    assert sorted(s["seed"] for s in summaries) == [0] * 8 + [1] * 8 + [2] * 8
    preset = compose(["experiment=table1_cpu"])
    for p in runs.glob("*/config.yaml"):
        import yaml

        cfg = yaml.safe_load(p.read_text())
        assert cfg["logger"]["group"] == "table1_cpu"
        assert cfg["trainer"]["max_steps"] == preset.trainer.max_steps
        assert cfg["model"]["name"] == preset.model.name


def test_in_process_train_is_reportable(tmp_path):
    """A run made without Hydra's CLI (no .hydra dir) is still read, under the group 'runs'."""
    train(compose([*TINY, "trainer.max_steps=3"]), tmp_path / "relu-s0")
    assert report_main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert Path(tmp_path / "out" / "runs" / "relu-s0" / "summary.json").exists()


def test_readme_section_refreshed_from_report(sweep_dir, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- tiny_table:begin -->\nSTALE-TEXT\n<!-- tiny_table:end -->\noutro\n")
    assert report_main([str(sweep_dir), "--out", str(tmp_path / "r"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- tiny_table:begin -->\n") and text.endswith(
        "<!-- tiny_table:end -->\noutro\n"
    )
    assert "STALE-TEXT" not in text and "| FFN_SwiGLU |" in text
    assert (
        report_main(
            [str(sweep_dir), "--out", str(tmp_path / "r"), "--readme", str(tmp_path / "r" / "table1.md")]
        )
        == 2
    )


def test_make_report_reproduces_committed_files(tmp_path):
    """`make report` on the committed raw records gives the committed table, CSV and figures byte for byte."""
    committed = ROOT / "reports" / "table1_cpu"
    if not (committed / "runs").is_dir():
        pytest.skip("reports/table1_cpu not committed yet")
    assert report_main([str(committed / "runs"), "--out", str(tmp_path)]) == 0
    for name in ("table1.md", "runs.csv", "curves.png", "ranking.png"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
