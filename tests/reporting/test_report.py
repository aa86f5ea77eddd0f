"""A tiny 3-variant x 3-seed sweep, the report on it, and the table's statistics recomputed from the records with
scipy (paired CI and one-sided t-test, Holm's step-down by hand, Welch); the learning-rate check's report."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from scipy import stats as st

from glu_study.config import compose
from glu_study.report import main as report_main
from glu_study.train import train
from tests.helpers import (
    ROOT,
    TINY,
    assert_trained_by,
    cells,
    final_records,
    numbers,
    preset_sweep,
    run_cli,
    sweep,
)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    return sweep(
        tmp_path_factory.mktemp("sweep"), "ffn=relu,geglu,swiglu", "seed=0,1,2", "logger.group=tiny_table"
    )


def _finals(sweep_dir) -> tuple[dict, set]:
    finals, floors = {}, set()
    for d in sorted(p.parent for p in sweep_dir.glob("*/summary.json")):
        s = json.loads((d / "summary.json").read_text())
        finals.setdefault(s["ffn"], {})[s["seed"]] = s["eval/log_perplexity"]
        floors.add(s["eval/unigram_floor"])
    return {v: np.array([finals[v][k] for k in (0, 1, 2)]) for v in finals}, floors


@pytest.mark.slow
def test_report_numbers_equal_recomputed_from_run_records(sweep_dir, tmp_path):
    out = tmp_path / "report"
    assert report_main([str(sweep_dir), "--out", str(out)]) == 0
    table = (out / "table1.md").read_text()
    finals, floors = _finals(sweep_dir)
    relu = finals["relu"]
    holm_family = {}
    for v in ("geglu", "swiglu"):
        row = cells(table, {"geglu": "FFN_GEGLU", "swiglu": "FFN_SwiGLU"}[v])
        x, d = finals[v], finals[v] - relu
        mean, std, n = re.match(r"([\d.]+) ± ([\d.]+) \((\d+)\)", row[2]).groups()
        assert float(mean) == round(x.mean(), 4) and float(std) == round(x.std(ddof=1), 4) and n == "3"
        half = st.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
        assert numbers(row[3]) == [round(d.mean(), 4), round(d.mean() - half, 4), round(d.mean() + half, 4)]
        p = st.ttest_rel(x, relu, alternative="less").pvalue
        assert float(row[4]) == pytest.approx(p, rel=1e-2)
        holm_family[v] = (p, float(row[5]))
        welch_delta, welch_se, welch_p = numbers(row[6])
        assert welch_delta == round(x.mean() - relu.mean(), 4)
        assert welch_se == round(np.sqrt(x.var(ddof=1) / 3 + relu.var(ddof=1) / 3), 4)
        assert welch_p == pytest.approx(st.ttest_ind(x, relu, equal_var=False).pvalue, rel=1e-2)
    # Holm's step-down over the two primary comparisons present: the smaller p times 2, the larger times 1,
    # each at least the adjusted p before it.
    (lo_p, lo_cell), (hi_p, hi_cell) = sorted(holm_family.values())
    assert lo_cell == pytest.approx(min(1.0, 2 * lo_p), rel=1e-2)
    assert hi_cell == pytest.approx(min(1.0, max(2 * lo_p, hi_p)), rel=1e-2)
    assert cells(table, "FFN_SwiGLU")[7:9] == ["1.944 ± 0.010", "1.636"]  # the paper's figures
    assert cells(table, "FFN_ReLU")[3].startswith("–")
    (floor,) = floors
    assert cells(table, "*unigram floor*")[2] == f"{floor:.4f}"
    assert f"scores {floor:.4f} on this held-out set" in table  # the regime line reads the same floor

    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["ffn"], int(r["seed"])): float(r["eval/log_perplexity"]) for r in rows} == {
        (v, k): finals[v][k] for v in finals for k in range(3)
    }
    for png in ("curves.png", "ranking.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "runs").iterdir())) == 9
    assert "Kendall τ" in table and "## Reading" in table and "What 3 seeds can resolve" in table


@pytest.mark.slow
def test_lr_check_preset_and_report(tmp_path):
    """experiment=table1_cpu_lr: FFN_ReLU and FFN_SwiGLU at every plateau of its grid (read from the preset), one
    run directory each, and a report whose cells are the runs' own figures."""
    from tests.helpers import preset_sweep

    rates = preset_sweep("table1_cpu_lr")["trainer.lr"]
    assert (
        len(rates) >= 4 and "10.0" in rates
    )  # a grid that can bracket the optimum (0.1 above the 0.03 pick)
    sweep = tmp_path / "lr"
    tiny = [
        o for o in TINY if not o.startswith("trainer.warmup_steps=")
    ]  # the preset's 10^4: plateau = lr / 100
    r = run_cli("glu_study.train", "-m", "experiment=table1_cpu_lr", *tiny, f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(
        f"{v}-lr{lr}-s0" for v in ("relu", "swiglu") for lr in rates
    )
    out = tmp_path / "report"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    text = (out / "lr_check.md").read_text()

    def val(variant: str, lr: str) -> float:  # chosen on the validation set
        return json.loads((sweep / f"{variant}-lr{lr}-s0" / "summary.json").read_text())["val/log_perplexity"]

    for lr in rates:
        a, b = val("relu", lr), val("swiglu", lr)
        assert f"| {float(lr) / 100:g} | {a:.4f} | {b:.4f} | {b - a:+.4f} |" in text
    pick = min(rates, key=lambda lr: val("relu", lr))
    assert f"**Pick: plateau {float(pick) / 100:g}**, FFN_ReLU's validation-set argmin" in text
    floor = json.loads((sweep / "relu-lr1.0-s0" / "summary.json").read_text())["eval/unigram_floor"]
    assert (
        f"Unigram floor of the held-out set (a model that knows only token frequencies): {floor:.4f}." in text
    )
    assert (out / "lr_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "table1.md").exists()


@pytest.mark.slow
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


def test_report_refuses_to_pool_runs_that_saw_different_corpora(tmp_path):
    """A run recorded before corpus fingerprints existed (its summary without the field, as the first committed
    studies were written) and a new one: different corpora as far as the records can tell, so one error line
    naming the runs, exit 2, nothing written."""
    runs = tmp_path / "runs"
    for name in ("relu-s0", "swiglu-s1"):
        train(compose([*TINY, "trainer.max_steps=3"]), runs / name)
    old = runs / "relu-s0" / "summary.json"
    summary = json.loads(old.read_text())
    del summary["corpus_fingerprint"], summary["tokenizer_fingerprint"]
    old.write_text(json.dumps(summary))
    result = run_cli("glu_study.report", str(runs), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "different corpora" in errors[0]
    assert "unrecorded: relu-s0" in errors[0] and "relu-s0 (1 runs)" in errors[0]
    assert not (tmp_path / "out").exists()


def test_report_refuses_to_pool_runs_tokenised_by_different_tokenizers(tmp_path):
    """The same corpus tokenised by another tokenizer (another thread count, or one trained before the sample
    was drawn reproducibly) is another token stream: refused like another corpus."""
    runs = tmp_path / "runs"
    for name in ("relu-s0", "swiglu-s0"):
        train(compose([*TINY, "trainer.max_steps=3"]), runs / name)
    other = runs / "swiglu-s0" / "summary.json"
    summary = json.loads(other.read_text())
    recorded = summary["tokenizer_fingerprint"]
    assert len(recorded) == 16
    summary["tokenizer_fingerprint"] = "0" * 16
    other.write_text(json.dumps(summary))
    result = run_cli("glu_study.report", str(runs), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "different corpora or tokenizers" in errors[0]
    assert f"(tokenizer {recorded}): relu-s0 (1 runs)" in errors[0] and f"(tokenizer {'0' * 16})" in errors[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "preset", ["table1_cpu", "table1_cpu_lr", "table1_paper", "table1_paper_long", "scaling_cpu"]
)
def test_experiment_presets_compose(preset):
    cfg = compose([f"experiment={preset}"])
    assert cfg.logger.group == preset
    # Every Table 1 preset trains with the paper's recipe: Adafactor (transformers' on CPU, the same algorithm
    # without host syncs on GPUs), lr x rsqrt(max(step, 10^4)), linear decay over the last 10%; the paper's plateau
    # (lr 1.0 = 0.01) on GPUs, the one the CPU learning-rate check chose on CPU.
    t = cfg.trainer
    adafactor = "adafactor" if "_cpu" in preset else "adafactor_device"
    assert (t.optimizer, t.schedule, t.warmup_steps, t.decay_fraction) == (adafactor, "rsqrt", 10_000, 0.1)
    assert t.lr == (3.0 if "_cpu" in preset else 1.0)
    if "_cpu" in preset:
        assert (cfg.model.name, cfg.data.source, cfg.trainer.device) == ("t5_tiny", "embedded", "cpu")
        assert cfg.data.eval_examples * 29 >= 30_000  # at least ~30k held-out target tokens (29 per example)
    else:
        assert (cfg.model.name, cfg.data.source, cfg.data.inputs_length, cfg.trainer.batch_size) == (
            "t5_base",
            "c4",
            512,
            128,
        )


def committed_studies() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "reports").glob("*/runs") if (p.parent / "runs").is_dir())


@pytest.mark.parametrize("study", ["table1_cpu", "table1_regime"])
def test_committed_table1_is_complete_and_its_numbers_recompute(study):
    """A committed Table 1: every variant x seed of its preset, each run trained by that preset, and every
    variant's mean, paired Δ and CI, one-sided p and Holm p recomputed here from the raw records (scipy,
    statsmodels)."""
    from statsmodels.stats.multitest import multipletests

    from glu_study.ffn import get_variant
    from glu_study.reporting.table1 import holm_family

    runs = ROOT / "reports" / study / "runs"
    if not runs.is_dir():
        pytest.skip(f"reports/{study} not committed yet")
    preset, params = compose([f"experiment={study}"]), preset_sweep(study)
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    cells_run = sorted((v, int(k)) for v in params["ffn"] for k in params["seed"])
    assert sorted((s["ffn"], s["seed"]) for s in summaries) == cells_run
    for p in runs.glob("*/config.yaml"):
        cfg = yaml.safe_load(p.read_text())
        assert cfg["logger"]["group"] == study
        assert_trained_by(cfg["trainer"], OmegaConf.to_container(preset.trainer))
        assert cfg["model"]["name"] == preset.model.name
        assert cfg["data"]["eval_examples"] == preset.data.eval_examples

    finals = {v: {} for v in params["ffn"]}
    for s in summaries:
        finals[s["ffn"]][s["seed"]] = s["eval/log_perplexity"]
    seeds = sorted(finals["relu"])
    x = {v: np.array([finals[v][k] for k in seeds]) for v in finals}
    table, n = (runs.parent / "table1.md").read_text(), len(seeds)
    ps = {}
    for v in params["ffn"]:
        row = cells(table, get_variant(v).paper_name)
        assert row[2] == f"{x[v].mean():.4f} ± {x[v].std(ddof=1):.4f} ({n})"
        if v == "relu":
            continue
        d = x[v] - x["relu"]
        half = st.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
        assert numbers(row[3]) == [round(d.mean(), 4), round(d.mean() - half, 4), round(d.mean() + half, 4)]
        ps[v] = st.ttest_rel(x[v], x["relu"], alternative="less").pvalue
        assert float(row[4]) == pytest.approx(ps[v], rel=1e-2)
    family = [v for v in holm_family(params["ffn"]) if v in ps]  # the primary claims and any extra row
    for v, adjusted in zip(family, multipletests([ps[v] for v in family], method="holm")[1], strict=True):
        assert float(cells(table, get_variant(v).paper_name)[5]) == pytest.approx(adjusted, rel=1e-2)


def test_in_process_train_is_reportable(tmp_path):
    """A run made without Hydra's CLI (no .hydra dir) is still read, under the group 'runs'."""
    train(compose([*TINY, "trainer.max_steps=3"]), tmp_path / "relu-s0")
    assert report_main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert Path(tmp_path / "out" / "runs" / "relu-s0" / "summary.json").exists()


@pytest.mark.slow
def test_readme_section_refreshed_from_report(sweep_dir, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- tiny_table:begin -->\nSTALE-TEXT\n<!-- tiny_table:end -->\noutro\n")
    assert report_main([str(sweep_dir), "--out", str(tmp_path / "r"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- tiny_table:begin -->\n") and text.endswith(
        "<!-- tiny_table:end -->\noutro\n"
    )
    assert "STALE-TEXT" not in text and "| FFN_SwiGLU |" in text
    section = text.split("<!-- tiny_table:begin -->")[1].split("<!-- tiny_table:end -->")[0]
    # the report's "## Reading" sits one level under the README's own "##" section heading
    assert "\n### Reading\n" in section and "\n## " not in section and "\n# " not in section
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", section)
    assert links == ["r/curves.png", "r/ranking.png"] and all((tmp_path / link).is_file() for link in links)
    # a README without the markers: refused before anything is written
    fresh = tmp_path / "fresh"
    assert (
        report_main([str(sweep_dir), "--out", str(fresh), "--readme", str(tmp_path / "r" / "table1.md")]) == 2
    )
    assert not fresh.exists()


REFERENCES = {"regime_control": "table1_regime"}  # as the Makefile's report target reads the control


def test_make_report_reproduces_committed_files(tmp_path):
    """Every committed study, and its README section, regenerates from its committed raw records byte for byte."""
    studies = committed_studies()
    if not studies:
        pytest.skip("no study committed yet")
    readme = tmp_path / "README.md"
    readme.write_bytes((ROOT / "README.md").read_bytes())
    for study in studies:
        out = tmp_path / "reports" / study.name  # the README links its figures by this relative path
        reference = ["--reference", REFERENCES[study.name]] if study.name in REFERENCES else []
        assert report_main([str(study / "runs"), *reference, "--out", str(out), "--readme", str(readme)]) == 0
        generated = sorted(p.name for p in out.iterdir() if p.is_file())
        assert generated, study
        for name in generated:
            assert (out / name).read_bytes() == (study / name).read_bytes(), f"{study.name}/{name}"
    assert readme.read_bytes() == (ROOT / "README.md").read_bytes()


@pytest.mark.parametrize(
    ("deltas", "holm_ps", "verdict"),
    [
        ((-0.1, -0.1, -0.1, -0.1), (0.01, 0.01, 0.02, 0.03), "**Holds.**"),
        ((-0.1, -0.1, -0.1, -0.1), (0.01, 0.2, 0.02, 0.03), "**Holds in direction only.**"),
        (
            (+0.3, -0.1, -0.2, -0.3),
            (0.97, 0.58, 0.02, 0.02),
            "**Does not hold here**: it holds for FFN_SwiGLU, FFN_ReGLU (Holm p < 0.05); FFN_GEGLU lower but not "
            "resolved; FFN_Bilinear not lower than FFN_ReLU.",
        ),
    ],
)
def test_the_claim_verdict_says_which_gated_variants_it_holds_for(deltas, holm_ps, verdict):
    """ "The GLU variants beat FFN_ReLU" holds when every primary comparison is resolved after Holm; otherwise the
    reading names the variants it holds for, those lower but unresolved, and those on the other side."""
    from glu_study.reporting.table1 import PRIMARY, VariantStats, claim_line

    stats = {
        v: VariantStats(v, 4, 1, 4.0, 0.1, paired_delta=d, p_holm=p)
        for v, d, p in zip(PRIMARY, deltas, holm_ps, strict=True)
    }
    assert PRIMARY == ("bilinear", "geglu", "swiglu", "reglu")
    assert claim_line(stats).endswith(verdict)


def test_the_nongated_reading_places_each_ci_against_the_papers_band():
    from glu_study.reporting.table1 import EQUIVALENCE, equivalence_word

    assert EQUIVALENCE == 0.02
    assert equivalence_word(-0.015, 0.01) == "within"
    assert equivalence_word(-0.43, -0.03) == "lower by more than 0.02"
    assert equivalence_word(0.021, 0.2) == "higher by more than 0.02"
    assert equivalence_word(-0.43, 0.03) == "neither within nor beyond shown"


def test_best_two_is_a_claim_about_the_papers_variants_only():
    """An extra row without a paper figure (FFN_Maxout) lowest of all takes no place in "the best two": the two
    lowest paper variants are compared (2nd vs 3rd among them), and the seed resamples count the top pair among
    the paper's variants alone."""
    from glu_study.reporting.table1 import best_two_line, compute_stats, seed_bootstrap

    finals = {
        "maxout": [3.0, 3.1, 3.05, 3.02],
        "swiglu": [4.00, 4.02, 4.01, 4.00],
        "geglu": [4.05, 4.06, 4.04, 4.05],
        "relu": [4.50, 4.52, 4.49, 4.51],
    }
    records = final_records(finals, "table1_cpu")
    boot = seed_bootstrap(records)
    line = best_two_line(records, compute_stats(records), boot)
    p = st.ttest_rel(finals["geglu"], finals["relu"], alternative="less").pvalue
    assert "Our two lowest means among the paper's variants: FFN_SwiGLU, FFN_GEGLU " in line
    assert f"2nd vs 3rd (FFN_GEGLU − FFN_ReLU) -0.4550, paired one-sided p {p:.2g}" in line
    assert "GEGLU and SwiGLU are the two best in 100% of seed resamples" in line
    assert line.endswith("**Holds.**")
    assert boot.top_two == {frozenset(("geglu", "swiglu")): pytest.approx(1.0)}
    assert boot.rank_low["maxout"] == 1  # the row keeps its own rank in the table
