"""The scaling study — its preset, and a report whose every figure is recomputed here from run records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from scipy import stats as st

from glu_study.config import compose
from glu_study.ffn import get_variant
from glu_study.report import main as report_main
from tests.helpers import ROOT, assert_trained_by, cells, numbers, preset_sweep, sweep

SIZES = ("t5_nano", "t5_tiny")
VARIANTS = ("relu", "swiglu", "relu2")
NAMES = {"relu": "FFN_ReLU", "swiglu": "FFN_SwiGLU", "relu2": "FFN_ReLU²"}


@pytest.fixture(scope="module")
def scaling_dir(tmp_path_factory):
    """A real two-size sweep, small-but-real settings, run directories named like the preset's."""
    return sweep(
        tmp_path_factory.mktemp("scaling"),
        f"model={','.join(SIZES)}",
        f"ffn={','.join(VARIANTS)}",
        "seed=0,1,2",
        "logger.group=tiny_scaling",
        "name=${model.name}-${ffn.name}-s${seed}",
    )


@pytest.fixture(scope="module")
def report(scaling_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert report_main([str(scaling_dir), "--out", str(out)]) == 0
    return out


def summaries(run_dirs) -> dict[tuple[str, str, int], dict]:
    found = {}
    for p in run_dirs.glob("*/summary.json"):
        s = json.loads(p.read_text())
        found[(s["model"], s["ffn"], s["seed"])] = s
    return found


def paired(x: np.ndarray, ref: np.ndarray) -> tuple[float, float, float, float]:
    """Mean paired difference, its 95% t CI and the one-sided paired p (H1: x lower)."""
    d = x - ref
    half = st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half, st.ttest_rel(x, ref, alternative="less").pvalue


def holm(ps: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment, written out: sorted p times (m - i), running maximum, capped at 1."""
    out, running = {}, 0.0
    for i, (k, p) in enumerate(sorted(ps.items(), key=lambda kv: kv[1])):
        running = max(running, min(1.0, (len(ps) - i) * p))
        out[k] = running
    return out


@pytest.mark.slow
def test_per_size_statistics_recomputed_from_records(scaling_dir, report):
    table = (report / "scaling.md").read_text()
    runs = summaries(scaling_dir)
    for size in SIZES:
        final = {
            v: np.array([runs[(size, v, k)]["eval/log_perplexity"] for k in (0, 1, 2)]) for v in VARIANTS
        }
        tests = {v: paired(final[v], final["relu"]) for v in ("swiglu", "relu2")}
        adjusted = holm({v: t[3] for v, t in tests.items()})
        for v, (mean, lo, hi, p) in tests.items():
            row = cells(table, size, NAMES[v])
            assert row[2] == f"{runs[(size, v, 0)]['non_embedding_params']:,}" and row[3] == "6"
            assert row[4] == f"{final[v].mean():.4f} ± {final[v].std(ddof=1):.4f} (3)"
            assert numbers(row[5]) == [round(mean, 4), round(lo, 4), round(hi, 4)]
            assert float(row[6]) == pytest.approx(p, rel=1e-2)
            assert float(row[7]) == pytest.approx(adjusted[v], rel=1e-2)
        # the challenger against FFN_SwiGLU (one challenger here, so Holm leaves its p as it is)
        mean, lo, hi, p = paired(final["relu2"], final["swiglu"])
        row = next(
            r for r in table.split("## The challengers")[1].splitlines() if r.startswith(f"| {size} |")
        )
        c = [x.strip() for x in row.strip("|").split("|")]
        assert c[1] == "FFN_ReLU²" and numbers(c[2]) == [round(mean, 4), round(lo, 4), round(hi, 4)]
        assert float(c[3]) == pytest.approx(p, rel=1e-2) and float(c[4]) == pytest.approx(p, rel=1e-2)
    floor = {s["eval/unigram_floor"] for s in runs.values()}.pop()
    assert cells(table, "*unigram floor*")[4] == f"{floor:.4f}"


def slope_ci(runs: dict, sizes, variant: str) -> tuple[float, float, float, float, str]:
    """Least squares at the level of sizes: each size's mean (ReLU − variant) over its seeds on log2(non-embedding
    parameters), one point per size. The slope, its 95% t CI (sizes − 2 df), the two-sided p, and the word."""
    x, y = [], []
    for m in sizes:
        seeds = [k for (mm, v, k) in runs if mm == m and v == variant and (m, "relu", k) in runs]
        if not seeds:
            continue
        x.append(math.log2(runs[(m, "relu", seeds[0])]["non_embedding_params"]))
        y.append(
            np.mean(
                [
                    runs[(m, "relu", k)]["eval/log_perplexity"] - runs[(m, variant, k)]["eval/log_perplexity"]
                    for k in seeds
                ]
            )
        )
    x, y = np.array(x), np.array(y)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    se = math.sqrt((resid**2).sum() / (len(x) - 2) / ((x - x.mean()) ** 2).sum())
    half = st.t.ppf(0.975, len(x) - 2) * se
    p = 2 * st.t.sf(abs(slope / se), len(x) - 2)
    word = (
        "grows"
        if slope - half > 0
        else "shrinks"
        if slope + half < 0
        else "holds (no change with size resolved)"
    )
    return slope, slope - half, slope + half, p, word


def lengths(runs: dict) -> dict[str, float]:
    """Tokens seen per non-embedding parameter at each size, from the summaries."""
    out = {}
    for m in sorted({m for m, _, _ in runs}):
        ratios = [
            s.get("tokens_per_param") or s["tokens_seen"] / s["non_embedding_params"]
            for (mm, _, _), s in runs.items()
            if mm == m
        ]
        out[m] = float(np.mean(ratios))
    return out


@pytest.mark.slow
def test_trend_with_size_recomputed_from_records(scaling_dir, report):
    """Two sizes trained for the same steps are at different training lengths: no slope (two points have no CI)
    and no reading about size, with the lengths recomputed from the summaries."""
    table = (report / "scaling.md").read_text()
    runs = summaries(scaling_dir)
    ratio = lengths(runs)
    assert max(ratio.values()) > 1.1 * min(ratio.values())
    trend_rows = [ln for ln in table.split("## Trend with size")[1].split("## Reading")[0].splitlines()]
    assert not any(ln.startswith(f"| {NAMES[v]} |") for v in ("swiglu", "relu2") for ln in trend_rows)
    for v in ("swiglu", "relu2"):
        line = next(ln for ln in table.splitlines() if ln.startswith(f"- {NAMES[v]} − FFN_ReLU, paired"))
        assert line.endswith("**no reading about size**.")
        assert all(f"{m} {x:.3g}" in line for m, x in ratio.items())


def test_size_verdicts_at_equal_training_length():
    """At equal tokens per parameter: two sizes give "larger at X than at Y" when Welch resolves it (never a
    per-doubling trend); three give a slope fitted on one point per size."""
    from glu_study.reporting.records import RunRecord
    from glu_study.reporting.scaling import gap_line, sizes, trend

    def run(model, ffn, seed, params, final):
        return RunRecord(
            f"{model}-{ffn}-s{seed}",
            ffn,
            seed,
            model,
            "g",
            params,
            params,
            1,
            10,
            26 * params,
            final,
            None,
            None,
            tokens_per_param=26.0,
        )

    gaps = {"t5_nano": 0.05, "t5_tiny": 0.15, "t5_mini": 0.30}
    params = {"t5_nano": 100, "t5_tiny": 400, "t5_mini": 1600}
    noise = (0.001, -0.002, 0.001)
    records = [
        r
        for m in gaps
        for k in range(3)
        for r in (
            run(m, "relu", k, params[m], 4.0 + noise[k]),
            run(m, "swiglu", k, params[m], 4.0 - gaps[m] + noise[(k + 1) % 3]),
        )
    ]
    two = sizes([r for r in records if r.model != "t5_mini"])
    line = gap_line(two, "swiglu", two)
    assert "**larger at t5_tiny than at t5_nano**" in line and "per doubling" not in line
    three = sizes(records)
    t = trend(three, "swiglu")
    x = [math.log2(params[m]) for m in ("t5_nano", "t5_tiny", "t5_mini")]
    slope = np.polyfit(
        x,
        [
            np.mean([r.final for r in records if r.model == m and r.ffn == "relu"])
            - np.mean([r.final for r in records if r.model == m and r.ffn == "swiglu"])
            for m in ("t5_nano", "t5_tiny", "t5_mini")
        ],
        1,
    )[0]
    assert t.points == 3 and t.slope == pytest.approx(slope)
    assert "per doubling" in gap_line(three, "swiglu", three)


def test_equal_ratio_reading_prints_each_sizes_length_and_does_not_blame_under_training():
    """Sizes trained to one tokens-per-parameter ratio take different step counts and passes: the reading prints
    both per size, and a larger FFN_ReLU that ends no better is not called under-trained."""
    from glu_study.reporting.records import RunRecord
    from glu_study.reporting.scaling import baseline_line, length_line, scope_line, sizes

    shape = {"t5_nano": (100, 260, 1.5), "t5_micro": (233, 606, 3.4)}  # params, steps, passes
    records = [
        RunRecord(
            f"{m}-{v}-s{k}",
            v,
            k,
            m,
            "g",
            p,
            p,
            1,
            n,
            26 * p,
            4.0 - 0.01 * k,
            None,
            None,
            tokens_per_param=26.5,
            data_epochs=e,
        )
        for m, (p, n, e) in shape.items()
        for v in ("relu", "swiglu")
        for k in range(2)
    ]
    both = sizes(records)
    assert length_line(both) == (
        "- Training length, tokens seen per non-embedding parameter: t5_nano 26.5 (260 steps, 1.50 passes over "
        "the training chunks); t5_micro 26.5 (606 steps, 3.40 passes over the training chunks)."
    )
    assert "repeat the corpus unequally (t5_nano 1.50, t5_micro 3.40 passes)" in scope_line(both, 2)
    line = baseline_line(both)
    assert "does **not** improve" in line and "same tokens per parameter" in line
    assert "under-training" not in line


@pytest.mark.slow
def test_reading_says_whether_the_baseline_improves_with_size(scaling_dir, report):
    """With one step budget for every size, a larger FFN_ReLU that ends no better is under-trained: said, not hidden."""
    runs = summaries(scaling_dir)
    means = [np.mean([runs[(m, "relu", k)]["eval/log_perplexity"] for k in (0, 1, 2)]) for m in SIZES]
    line = next(ln for ln in (report / "scaling.md").read_text().splitlines() if ln.startswith("- Size:"))
    assert [round(m, 4) for m in means] == numbers(line)
    improves = means[1] < means[0]
    assert ("improves with every size" in line) == improves
    assert ("mixes model size with under-training" in line) == (not improves)


@pytest.mark.slow
def test_report_files_and_byte_for_byte_regeneration(report, tmp_path):
    for png in ("scaling.png", "gap.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((report / "runs.csv").read_text().splitlines()) == 1 + 18
    assert not (report / "table1.md").exists()
    text = (report / "scaling.md").read_text()
    assert "## Reading" in text and "- Regime:" in text and "What this can say: 2 sizes spanning" in text
    again = tmp_path / "again"
    assert report_main([str(report / "runs"), "--out", str(again)]) == 0
    for name in ("scaling.md", "runs.csv", "scaling.png", "gap.png"):
        assert (again / name).read_bytes() == (report / name).read_bytes(), name


@pytest.mark.slow
def test_table1_report_takes_extra_variants_as_rows_without_paper_figures(scaling_dir, tmp_path):
    one_size = [str(p) for p in scaling_dir.glob("t5_tiny-*") if p.is_dir()]
    assert report_main([*one_size, "--out", str(tmp_path)]) == 0
    row = cells((tmp_path / "table1.md").read_text(), "FFN_ReLU²")
    assert row[7:9] == ["–", "–"] and row[10] == "–"  # no paper figures, no paper rank
    assert numbers(row[3])  # but its own paired Δ vs ReLU


def test_scaling_preset_is_the_table1_recipe_at_three_sizes():
    table1, scaling = compose(["experiment=table1_cpu"]), compose(["experiment=scaling_cpu"])
    assert scaling.trainer == table1.trainer and scaling.data == table1.data
    assert scaling.logger.group == "scaling_cpu" and scaling.name == "t5_tiny-relu-s0"
    assert preset_sweep("scaling_cpu") == {
        "seed": ["0", "1", "2"],
        "ffn": ["relu", "geglu", "swiglu", "relu2", "xielu"],
        "model": ["t5_nano", "t5_tiny"],
    }
    assert compose(["experiment=scaling_cpu", "model=t5_mini"]).name == "t5_mini-relu-s0"


def test_committed_scaling_cpu_report_is_complete():
    runs = ROOT / "reports" / "scaling_cpu" / "runs"
    if not runs.is_dir():
        pytest.skip("reports/scaling_cpu not committed yet")
    preset = compose(["experiment=scaling_cpu"])
    found = sorted(
        (s["model"], s["ffn"], s["seed"])
        for s in (json.loads(p.read_text()) for p in runs.glob("*/summary.json"))
    )
    planned = [
        (m, v, k)
        for m in ("t5_nano", "t5_tiny")
        for v in preset_sweep("scaling_cpu")["ffn"]
        for k in (0, 1, 2)
    ]
    planned += [("t5_mini", v, k) for v in ("relu", "swiglu") for k in (0, 1, 2)]
    assert found == sorted(planned)
    for p in runs.glob("*/config.yaml"):
        cfg = yaml.safe_load(p.read_text())
        assert cfg["logger"]["group"] == "scaling_cpu"
        assert_trained_by(cfg["trainer"], OmegaConf.to_container(preset.trainer))


def test_committed_scaling_study_is_read_at_the_level_of_sizes():
    """The committed scaling study trained every size for the same steps, so its sizes sit at different training
    lengths (tokens per parameter recomputed from the records): every gap says "no reading about size", and the
    trend table's slope is the fit on one point per size, recomputed here."""
    committed = ROOT / "reports" / "scaling_cpu"
    runs = summaries(committed / "runs")
    text = (committed / "scaling.md").read_text()
    ratio = lengths(runs)
    assert max(ratio.values()) > 1.1 * min(ratio.values())
    sizes = sorted(ratio, key=lambda m: runs[(m, "relu", 0)]["non_embedding_params"])
    slope, low, high, p, _ = slope_ci(runs, sizes, "swiglu")
    row = cells(text.split("## Trend with size")[1], "FFN_SwiGLU")
    assert numbers(row[1]) == [round(slope, 4), round(low, 4), round(high, 4)]
    assert float(row[2]) == pytest.approx(p, rel=1e-2) and row[3] == "3"
    for v in {v for _, v, _ in runs if v != "relu"}:
        line = next(
            ln
            for ln in text.splitlines()
            if ln.startswith(f"- {get_variant(v).paper_name} − FFN_ReLU, paired")
        )
        assert line.endswith("**no reading about size**.")
    assert "grows** with size" not in text


@pytest.mark.slow
def test_report_says_what_the_sweep_cost_from_recorded_wall_times(scaling_dir, report):
    runs = summaries(scaling_dir)
    walls = {m: [s["wall_s"] for (mm, _, _), s in runs.items() if mm == m] for m in SIZES}
    total = sum(sum(w) for w in walls.values())
    parts = "; ".join(
        f"{m} {sum(w) / 3600:.2f} h, median {np.median(w):.0f} s a run" for m, w in walls.items()
    )
    expected = f"Compute: {total / 3600:.2f} hours of recorded run wall time in all ({parts})."
    assert expected in (report / "scaling.md").read_text().splitlines()


def test_committed_scaling_regime_compares_sizes_at_equal_training_length():
    """reports/scaling_regime: both sizes at the same tokens per parameter (recomputed), each size's FFN_SwiGLU row
    recomputed from the records, and the size verdict from Welch's test on the per-seed advantages."""
    committed = ROOT / "reports" / "scaling_regime"
    if not (committed / "runs").is_dir():
        pytest.skip("reports/scaling_regime not committed yet")
    runs = summaries(committed / "runs")
    text = (committed / "scaling.md").read_text()
    ratio = lengths(runs)
    assert max(ratio.values()) <= 1.1 * min(ratio.values())  # the report's equal-length tolerance
    advantage = {}
    for size in ratio:
        seeds = sorted(k for m, v, k in runs if m == size and v == "relu")
        final = {
            v: np.array([runs[(size, v, k)]["eval/log_perplexity"] for k in seeds])
            for v in ("relu", "swiglu")
        }
        mean, lo, hi, p = paired(final["swiglu"], final["relu"])
        row = cells(text, size, "FFN_SwiGLU")
        assert row[4] == f"{final['swiglu'].mean():.4f} ± {final['swiglu'].std(ddof=1):.4f} ({len(seeds)})"
        assert numbers(row[5]) == [round(mean, 4), round(lo, 4), round(hi, 4)]
        assert float(row[6]) == pytest.approx(p, rel=1e-2) and float(row[7]) == pytest.approx(p, rel=1e-2)
        advantage[size] = final["relu"] - final["swiglu"]
    small, large = sorted(ratio, key=lambda m: runs[(m, "relu", 0)]["non_embedding_params"])
    diff = advantage[large].mean() - advantage[small].mean()
    p = st.ttest_ind(advantage[large], advantage[small], equal_var=False).pvalue
    line = next(ln for ln in text.splitlines() if ln.startswith("- FFN_SwiGLU − FFN_ReLU, paired"))
    assert f"its advantage at {large} − at {small}: {diff:+.4f} (Welch p {p:.2g})" in line
    bigger, smaller = (large, small) if diff > 0 else (small, large)
    verdict = f"**larger at {bigger} than at {smaller}**" if p < 0.05 else f"**not resolved** between {small}"
    assert verdict in line and "per doubling" not in line
    # both sizes past the regime bar (every FFN_ReLU seed >= 0.3 nats under the floor), and each size's passes
    floor = next(iter(runs.values()))["eval/unigram_floor"]
    worst = {
        m: min(floor - s["eval/log_perplexity"] for (mm, v, _), s in runs.items() if (mm, v) == (m, "relu"))
        for m in ratio
    }
    assert min(worst.values()) >= 0.3 and "**every size learns more than token frequencies**" in text
    training = next(ln for ln in text.splitlines() if ln.startswith("- Training length"))
    for m in ratio:
        passes = np.mean([s["data_epochs"] for (mm, _, _), s in runs.items() if mm == m])
        assert f"{m} {ratio[m]:.3g} (" in training and f"{passes:.2f} passes" in training
