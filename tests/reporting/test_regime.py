"""The studies at the paper's regime: their presets (tokens per parameter from the arithmetic the presets state),
the learning-rate check's pick on the validation set, and the regime curve's report recomputed from records."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats as st

from glu_study.config import compose
from glu_study.report import main as report_main
from glu_study.reporting.lr_check import baseline_pick, lr_check_markdown
from glu_study.reporting.records import RunRecord
from glu_study.reporting.regime_curve import budgets, regime_curve_markdown, settles_from
from tests.helpers import TINY, preset_sweep, run_cli

T5_NANO_NON_EMBEDDING = 444_032
TOKENS_PER_STEP = 32 * (128 + 29)


def test_table1_regime_presets_are_at_the_papers_ratio():
    """2,340 steps of batch 32 x (128 + 29) tokens at t5_nano's non-embedding parameters: ~26.5 per parameter,
    the paper's 65k-step column; the check brackets 0.003 .. 0.1 with 2 seeds, FFN_SwiGLU beside FFN_ReLU."""
    cfg = compose(["experiment=table1_regime"])
    assert cfg.model.name == "t5_nano" and cfg.data.source == "embedded"
    ratio = cfg.trainer.max_steps * cfg.trainer.batch_size * (128 + 29) / T5_NANO_NON_EMBEDDING
    assert ratio == pytest.approx(26.5, abs=0.1)
    assert preset_sweep("table1_regime") == {
        "seed": ["0", "1", "2", "3"],
        "ffn": ["relu", "gelu", "swish", "glu", "bilinear", "geglu", "swiglu", "reglu"],
    }
    lr = preset_sweep("table1_regime_lr")
    plateaus = [float(x) / cfg.trainer.warmup_steps**0.5 for x in lr["trainer.lr"]]
    assert plateaus == pytest.approx([0.003, 0.01, 0.03, 0.1]) and lr["seed"] == ["0", "1"]
    assert lr["ffn"] == ["relu", "swiglu"]
    assert compose(["experiment=table1_regime_lr"]).trainer.max_steps == cfg.trainer.max_steps


def test_regime_curve_preset_spans_20x_through_the_papers_ratio():
    sweep = preset_sweep("regime_curve")
    ratios = [int(s) * TOKENS_PER_STEP / T5_NANO_NON_EMBEDDING for s in sweep["trainer.max_steps"]]
    assert len(ratios) >= 5 and ratios[-1] / ratios[0] >= 20
    assert min(ratios) < 26.5 < max(ratios) and max(ratios) >= 2 * 26.4
    for steps in sweep["trainer.max_steps"]:
        cfg = compose(["experiment=regime_curve", f"trainer.max_steps={steps}"])
        assert cfg.trainer.eval_every == int(steps) // 10 and cfg.name == f"relu-n{steps}-s0"


def record(ffn, seed, steps, final, val=None, plateau=0.01, ratio=None):
    r = RunRecord(
        f"{ffn}-n{steps}-s{seed}",
        ffn,
        seed,
        "t5_nano",
        "g",
        1,
        100,
        1,
        steps,
        steps * 10,
        final,
        None,
        None,
        unigram_floor=5.0,
        plateau=plateau,
        val_final=val,
        tokens_per_param=ratio or steps / 10,
    )
    return r


def test_lr_check_picks_on_the_validation_set_and_flags_an_edge_pick():
    """The test set would pick 0.03, the validation set picks 0.01: the pick is the validation set's; a pick at
    the end of the grid is flagged."""
    finals = {0.003: (4.9, 4.9), 0.01: (4.6, 4.5), 0.03: (4.5, 4.6), 0.1: (4.95, 4.95)}
    records = [
        record("relu", k, 10, test, val=val, plateau=p) for p, (test, val) in finals.items() for k in (0, 1)
    ]
    text = lr_check_markdown(records, "t")
    assert "**Pick: plateau 0.01**, FFN_ReLU's validation-set argmin" in text and "interior" in text
    edge = [r for r in records if r.plateau != 0.003]
    for r in edge:
        if r.plateau == 0.1:
            r.val_final = 4.4
    assert "**at the edge of the grid**" in lr_check_markdown(edge, "t")
    old = [record("relu", 0, 10, f, plateau=p) for p, f in ((0.01, 4.6), (0.03, 4.5), (0.1, 4.7))]
    assert baseline_pick({"relu": {0.01: [4.6], 0.03: [4.5], 0.1: [4.7]}}, "relu") == (0.03, True)
    assert "predate the validation set" in lr_check_markdown(old, "t")


def test_regime_curve_reading_recomputed_from_records():
    """A gap that grows until 26 tokens per parameter and then stays: it settles there (Welch on per-seed gaps,
    recomputed here), and the last step's change is the one printed beside the paper's 65k -> 524k change."""
    gap = {25: -0.02, 100: -0.06, 260: -0.10, 520: -0.101}
    noise = (0.004, -0.003, -0.001)
    records = [
        r
        for steps, g in gap.items()
        for k in range(3)
        for r in (
            record("relu", k, steps, 4.5 + noise[k]),
            record("swiglu", k, steps, 4.5 + g + noise[(k + 1) % 3]),
        )
    ]
    curve = budgets(records)
    assert settles_from(curve, "swiglu").steps == 260
    text = regime_curve_markdown(records, curve, "t")
    per_seed = {s: [4.5 + g + noise[(k + 1) % 3] - 4.5 - noise[k] for k in range(3)] for s, g in gap.items()}
    change = np.mean(per_seed[520]) - np.mean(per_seed[260])
    p = st.ttest_ind(per_seed[520], per_seed[260], equal_var=False).pvalue
    assert f"the gap changes by {change:+.4f} (Welch p {p:.2g})" in text
    assert "**settles from 26 tokens per parameter** (260 steps)" in text
    assert "-0.053 -> -0.041, a change of +0.012" in text
    # what 3 seeds can resolve: pooled sd of per-seed gaps, Welch's threshold and 80%-power size (statsmodels)
    from statsmodels.stats.power import TTestIndPower

    sd = np.sqrt(np.mean([np.var(g, ddof=1) for g in per_seed.values()]))
    threshold = st.t.ppf(0.975, 4) * sd * np.sqrt(2 / 3)
    power = TTestIndPower().solve_power(nobs1=3, alpha=0.05, power=0.8) * sd
    assert f"sd {sd:.4f} nats" in text
    assert f"more than {threshold:.3f} nats to reach p < 0.05 and by {power:.3f}" in text
    assert "change from 65k to 524k steps (+0.012) is below what these seeds resolve" in text


def test_regime_curve_names_the_budget_whose_gaps_scatter_most():
    """A budget that ends while the runs' loss still falls steeply scatters more than the pooled sd says: the
    reading names it with its own sd (pooled over the variants at that budget)."""
    noise = {100: (0.004, -0.003, -0.001), 260: (0.06, -0.05, 0.01), 520: (0.002, 0.0, -0.004)}
    base = np.array([0.001, -0.002, 0.0])
    records = [
        r
        for steps, e in noise.items()
        for k in range(3)
        for r in (
            record("relu", k, steps, 4.5 + base[k]),
            record("swiglu", k, steps, 4.4 + e[k]),
            record("geglu", k, steps, 4.4 - e[k]),
        )
    ]
    text = regime_curve_markdown(records, budgets(records), "t")
    e = np.array(noise[260])
    sd = np.sqrt(np.mean([np.var(e - base, ddof=1), np.var(-e - base, ddof=1)]))  # pooled over the variants
    assert f"widest at 26 tokens per parameter (sd {sd:.4f})" in text


def test_where_the_gap_settles_is_read_past_the_regime_bar():
    """The same gap at every budget settles from the first one, unless that budget's FFN_ReLU has not cleared
    the regime bar (0.3 nats under the unigram floor, 5.0 here): then it settles from the next, and the regime
    line names the budget left out; with one budget past the bar, where it settles is not read."""
    noise = (0.004, -0.003, -0.001)
    base = {25: 4.8, 100: 4.5, 260: 4.4}  # worst seed 0.196 under the floor at 25 steps: below the bar

    def records(bases):
        return [
            r
            for steps, b in bases.items()
            for k in range(3)
            for r in (
                record("relu", k, steps, b + noise[k]),
                record("swiglu", k, steps, b - 0.06 + noise[k - 1]),
            )
        ]

    text = regime_curve_markdown(records(base), budgets(records(base)), "t")
    assert "**settles from 10 tokens per parameter** (100 steps)" in text
    assert "(Welch p >= 0.05; of the budgets past the regime bar)" in text
    assert "Below the regime bar (0.3 nats under it): 2.5 tokens per parameter, left out" in text
    cleared = {**base, 25: 4.6}
    text = regime_curve_markdown(records(cleared), budgets(records(cleared)), "t")
    assert "**settles from 2.5 tokens per parameter** (25 steps)" in text and "Every budget is past" in text
    barely = {**base, 100: 4.8}
    text = regime_curve_markdown(records(barely), budgets(records(barely)), "t")
    assert (
        "Fewer than two of its budgets are past the regime bar, so **where it settles is not read**" in text
    )


def test_regime_curve_reads_a_sweep_still_running():
    """A budget that lacks FFN_SwiGLU (its cells not yet run) drops out of SwiGLU's curve and shows "–" in the
    table; a variant paired at one budget only gets no curve."""
    records = [
        record(ffn, k, steps, 4.5 - 0.01 * k - (0.05 + 0.002 * k if ffn != "relu" else 0))
        for steps in (25, 100, 260)
        for ffn in ("relu", "geglu", "swiglu")
        for k in range(3)
        if not (ffn == "swiglu" and steps == 100) and not (ffn == "geglu" and steps != 25)
    ]
    text = regime_curve_markdown(records, budgets(records), "t")
    swiglu = next(line for line in text.splitlines() if line.startswith("- FFN_SwiGLU"))
    assert "2.5: -0.0520; 26: -0.0520." in swiglu
    assert "- FFN_GEGLU − FFN_ReLU: paired at fewer than two training lengths, so no curve yet." in text
    assert "| 100 | 10 |" in text and text.split("| 100 | 10 |")[1].split("\n")[0].count("–") == 2
    one_seed = [r for r in records if r.seed == 0 or r.steps != 260]
    assert "| 260 | 26 | 4.5000 ± – (1) |" in regime_curve_markdown(one_seed, budgets(one_seed), "t")


@pytest.mark.slow
def test_regime_curve_sweep_and_report_through_the_cli(tmp_path):
    sweep = tmp_path / "curve"
    tiny = [
        o
        for o in TINY
        if not o.startswith(("trainer.max_steps=", "trainer.eval_every=", "trainer.checkpoint"))
    ]
    r = run_cli(
        "glu_study.train",
        "-m",
        "experiment=regime_curve",
        *tiny,
        "ffn=relu,swiglu",
        "seed=0,1",
        "trainer.max_steps=4,8,12",
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "report"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    text = (out / "regime_curve.md").read_text()
    for steps in (4, 8, 12):
        s = json.loads((sweep / f"relu-n{steps}-s0" / "summary.json").read_text())
        assert f"| {steps} | {s['tokens_per_param']:.3g} |" in text
    assert (out / "regime_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def committed(study: str):
    from tests.helpers import ROOT

    runs = ROOT / "reports" / study / "runs"
    if not runs.is_dir():
        pytest.skip(f"reports/{study} not committed yet")
    return runs, [json.loads(p.read_text()) for p in sorted(runs.glob("*/summary.json"))]


@pytest.mark.parametrize(
    ("study", "ratio", "table", "plateaus"),
    [("table1_regime_lr", 26.5, "table1_regime", 4), ("table1_past_fall_lr", 53.0, "table1_past_fall", 3)],
)
def test_committed_lr_check_picks_the_validation_argmin_inside_the_grid(study, ratio, table, plateaus):
    """A committed learning-rate check: every run records its validation figure apart from its test figure and
    its regime; the pick is FFN_ReLU's validation argmin (mean over seeds, recomputed here) and interior, and the
    table it is for trains at it."""
    import yaml

    runs, summaries = committed(study)
    by_plateau: dict[float, list[float]] = {}
    for s in summaries:
        assert s["val/log_perplexity"] != s["eval/log_perplexity"]
        assert s["tokens_per_param"] == pytest.approx(ratio, abs=0.1)
        cfg = yaml.safe_load((runs / s["name"] / "config.yaml").read_text())
        plateau = cfg["trainer"]["lr"] / cfg["trainer"]["warmup_steps"] ** 0.5
        if s["ffn"] == "relu":
            by_plateau.setdefault(round(plateau, 6), []).append(s["val/log_perplexity"])
    assert len(by_plateau) >= plateaus and all(len(v) >= 2 for v in by_plateau.values())
    pick = min(by_plateau, key=lambda p: np.mean(by_plateau[p]))
    assert min(by_plateau) < pick < max(by_plateau)
    text = (runs.parent / "lr_check.md").read_text()
    assert f"**Pick: plateau {pick:g}**, FFN_ReLU's validation-set argmin" in text
    table1 = compose([f"experiment={table}"]).trainer
    assert table1.lr / table1.warmup_steps**0.5 == pytest.approx(pick)  # the table trains at the pick


def test_scaling_regime_trains_both_sizes_to_the_same_tokens_per_parameter():
    """Sizes compared at equal training length: the step count follows from the ratio (glu_study.steps_for_ratio),
    so t5_micro trains ~2.3x longer than t5_nano, and both see ~26.5 tokens per non-embedding parameter."""
    from glu_study.ffn import get_variant
    from glu_study.model import param_counts

    ratios = {}
    for size in ("t5_nano", "t5_micro"):
        cfg = compose(["experiment=scaling_regime", f"model={size}"])
        non_embedding = param_counts(cfg.model, get_variant("relu"), 1, 128, 29)["non_embedding_params"]
        ratios[size] = cfg.trainer.max_steps * TOKENS_PER_STEP / non_embedding
        assert cfg.trainer.eval_every == cfg.trainer.max_steps // 10
        assert (
            cfg.trainer.lr == compose(["experiment=table1_regime"]).trainer.lr
        )  # the rate chosen at t5_nano
    assert ratios == pytest.approx({"t5_nano": 26.5, "t5_micro": 26.5}, abs=0.01)
    assert preset_sweep("scaling_regime") == {
        "seed": ["0", "1", "2"],
        "model": ["t5_nano", "t5_micro"],
        "ffn": ["relu", "swiglu"],
    }


def sweep_cell(cfg: dict, key: str) -> str:
    """The value a run's resolved config gives a sweep parameter, as the sweep spells it (ffn=relu, seed=0)."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return str(node["name"] if isinstance(node, dict) else node)


@pytest.mark.parametrize(
    "study", ["table1_regime_lr", "regime_curve", "regime_control", "scaling_regime", "table1_past_fall_lr"]
)
def test_committed_regime_study_holds_every_cell_of_its_preset(study):
    """Every committed study at the paper's regime holds exactly its preset's sweep (each cell once), and each
    run was trained by the preset with that cell's values (a control's reference runs are checked by their own
    study)."""
    import yaml
    from omegaconf import OmegaConf

    from tests.helpers import ROOT, assert_trained_by

    runs = ROOT / "reports" / study / "runs"
    if not runs.is_dir():
        pytest.skip(f"reports/{study} not committed yet")
    params = preset_sweep(study)
    configs = [yaml.safe_load(p.read_text()) for p in sorted(runs.rglob("config.yaml"))]
    configs = [c for c in configs if c["logger"]["group"] == study]
    cells = sorted(tuple(sweep_cell(c, k) for k in params) for c in configs)
    expected = sorted(itertools.product(*params.values()))
    assert cells == sorted(expected)
    for cfg in configs:
        cell = [f"{k}={sweep_cell(cfg, k)}" for k in params]
        preset = compose([f"experiment={study}", *cell])
        assert_trained_by(cfg["trainer"], OmegaConf.to_container(preset.trainer, resolve=True))
        assert cfg["model"]["name"] == preset.model.name
        data = OmegaConf.to_container(preset.data, resolve=True)
        assert {k: cfg["data"].get(k) for k in ("source", "packages")} == {
            k: data.get(k) for k in ("source", "packages")
        }


def test_table1_reading_says_when_thread_counts_differ_and_whether_within_a_seed():
    from glu_study.reporting.table1 import threads_line

    def rec(ffn, seed, threads):
        return RunRecord(
            name=f"{ffn}-s{seed}", ffn=ffn, seed=seed, model="t5_nano", group="g", params=1,
            non_embedding_params=1, d_ff=1, steps=10, tokens_seen=1, final=4.0, tokens_per_s=None, wall_s=None,
            num_threads=threads,
        )  # fmt: skip

    same = [rec(v, k, 0) for v in ("relu", "swiglu") for k in (0, 1)]
    assert threads_line(same) is None
    by_seed = [rec(v, 0, 0) for v in ("relu", "swiglu")] + [
        rec(v, k, 1) for v in ("relu", "swiglu") for k in (1, 2)
    ]
    line = threads_line(by_seed)
    assert "torch default threads: seed 0; 1 thread: seeds 1, 2" in line and "paired within a seed" in line
    mixed = [rec("relu", 0, 0), rec("swiglu", 0, 1)]
    assert "**seed 0 mixes thread counts**" in threads_line(mixed)


def test_committed_regime_curve_numbers_recompute():
    """reports/regime_curve: per budget, FFN_ReLU's mean and each variant's paired Δ, 95% CI and Holm p (over the
    variants at that budget), and where each gap settles (Welch on per-seed gaps, over the budgets past the regime
    bar), recomputed from the records."""
    import re

    from statsmodels.stats.multitest import multipletests

    from glu_study.ffn import get_variant
    from tests.helpers import cells, numbers

    runs, summaries = committed("regime_curve")
    text = (runs.parent / "regime_curve.md").read_text()
    final = {(s["ffn"], s["steps"], s["seed"]): s["eval/log_perplexity"] for s in summaries}
    steps = sorted({s["steps"] for s in summaries})
    variants = sorted({s["ffn"] for s in summaries} - {"relu"})
    seeds = sorted({s["seed"] for s in summaries})
    gap = {}
    for n in steps:
        base = np.array([final["relu", n, k] for k in seeds])
        row = cells(text, str(n))
        assert row[2] == f"{base.mean():.4f} ± {base.std(ddof=1):.4f} ({len(seeds)})"
        ps = {}
        for i, v in enumerate(variants):
            d = np.array([final[v, n, k] for k in seeds]) - base
            gap[v, n] = d
            half = st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            cell = row[3 + i]
            assert numbers(cell)[:3] == [
                round(d.mean(), 4),
                round(d.mean() - half, 4),
                round(d.mean() + half, 4),
            ]
            ps[v] = st.ttest_rel(d + base, base, alternative="less").pvalue
        for v, adjusted in zip(
            variants, multipletests([ps[v] for v in variants], method="holm")[1], strict=True
        ):
            printed = re.search(r"Holm p ([^)]+)\)", row[3 + variants.index(v)]).group(1)
            assert float(printed) == pytest.approx(adjusted, rel=0.06)
    # where a gap settles is read on the budgets whose every FFN_ReLU seed ends >= 0.3 nats under the floor
    floor = summaries[0]["eval/unigram_floor"]
    judged = [n for n in steps if max(final["relu", n, k] for k in seeds) <= floor - 0.3]
    for v in variants:
        line = next(
            ln for ln in text.splitlines() if ln.startswith(f"- {get_variant(v).paper_name} − FFN_ReLU")
        )
        start = next(
            (
                n
                for i, n in enumerate(judged[:-1])
                if all(
                    st.ttest_ind(gap[v, m], gap[v, n], equal_var=False).pvalue >= 0.05
                    for m in judged[i + 1 :]
                )
            ),
            None,
        )
        assert (f"({start} steps): no later" in line) if start else ("**does not settle**" in line)
    # the budget whose per-seed gaps scatter most, its sd pooled over the variants
    sd = {n: np.sqrt(np.mean([np.var(gap[v, n], ddof=1) for v in variants])) for n in steps}
    widest = max(sd, key=sd.get)
    ratio = np.mean([s["tokens_per_param"] for s in summaries if s["steps"] == widest])
    assert f"widest at {ratio:.3g} tokens per parameter (sd {sd[widest]:.4f})" in text
