"""The repetition control's reading: where a run's training loss falls (on synthetic curves and on the committed
default-corpus runs the rule was fixed on), what each reference/control pair says, and the report through the
CLI with its bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glu_study.ffn import get_variant
from glu_study.report import main as report_main
from glu_study.reporting.falls import FALL_DROP, decay_start, fall_step
from glu_study.reporting.records import RunRecord, read_run_dir
from glu_study.reporting.regime_control import Pair, threads_line, verdict
from tests.helpers import ROOT, run_cli, sweep


def curve(
    fall_at: int | None, depth: float = 0.5, steps: int = 2000, every: int = 10
) -> list[tuple[int, float]]:
    """A slowing descent (5 -> ~4.4), then, from `fall_at`, a fall of `depth` nats over 200 steps."""
    out = []
    for s in range(every, steps + 1, every):
        loss = 4.4 + 0.6 * (300 / (s + 300))
        if fall_at is not None and s > fall_at:
            loss -= min(depth, depth * (s - fall_at) / 200)
        out.append((s, loss))
    return out


def test_fall_step_finds_an_acceleration_not_the_early_descent():
    found = fall_step(curve(1200), before=1800)
    assert found is not None and 1200 < found <= 1200 + 200  # placed within the fall's first 200 steps
    assert fall_step(curve(None), before=1800) is None  # the early, slowing descent is never a fall
    assert fall_step(curve(1850), before=1800) is None  # a fall inside the decay is the decay's, not counted
    # the threshold is in nats per window: a fall of less than FALL_DROP per 100 steps is not found
    assert fall_step(curve(1200, depth=1.5 * FALL_DROP), before=1800) is None


def test_fall_steps_on_the_committed_default_corpus_runs():
    """The rule, fixed on table1_regime's own runs before any control: FFN_SwiGLU seed 1 at plateau 0.03 falls
    at ~1,630 (its 100-step mean loss 4.34 -> 4.09 by 1,700); FFN_ReLU seed 0 falls only inside the decay."""
    runs = ROOT / "reports" / "table1_regime_lr" / "runs"
    if not runs.is_dir():
        pytest.skip("reports/table1_regime_lr not committed yet")
    swiglu, relu = read_run_dir(runs / "swiglu-lr3.0-s1"), read_run_dir(runs / "relu-lr3.0-s0")
    assert decay_start(relu) == pytest.approx(2106)
    assert 1550 <= fall_step(swiglu.train_curve, decay_start(swiglu)) <= 1750
    assert fall_step(relu.train_curve, decay_start(relu)) is None


def record(name: str, group: str, epochs: float, steps: int = 2000) -> RunRecord:
    return RunRecord(
        name=name, ffn="relu", seed=0, model="t5_nano", group=group, params=1, non_embedding_params=1, d_ff=1,
        steps=steps, tokens_seen=1, final=4.0, tokens_per_s=None, wall_s=None, data_epochs=epochs,
        decay_fraction=0.1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("ref_fall", "ctrl_fall", "follows"),
    [
        (1000, 1050, "steps"),  # the same step
        (1000, 1450, "passes"),  # 1.5x later: the same number of passes
        (1400, None, "passes"),  # the passes put it at 2,100, past the decay's start (1,800): none seen
        (1000, None, "neither"),  # the passes put it at 1,500, before the decay, yet none came
        (None, None, None),  # no fall on the reference's corpus: says nothing
    ],
)
def test_a_pair_says_steps_passes_neither_or_nothing(ref_fall, ctrl_fall, follows):
    # the reference passes over its data 2.1 times, the control 1.4: the same pass comes 1.5x later in steps
    p = Pair("relu", 0, record("r", "ref", 2.1), record("c", "ctl", 1.4), ref_fall, ctrl_fall)
    assert p.passes_ratio == pytest.approx(1.5) and p.follows == follows


def test_the_verdict_needs_two_informative_pairs_that_agree():
    ref, ctl = record("r", "ref", 2.1), record("c", "ctl", 1.4)
    steps, passes = Pair("relu", 0, ref, ctl, 1000, 1000), Pair("relu", 1, ref, ctl, 1000, 1500)
    silent = Pair("relu", 2, ref, ctl, None, None)
    assert verdict([steps, silent]).startswith("**not resolved**: 1 informative")
    assert verdict([steps, steps, silent]).startswith("**the fall follows the step count**")
    assert verdict([passes, passes]).startswith("**the fall follows the passes")
    assert verdict([steps, passes]).startswith("**not resolved**: the informative pairs disagree")
    close = record("c", "ctl", 2.0)  # a corpus 5% larger: the two explanations predict nearly the same step
    assert "changes the passes by only 1.05x" in verdict(
        [Pair("relu", s, ref, close, 1000, 1000) for s in (0, 1)]
    )


def test_the_reading_names_pairs_whose_runs_used_different_thread_counts():
    ref, ctl = record("r", "ref", 2.1), record("c", "ctl", 1.4)
    assert "the same count" in threads_line([Pair("relu", 0, ref, ctl, 1000, 1000)])
    two = record("r2", "ref", 2.1)
    two.num_threads = 2
    line = threads_line([Pair("relu", 0, ref, ctl, 1000, 1000), Pair("relu", 1, two, ctl, 1000, 1000)])
    assert "**FFN_ReLU seed 1 (2 / 0) ran reference and control with different counts**" in line


@pytest.mark.slow
def test_control_report_through_the_cli(tmp_path):
    """A reference sweep on one corpus and a control on another (the standard library's docstrings with tqdm's
    added): the report pairs them, copies only the paired records, and refuses what it cannot pair."""
    ref = sweep(tmp_path / "ref", "ffn=relu", "seed=0,1", "logger.group=ref")
    ctl = sweep(tmp_path / "ctl", "ffn=relu", "seed=0", "logger.group=ctl", "data.packages=[tqdm]")
    out = tmp_path / "report"
    assert report_main([str(ref), str(ctl), "--reference", "ref", "--out", str(out)]) == 0
    text = (out / "regime_control.md").read_text()
    assert text.startswith("# Repetition control: ctl against ref") and "| FFN_ReLU | 0 |" in text
    copied = sorted(str(p.parent.relative_to(out / "runs")) for p in (out / "runs").rglob("summary.json"))
    assert copied == ["ctl/relu-s0", "ref/relu-s0"]  # relu-s1 pairs with no control run: left out
    again = tmp_path / "again"  # regenerates from the copied records alone
    assert report_main([str(out / "runs"), "--reference", "ref", "--out", str(again)]) == 0
    for name in ("regime_control.md", "regime_control.png"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    epochs = [json.loads((d / "relu-s0" / "summary.json").read_text())["data_epochs"] for d in (ref, ctl)]
    assert f"{epochs[0]:.2f} times, the control {epochs[1]:.2f}" in text
    assert (out / "regime_control.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bad input: one error line, exit 2, nothing written
    for args, fragment in (
        ([str(ref), str(ctl), "--reference", "nosuch"], "--reference nosuch: need runs of that group"),
        ([str(ref), "--reference", "ref"], "--reference ref: need runs of that group and of another"),
    ):
        fresh = tmp_path / "fresh"
        r = run_cli("glu_study.report", *args, "--out", str(fresh))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and fragment in r.stderr, r.stderr
        assert not fresh.exists()


def independent_fall(metrics: list[dict], decay_start_step: float) -> int | None:
    """The module's rule written again from its docstring, on the raw metrics.jsonl rows."""
    rows = [(r["step"], r["train/loss"]) for r in metrics if "train/loss" in r and "source" not in r]

    def window_mean(lo, hi):
        xs = [v for s, v in rows if lo < s <= hi]
        return sum(xs) / len(xs) if xs else float("nan")

    for s, _ in rows:
        if 300 <= s < decay_start_step:
            drop = window_mean(s - 200, s - 100) - window_mean(s - 100, s)
            previous = window_mean(s - 300, s - 200) - window_mean(s - 200, s - 100)
            if drop >= 0.1 and drop >= 2 * previous:
                return s
    return None


def test_committed_control_recomputes_from_its_records():
    """reports/regime_control: every row's fall steps recomputed from the raw metrics by an independent reading
    of the rule, and its passes from summary.json."""
    import yaml

    study = ROOT / "reports" / "regime_control"
    if not (study / "runs").is_dir():
        pytest.skip("reports/regime_control not committed yet")
    from scipy import stats as st

    text = (study / "regime_control.md").read_text()
    control = study / "runs" / "regime_control"
    log_ratio, log_passes = [], []  # over the pairs with a fall on both corpora
    for run in sorted(control.iterdir()):
        falls, found, epochs = [], [], []
        for side in (study / "runs" / "table1_regime" / run.name, run):
            s = json.loads((side / "summary.json").read_text())
            trainer = yaml.safe_load((side / "config.yaml").read_text())["trainer"]
            metrics = [json.loads(line) for line in (side / "metrics.jsonl").read_text().splitlines()]
            fall = independent_fall(metrics, (1 - trainer["decay_fraction"]) * s["steps"])
            passes = "–" if fall is None else f"{s['data_epochs'] * fall / s['steps']:.2f}"
            falls += ["–" if fall is None else str(fall), passes]
            found.append(fall)
            epochs.append(s["data_epochs"])
        ffn, seed = run.name.rsplit("-s", 1)
        assert f"| {get_variant(ffn).paper_name} | {seed} | {' | '.join(falls)} |" in text
        if None not in found:
            log_ratio.append(np.log(found[1] / found[0]))
            log_passes.append(np.log(epochs[0] / epochs[1]))
    for group in ("table1_regime", "regime_control"):  # each corpus's own floor and FFN_ReLU's worst margin
        summaries = [json.loads(p.read_text()) for p in (study / "runs" / group).glob("*/summary.json")]
        floor = {s["eval/unigram_floor"] for s in summaries}.pop()
        margin = floor - max(s["eval/log_perplexity"] for s in summaries if s["ffn"] == "relu")
        assert margin >= 0.3
        assert (
            f"scores {floor:.4f} on this held-out set" in text
            and f"at least {margin:.3f} nats under it" in text
        )
    r, lp = np.array(log_ratio), np.array(log_passes)
    half = st.t.ppf(0.975, len(r) - 1) * r.std(ddof=1) / np.sqrt(len(r))
    assert (
        f"Over the {len(r)} pairs with a fall on both corpora, the control's fall comes at {np.exp(r.mean()):.2f}x "
        f"the reference's step (geometric mean; 95% CI [{np.exp(r.mean() - half):.2f}, "
        f"{np.exp(r.mean() + half):.2f}]x, t over pairs). The step count predicts 1x (two-sided p "
        f"{st.ttest_1samp(r, 0).pvalue:.2g}), the passes {np.exp(lp.mean()):.2f}x (p "
        f"{st.ttest_1samp(r - lp, 0).pvalue:.2g})"
    ) in text


def test_table1_reading_gives_each_variant_s_fall_step_when_any_run_falls():
    from glu_study.reporting.table1 import fall_line

    def run(ffn, seed, fall_at):
        r = record(f"{ffn}-s{seed}", "g", 2.1)
        r.ffn, r.seed, r.train_curve = ffn, seed, curve(fall_at)
        return r

    runs = [run("relu", 0, None), run("relu", 1, 1500), run("swiglu", 0, 1000), run("swiglu", 1, 1200)]
    line = fall_line(runs, {"relu": None, "swiglu": None})
    found = {r.name: fall_step(r.train_curve, decay_start(r)) for r in runs}
    assert f"FFN_ReLU step {found['relu-s1']:,} (1 of 2 seeds)" in line
    assert f"FFN_SwiGLU step {(found['swiglu-s0'] + found['swiglu-s1']) / 2:,.0f} (2 of 2 seeds)" in line
    assert "before the decay (step 1,800;" in line
    assert fall_line([run("relu", 0, None), run("swiglu", 0, None)], {"relu": None, "swiglu": None}) is None


def test_the_ratio_test_over_pairs_rejects_the_prediction_the_falls_miss():
    """log(control fall / reference fall) over the pairs with both falls, t-tested against 0 (the step count) and
    against log(passes ratio) (the passes); pairs missing a fall are left out, fewer than two give no line."""
    from scipy import stats as st

    from glu_study.reporting.regime_control import ratio_line

    ref, ctl = record("r", "ref", 2.1), record("c", "ctl", 1.4)  # the passes predict 1.5x
    at_steps = [Pair("relu", s, ref, ctl, 1000, c) for s, c in enumerate((980, 1050, 1010, 940))]
    line = ratio_line([*at_steps, Pair("relu", 9, ref, ctl, None, 1200)])
    r = np.log(np.array([980, 1050, 1010, 940]) / 1000)
    half = st.t.ppf(0.975, 3) * r.std(ddof=1) / 2
    assert line.startswith("- Over the 4 pairs with a fall on both corpora, the control's fall comes at ")
    assert f"{np.exp(r.mean()):.2f}x the reference's step" in line
    assert f"95% CI [{np.exp(r.mean() - half):.2f}, {np.exp(r.mean() + half):.2f}]x" in line
    assert f"1x (two-sided p {st.ttest_1samp(r, 0).pvalue:.2g})" in line
    assert f"the passes 1.50x (p {st.ttest_1samp(r - np.log(1.5), 0).pvalue:.2g})" in line
    assert "**rejects the passes** and is consistent with the step count" in line
    at_passes = [Pair("relu", s, ref, ctl, 1000, c) for s, c in enumerate((1480, 1530, 1500, 1470))]
    assert "**rejects the step count** and is consistent with the passes" in ratio_line(at_passes)
    spread = [Pair("relu", s, ref, ctl, 1000, c) for s, c in enumerate((700, 1900))]
    assert "**rejects neither**" in ratio_line(spread)
    assert ratio_line([at_steps[0], Pair("relu", 5, ref, ctl, 1000, None)]) is None
