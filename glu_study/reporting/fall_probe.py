"""The fall probe (experiment=fall_probe): where the late fall's drop sits, and whether its step moves with the
learning rate.

At the paper's ratio on CPU the training loss falls late and abruptly (reports/table1_regime), and the final figure
mostly measures when. The probe evaluates one FFN_ReLU seed every 50 steps through the fall, at three plateaus,
and splits the held-out figure into target tokens whose id occurs in the example's visible input (*copyable*) and
the others (*novel*; glu_study.training.heldout). If the fall is the decoder learning to read the encoder around
each sentinel, its drop sits on the copyable tokens.

Where the drop sits, per run that fell (the fall step: glu_study.reporting.falls, read off the training loss):
each class's descent over the fall, the evaluations nearest [fall - W, fall + W] (W = FALL_WINDOW), against its
descent over the same length just before, [fall - 3W, fall - W], both in nats per 100 steps. The difference is the
fall's *excess* descent, per token of the class. The reading names a class when its excess is at least
CLASS_RATIO times the other's in every run that fell; otherwise the drop sits on both.

Whether the fall step moves with the learning rate: a least-squares slope of the fall step on log2(plateau), with
its t interval; a trend is claimed only when that interval excludes 0 (one seed per plateau, so the interval also
carries the fall's own timing noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from glu_study.errors import DataError
from glu_study.ffn import get_variant
from glu_study.reporting.falls import FALL_WINDOW, decay_start, fall_step
from glu_study.reporting.figures import finish, pyplot
from glu_study.reporting.records import RunRecord, check_one_corpus, unigram_floor
from glu_study.reporting.table1 import ALPHA, regime_line

CLASS_RATIO = (
    2.0  # a class carries the drop when its excess descent per token is at least this times the other's
)
FILES = ("fall_probe.md", "fall_probe.png")
CLASSES = ("copyable", "novel", "all")  # all: the paper's metric


@dataclass
class Descent:
    """One class's descent (nats per 100 steps) before the fall and over it, between the evaluations used."""

    before: float
    over: float

    @property
    def excess(self) -> float:
        return self.over - self.before


@dataclass
class ProbeRun:
    run: RunRecord
    fall: int | None
    steps: (
        tuple[int, int, int] | None
    )  # the evaluations used: before-window start, fall-window start, its end
    descent: dict[str, Descent]  # class -> its descent (empty when the run did not fall)

    @property
    def plateau(self) -> float:
        return self.run.plateau


def nearest_at_or_before(curve: list[tuple[int, float]], step: float) -> tuple[int, float] | None:
    points = [p for p in curve if p[0] <= step]
    return points[-1] if points else None


def nearest_at_or_after(curve: list[tuple[int, float]], step: float) -> tuple[int, float] | None:
    points = [p for p in curve if p[0] >= step]
    return points[0] if points else None


def rate(curve: list[tuple[int, float]], lo: int, hi: int) -> float:
    """Descent of a curve between two of its evaluation steps, in nats per 100 steps."""
    values = dict(curve)
    return (values[lo] - values[hi]) / (hi - lo) * 100


def probe_run(run: RunRecord) -> ProbeRun:
    """A run's fall and each class's descent before and over it (the module's docstring)."""
    if not run.copyable_curve:
        raise DataError(
            f"{run.name}: no eval/copyable_log_perplexity in its records (recorded since 2026-12-05)"
        )
    fall = fall_step(run.train_curve, decay_start(run))
    if fall is None:
        return ProbeRun(run, None, None, {})
    start = nearest_at_or_before(run.curve, fall - FALL_WINDOW)
    end = nearest_at_or_after(run.curve, fall + FALL_WINDOW)
    first = nearest_at_or_before(run.curve, 2 * start[0] - end[0]) if start and end else None
    if first is None or first[0] == start[0]:
        return ProbeRun(run, fall, None, {})
    steps = (first[0], start[0], end[0])
    curves = {"copyable": run.copyable_curve, "novel": run.novel_curve, "all": run.curve}
    descent = {
        c: Descent(before=rate(curve, steps[0], steps[1]), over=rate(curve, steps[1], steps[2]))
        for c, curve in curves.items()
    }
    return ProbeRun(run, fall, steps, descent)


def where_the_drop_sits(probes: list[ProbeRun]) -> str:
    """'copyable', 'novel' or 'both', by CLASS_RATIO over every run that fell; None-safe."""
    fell = [p for p in probes if p.descent]
    if not fell:
        return "none"
    for cls, other in (("copyable", "novel"), ("novel", "copyable")):
        if all(
            p.descent[cls].excess > 0 and p.descent[cls].excess >= CLASS_RATIO * p.descent[other].excess
            for p in fell
        ):
            return cls
    return "both"


@dataclass
class Slope:
    per_doubling: float  # fall steps per doubling of the plateau
    low: float
    high: float
    n: int


def fall_slope(probes: list[ProbeRun]) -> Slope | None:
    """Least-squares fall step on log2(plateau), with its t interval (None below three runs that fell at
    distinct plateaus)."""
    fell = [p for p in probes if p.fall is not None]
    if len({p.plateau for p in fell}) < 3:
        return None
    x = np.log2([p.plateau for p in fell])
    y = np.array([p.fall for p in fell], dtype=float)
    fit = stats.linregress(x, y)
    half = stats.t.ppf(1 - ALPHA / 2, len(fell) - 2) * fit.stderr
    return Slope(fit.slope, fit.slope - half, fit.slope + half, len(fell))


def plateau_label(plateau: float) -> str:
    return f"{plateau:.3g}"


def markdown(probes: list[ProbeRun], experiment: str) -> str:
    runs = [p.run for p in probes]
    floor = unigram_floor(runs)
    variants = sorted({get_variant(r.ffn).paper_name for r in runs})
    seeds = sorted({r.seed for r in runs})
    plateaus = sorted({p.plateau for p in probes})
    commits = sorted({(r.code_commit or "unrecorded")[:12] for r in runs})
    lines = [
        f"# The late fall, looked at closely ({experiment})",
        "",
        f"{', '.join(variants)}, seed {', '.join(map(str, seeds))}, {len(probes)} runs at learning-rate plateaus "
        f"{', '.join(plateau_label(p) for p in plateaus)}, evaluated closely from step "
        f"{min(dense_start(p.run) for p in probes):,} on (test and validation sets). "
        "Each held-out figure is split into target tokens whose id occurs in the example's visible input "
        "(*copyable*; sentinels and EOS are among them, as they occur in every input) and the others (*novel*); "
        "the share-weighted mean of the two is the paper's metric. All figures are the test set's.",
        "",
        regime_line(runs, floor),
        f"- Code: {', '.join(commits)}; {', '.join(sorted({str(r.num_threads) for r in runs}))} CPU thread(s) "
        "per run.",
        "",
        "| plateau | steps | fall step | final | copyable share | copyable: before / over the fall | "
        "novel: before / over the fall | paper's metric: before / over the fall | evaluations used |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in probes:
        r = p.run
        cells = [f"{d.before:.3f} / {d.over:.3f}" if (d := p.descent.get(c)) else "–" for c in CLASSES]
        used = " → ".join(f"{s:,}" for s in p.steps) if p.steps else "–"
        fall = f"{p.fall:,}" if p.fall is not None else f"none before the decay (step {decay_start(r):,.0f})"
        share = f"{r.copyable_share:.3f}" if r.copyable_share is not None else "–"
        lines.append(
            f"| {plateau_label(p.plateau)} | {r.steps:,} | {fall} | {r.final:.4f} | {share} | {' | '.join(cells)} | {used} |"
        )
    lines += [
        "",
        "Descents are in nats per 100 steps of held-out log-perplexity, between the evaluations named in the last "
        f"column: the {2 * FALL_WINDOW} steps before the fall window, then the window itself (the fall step "
        f"± {FALL_WINDOW}).",
        "",
        "## Where the drop sits",
        "",
        drop_reading(probes),
        "",
        "## Does the fall step move with the learning rate?",
        "",
        slope_reading(probes),
    ]
    return "\n".join(lines) + "\n"


def drop_reading(probes: list[ProbeRun]) -> str:
    fell = [p for p in probes if p.descent]
    if not fell:
        return (
            "No run fell before the learning-rate decay with evaluations on both sides: nothing to place. "
            f"Over the final decay instead (its start to the end, per 100 steps): {decay_descents(probes)}."
        )
    excess = "; ".join(
        f"plateau {plateau_label(p.plateau)}: {p.descent['copyable'].excess:+.3f} copyable, "
        f"{p.descent['novel'].excess:+.3f} novel"
        for p in fell
    )
    where = where_the_drop_sits(probes)
    verdict = {
        "copyable": "**the drop sits on the copyable tokens**: in every run that fell, their excess descent per "
        f"token is at least {CLASS_RATIO:g}x the novel tokens'",
        "novel": "**the drop sits on the novel tokens**: in every run that fell, their excess descent per token "
        f"is at least {CLASS_RATIO:g}x the copyable tokens'",
        "both": f"**the drop sits on both classes**: neither's excess descent is {CLASS_RATIO:g}x the other's in "
        "every run that fell",
    }[where]
    return f"The fall's excess descent (over the fall minus before it, nats per 100 steps): {excess}. Hence {verdict}."


def decay_descents(probes: list[ProbeRun]) -> str:
    """Each run's descent per class over its final learning-rate decay, in nats per 100 steps."""
    parts = []
    for p in probes:
        start = nearest_at_or_before(p.run.curve, decay_start(p.run))
        if start is None or start[0] == p.run.curve[-1][0]:
            continue
        lo, hi = start[0], p.run.curve[-1][0]
        parts.append(
            f"plateau {plateau_label(p.plateau)}, steps {lo:,}-{hi:,}: copyable "
            f"{rate(p.run.copyable_curve, lo, hi):.3f}, novel {rate(p.run.novel_curve, lo, hi):.3f}"
        )
    return "; ".join(parts)


def slope_reading(probes: list[ProbeRun]) -> str:
    falls = ", ".join(
        f"{p.fall:,} at {plateau_label(p.plateau)}"
        if p.fall is not None
        else f"none at {plateau_label(p.plateau)}"
        for p in probes
    )
    slope = fall_slope(probes)
    if slope is None:
        return f"Fall steps: {falls}. Fewer than three plateaus fell, so no slope is fitted."
    interval = f"{slope.per_doubling:+,.0f} steps per doubling of the plateau, 95% CI [{slope.low:+,.0f}, {slope.high:+,.0f}]"
    if slope.low > 0 or slope.high < 0:
        direction = "later" if slope.per_doubling > 0 else "earlier"
        verdict = f"**the fall comes {direction} at a higher plateau** (the interval excludes 0)"
    else:
        verdict = (
            "**not decidable from these runs**: the interval includes 0 (one seed per plateau; the fall's timing "
            "also moves by 100-150 steps with as little as the CPU thread count)"
        )
    return f"Fall steps: {falls}. A least-squares fit on log2(plateau): {interval} ({slope.n} runs). Hence {verdict}."


def dense_start(run: RunRecord) -> int:
    """The first step of the run's close look: the first evaluation that came less than half the usual interval
    after the one before (step 0 if they are evenly spaced)."""
    steps = [s for s, _ in run.curve]
    gaps = np.diff(steps)
    close = np.flatnonzero(gaps < gaps.max() / 2) if len(gaps) else []
    return int(steps[close[0] + 1]) if len(close) else 0


def plot(probes: list[ProbeRun], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    start = min((p.steps[0] for p in probes if p.steps), default=min(dense_start(p.run) for p in probes))
    panels = (
        ("training loss", lambda r: r.train_curve),
        ("held-out, copyable tokens", lambda r: r.copyable_curve),
        ("held-out, novel tokens", lambda r: r.novel_curve),
    )
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(probes)))
    for ax, (title, curve_of) in zip(axes, panels, strict=True):
        for p, color in zip(probes, colors, strict=True):
            points = [(s, v) for s, v in curve_of(p.run) if s >= start and math.isfinite(v)]
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, color=color, lw=1.2, label=f"plateau {plateau_label(p.plateau)}")
            if p.fall is not None:
                ax.axvline(p.fall, color=color, ls=":", lw=1)
        for decay in sorted({decay_start(p.run) for p in probes}):
            ax.axvline(decay, color="gray", ls="--", lw=0.8)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("nats per target token")
    fig.suptitle("dotted: a run's fall; dashed: its final learning-rate decay starts", fontsize=9, y=1.02)
    finish(fig, axes[-1], path, xlabel="step", ylabel="", title=panels[-1][0])


def write_fall_probe(records: list[RunRecord], out_dir: Path, experiment: str) -> None:
    """fall_probe.md and fall_probe.png of these runs, ordered by plateau."""
    check_one_corpus(records)
    probes = [probe_run(r) for r in sorted(records, key=lambda r: (r.plateau, r.steps, r.seed))]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FILES[0]).write_text(markdown(probes, experiment))
    plot(probes, out_dir / FILES[1])
