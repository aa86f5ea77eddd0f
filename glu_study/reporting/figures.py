"""Report figures (Table 1: curves.png, ranking.png; scaling: scaling.png, gap.png; the regime curve:
regime_curve.png); the one way to save them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from glu_study.ffn import get_variant
from glu_study.paper import TABLE1
from glu_study.reporting.records import RunRecord


def savefig(fig, path: Path) -> None:
    """No timestamp or version in the PNG metadata: the same records give the same bytes."""
    fig.savefig(path, dpi=110, metadata={"Software": None}, bbox_inches="tight")


def pyplot():
    """matplotlib's pyplot on the file-only backend (reports are made on machines without a screen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(fig, ax, path: Path, *, xlabel: str, ylabel: str, title: str, legend: bool = True) -> None:
    """Label, grid, save (byte-stable) and close one report figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    savefig(fig, path)
    pyplot().close(fig)


def plot_curves(records: list[RunRecord], stats: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab10")
    for i, v in enumerate(stats):
        runs = [r for r in records if r.ffn == v]
        steps = sorted(set.intersection(*(set(s for s, _ in r.curve) for r in runs)))
        steps = [s for s in steps if s > 0]  # step 0 (untrained) would flatten the interesting part
        if not steps:
            continue
        vals = np.array([[dict(r.curve)[s] for s in steps] for r in runs])
        mean = vals.mean(0)
        ax.plot(
            steps,
            mean,
            color=cmap(i % 10),
            label=get_variant(v).paper_name,
            linestyle="-" if get_variant(v).is_gated_act else "--",
        )
        if len(runs) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), color=cmap(i % 10), alpha=0.15, linewidth=0)
    finish(
        fig,
        ax,
        path,
        xlabel="training step",
        ylabel="held-out log-perplexity (nats / target token)",
        title="Eval log-perplexity: mean over seeds, band = min..max (dashed: non-gated)",
    )


def plot_ranking(stats: dict, path: Path) -> None:
    plt = pyplot()
    common = [v for v in stats if v in TABLE1]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for v in common:
        s = stats[v]
        ax.errorbar(
            TABLE1[v][0],
            s.mean,
            xerr=TABLE1[v][1],
            yerr=0 if math.isnan(s.std) else s.std,
            fmt="o",
            color="tab:red" if get_variant(v).is_gated_act else "tab:blue",
            capsize=3,
        )
        ax.annotate(
            get_variant(v).paper_name.replace("FFN_", ""),
            (TABLE1[v][0], s.mean),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    finish(
        fig,
        ax,
        path,
        xlabel="paper: log-perplexity at 65,536 steps (± std)",
        ylabel="ours: final log-perplexity (± std over seeds)",
        title="Ours vs paper (red: gated, blue: non-gated)",
        legend=False,
    )


def plot_scaling(points: dict[str, list[tuple[int, np.ndarray]]], path: Path) -> None:
    """Final log-perplexity against non-embedding parameters: {variant: [(params, finals over seeds)]}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab10")
    for i, (v, pts) in enumerate(points.items()):
        x = [p for p, _ in pts]
        style = "-" if get_variant(v).is_gated_act else "--"
        ax.plot(
            x,
            [f.mean() for _, f in pts],
            style,
            marker="o",
            color=cmap(i % 10),
            label=get_variant(v).paper_name,
        )
        if all(len(f) > 1 for _, f in pts):
            ax.fill_between(
                x, [f.min() for _, f in pts], [f.max() for _, f in pts], color=cmap(i % 10), alpha=0.15
            )
    ax.set_xscale("log")
    finish(
        fig,
        ax,
        path,
        xlabel="non-embedding parameters (log scale)",
        ylabel="held-out log-perplexity (nats / target token)",
        title="Final figure vs model size: mean over seeds, band = min..max (dashed: non-gated)",
    )


def plot_gaps(gaps: dict[str, list[tuple[int, object]]], path: Path) -> None:
    """Paired Δ vs FFN_ReLU (with its 95% CI) against size: {variant: [(params, VariantStats)]}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab10")
    for i, (v, pts) in enumerate(gaps.items(), start=1):
        shift = 1 + 0.03 * (i - (len(gaps) + 1) / 2)  # side by side on the log axis
        x = [p * shift for p, _ in pts]
        y = [s.paired_delta for _, s in pts]
        err = [
            [s.paired_delta - s.ci_low if s.ci_low is not None else 0 for _, s in pts],
            [s.ci_high - s.paired_delta if s.ci_high is not None else 0 for _, s in pts],
        ]
        style = "-" if get_variant(v).is_gated_act else "--"
        ax.errorbar(
            x,
            y,
            yerr=err,
            fmt=style,
            marker="o",
            capsize=3,
            color=cmap(i % 10),
            label=get_variant(v).paper_name,
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    finish(
        fig,
        ax,
        path,
        xlabel="non-embedding parameters (log scale)",
        ylabel="paired Δ vs FFN_ReLU (nats; below 0: better)",
        title="Gap to FFN_ReLU by size: mean over seeds, bars = 95% CI (dashed: non-gated)",
    )


def plot_regime_curve(points: dict[str, list[tuple[float, object]]], paper_ratio: float, path: Path) -> None:
    """Paired Δ vs FFN_ReLU against tokens per parameter (log axis), 95% CI bands: {variant: [(ratio, stats)]}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab10")
    for i, (v, pts) in enumerate(points.items(), start=1):
        x = [r for r, _ in pts]
        ax.plot(
            x,
            [s.paired_delta for _, s in pts],
            marker="o",
            color=cmap(i % 10),
            label=get_variant(v).paper_name,
        )
        # a budget whose CI is not yet defined (one seed so far) leaves a gap in the band, not the whole band
        ax.fill_between(
            x,
            [math.nan if s.ci_low is None else s.ci_low for _, s in pts],
            [math.nan if s.ci_high is None else s.ci_high for _, s in pts],
            color=cmap(i % 10),
            alpha=0.15,
            lw=0,
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(paper_ratio, color="grey", lw=0.8, ls=":", label="the paper's 65k-step ratio")
    ax.set_xscale("log")
    ratios = sorted({r for pts in points.values() for r, _ in pts})
    ax.set_xticks(ratios, [f"{r:.3g}" for r in ratios])  # the budgets themselves, in plain numbers
    ax.minorticks_off()
    finish(
        fig,
        ax,
        path,
        xlabel="tokens seen per non-embedding parameter (log scale)",
        ylabel="paired Δ vs FFN_ReLU (nats; below 0: better)",
        title="The gap against training length: mean over seeds, band = 95% CI",
    )
