"""The fall probe's report: where a fall's drop sits, by token class, and whether the fall step moves with the
learning rate (glu_study.reporting.fall_probe)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from glu_study.config import compose
from glu_study.reporting.fall_probe import (
    CLASS_RATIO,
    Descent,
    ProbeRun,
    fall_slope,
    probe_run,
    where_the_drop_sits,
)
from glu_study.reporting.records import RunRecord, read_run_dir
from tests.helpers import ROOT, preset_sweep


def synthetic_run(fall: int, lr: float, copyable_drop: float, novel_drop: float) -> RunRecord:
    """A 2,340-step run whose training loss falls by 0.4 nats at `fall` and whose held-out classes descend
    0.001 nats a step, plus a step down of the given size over the fall."""
    train = [(s, 4.0 - 0.0002 * s - (0.4 if s >= fall else 0.0)) for s in range(10, 2341, 10)]
    steps = [*range(0, 1200, 234), *range(1200, 2341, 50)]

    def held(base: float, drop: float) -> list[tuple[int, float]]:
        return [(s, base - 0.001 * s - (drop if s >= fall else 0.0)) for s in steps]

    run = RunRecord(f"relu-lr{lr}-s1", "relu", 1, "t5_nano", "fall_probe", 1, 1, 1, 2340, 9, 3.0, None, None)
    run.curve, run.train_curve = held(4.0, 0.0), train
    run.copyable_curve, run.novel_curve = held(3.5, copyable_drop), held(4.5, novel_drop)
    run.plateau, run.decay_fraction, run.copyable_share = lr / 100, 0.1, 0.5
    return run


def test_a_drop_on_copyable_tokens_is_placed_there():
    probe = probe_run(synthetic_run(1700, 3.0, copyable_drop=0.3, novel_drop=0.02))
    assert probe.fall is not None and abs(probe.fall - 1700) <= 100
    first, start, end = probe.steps
    assert start <= probe.fall - 100 < start + 50 and end - 50 < probe.fall + 100 <= end
    assert end - start == start - first  # windows of equal length
    before, over = probe.descent["copyable"].before, probe.descent["copyable"].over
    assert before == pytest.approx(0.1)  # the background descent, 0.001 nats a step
    assert over == pytest.approx(0.1 + 0.3 / (end - start) * 100)
    assert where_the_drop_sits([probe]) == "copyable"


@pytest.mark.parametrize(
    ("copyable", "novel", "where"),
    [
        ((0.3, 0.2), (0.05, 0.05), "copyable"),
        ((0.05, 0.05), (0.3, 0.2), "novel"),
        ((0.3, 0.1), (0.05, 0.1), "both"),
    ],
)
def test_a_class_carries_the_drop_only_when_it_does_so_in_every_run(copyable, novel, where):
    probes = [
        ProbeRun(None, 1700, (1300, 1600, 1800), {"copyable": Descent(0.0, c), "novel": Descent(0.0, n)})
        for c, n in zip(copyable, novel, strict=True)
    ]
    assert CLASS_RATIO == 2.0
    assert where_the_drop_sits(probes) == where


def test_the_fall_slope_is_a_t_interval_on_log2_plateau():
    runs = [synthetic_run(f, lr, 0.3, 0.0) for f, lr in ((1800, 2.0), (1700, 3.0), (1500, 4.5))]
    probes = [probe_run(r) for r in runs]
    slope = fall_slope(probes)
    x, y = np.log2([p.plateau for p in probes]), [p.fall for p in probes]
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, 1) * fit.stderr
    assert (slope.per_doubling, slope.low, slope.high) == pytest.approx(
        (fit.slope, fit.slope - half, fit.slope + half)
    )
    assert fall_slope(probes[:2]) is None  # two plateaus: no slope


@pytest.mark.parametrize("study", ["fall_probe", "fall_probe_long"])
def test_committed_fall_probe_classes_add_up_to_the_papers_metric(study):
    """A committed probe's records: at every evaluation the share-weighted classes give the paper's metric, every
    run comes from one clean commit, and the study holds every cell of its preset."""
    runs = ROOT / "reports" / study / "runs"
    if not runs.is_dir():
        pytest.skip(f"reports/{study} not committed yet")
    commits = set()
    for d in sorted(runs.iterdir()):
        summary = json.loads((d / "summary.json").read_text())
        commits.add((summary["code_commit"], summary["code_clean"]))
        for line in (d / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            if "eval/copyable_share" in r:
                s = r["eval/copyable_share"]
                whole = s * r["eval/copyable_log_perplexity"] + (1 - s) * r["eval/novel_log_perplexity"]
                assert whole == pytest.approx(r["eval/log_perplexity"], rel=1e-9)
        record = read_run_dir(d)
        assert record.study == "fall_probe" and record.num_threads == 1
        dense = [s for s, _ in record.copyable_curve if s >= 1200]
        assert dense[:3] == [1200, 1250, 1300]
    assert len(commits) == 1 and next(iter(commits))[1] is True
    # every cell of its preset, trained by it
    preset, params = compose([f"experiment={study}"]), preset_sweep(study)
    recorded = [read_run_dir(d) for d in sorted(runs.iterdir())]
    assert params == {"seed": ["1"], "ffn": ["relu"], "trainer.lr": ["2.0", "3.0", "4.5"]}  # 3 jobs, no more
    assert sorted(r.plateau for r in recorded) == sorted(float(lr) / 100 for lr in params["trainer.lr"])
    assert {(r.ffn, r.seed, r.steps) for r in recorded} == {("relu", preset.seed, preset.trainer.max_steps)}
