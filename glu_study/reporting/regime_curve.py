"""The GLU gap against training length (experiment=regime_curve): one model size, the same recipe, several step
budgets, each its own full schedule.

Per budget, the Table 1 statistics against FFN_ReLU (glu_study.reporting.table1: paired Δ by seed, 95% t CI,
one-sided paired t-test, Holm over the variants present). Along the curve, where the gap *settles*: the first
budget from which no later budget's gap differs from it (Welch's two-sided test on the per-seed gaps; the budgets
are separate runs), read on the budgets whose FFN_ReLU clears the regime bar alone. The paper's own change from its 65k- to its 524k-step column is printed beside ours.
`write_regime_curve` writes regime_curve.md, runs.csv and regime_curve.png.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glu_study.ffn import get_variant
from glu_study.paper import TABLE1
from glu_study.reporting.figures import plot_regime_curve
from glu_study.reporting.records import RunRecord, unigram_floor
from glu_study.reporting.table1 import (
    ALPHA,
    PAPER_TOKENS_PER_PARAM,
    REGIME_MARGIN,
    VariantStats,
    baseline_margin,
    by_variant,
    compute_stats,
    write_runs_csv,
)

BASELINE = "relu"
PAPER_LONG_TOKENS_PER_PARAM = 212.0  # the paper's 524,288-step column


def is_regime_curve(records: list[RunRecord]) -> bool:
    """One model size, several training lengths: the regime curve (not a Table 1, not a scaling study)."""
    return len({r.model for r in records}) == 1 and len({r.steps for r in records}) > 1


@dataclass
class Budget:
    steps: int
    tokens_per_param: float
    records: list[RunRecord]
    vs_relu: dict[str, VariantStats]


def budgets(records: list[RunRecord]) -> list[Budget]:
    out = []
    for steps in sorted({r.steps for r in records}):
        recs = [r for r in records if r.steps == steps]
        family = tuple(v for v in by_variant(recs) if v != BASELINE)
        ratio = float(np.mean([r.tokens_per_param for r in recs]))
        out.append(Budget(steps, ratio, recs, compute_stats(recs, BASELINE, family=family)))
    return out


def gaps(budget: Budget, variant: str) -> list[float]:
    """variant − ReLU per seed both ran at this budget."""
    runs = by_variant(budget.records)
    if variant not in runs or BASELINE not in runs:
        return []
    return [
        runs[variant][k].final - runs[BASELINE][k].final
        for k in sorted(set(runs[variant]) & set(runs[BASELINE]))
    ]


def differs(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """(mean of b − mean of a, Welch's two-sided p)."""
    from scipy import stats as st

    p = float(st.ttest_ind(b, a, equal_var=False).pvalue) if min(len(a), len(b)) > 1 else None
    return float(np.mean(b) - np.mean(a)), p


def past_the_bar(curve: list[Budget], floor: float | None) -> list[Budget]:
    """The budgets whose FFN_ReLU clears the regime bar (every seed >= REGIME_MARGIN under the unigram floor):
    where the gap settles is read on these alone, since a budget whose baseline has barely passed token
    frequencies says little about the variants. Every budget when the floor is not recorded."""
    if floor is None:
        return list(curve)
    return [b for b in curve if (m := baseline_margin(b.records, floor)) is not None and m >= REGIME_MARGIN]


def settles_from(curve: list[Budget], variant: str) -> Budget | None:
    """The first budget whose gap no later budget's gap differs from (Welch p >= ALPHA); None when only the last
    budget qualifies (then the curve has not shown that the gap settles)."""
    for i, b in enumerate(curve[:-1]):
        later = [differs(gaps(b, variant), gaps(c, variant))[1] for c in curve[i + 1 :]]
        if all(p is not None and p >= ALPHA for p in later):
            return b
    return None


def gap_spread(curve: list[Budget], variants: list[str]) -> tuple[float, int] | None:
    """The pooled sd of per-seed gaps over every (budget, variant) with >= 2 seeds, and the fewest seeds a
    budget's gap has (what a comparison of two budgets works with)."""
    samples = [g for b in curve for v in variants if len(g := gaps(b, v)) > 1]
    if not samples:
        return None
    return pooled_sd(samples), min(len(g) for g in samples)


def pooled_sd(samples: list[list[float]]) -> float:
    """sqrt of the mean of the samples' variances (ddof 1)."""
    return float(np.sqrt(np.mean([np.var(g, ddof=1) for g in samples])))


def widest_budget(curve: list[Budget], variants: list[str]) -> tuple[Budget, float]:
    """The budget whose per-seed gaps scatter most (sd pooled over its variants): a pooled sd understates what a
    comparison with it can resolve (e.g. a budget that ends while the runs' loss is still falling steeply)."""
    per_budget = [(b, [g for v in variants if len(g := gaps(b, v)) > 1]) for b in curve]
    return max(((b, pooled_sd(s)) for b, s in per_budget if s), key=lambda bs: bs[1])


def power_line(curve: list[Budget], variants: list[str]) -> str | None:
    """What "settles" can mean with these seeds: the smallest change in gap between two budgets that Welch's test
    would call significant, and the one it would detect with 80% power (equal spreads assumed)."""
    spread = gap_spread(curve, variants)
    if spread is None or spread[0] == 0:
        return None
    from scipy import stats as st
    from statsmodels.stats.power import TTestIndPower

    sd, n = spread
    significant = st.t.ppf(1 - ALPHA / 2, 2 * n - 2) * sd * np.sqrt(2 / n)
    detected = TTestIndPower().solve_power(nobs1=n, alpha=ALPHA, power=0.8, alternative="two-sided") * sd
    widest, widest_sd = widest_budget(curve, variants)
    return (
        f"- What {n} seeds can resolve along the curve: the per-seed gaps scatter with sd {sd:.4f} nats (pooled "
        f"over budgets and variants), so two budgets' gaps must differ by more than {significant:.3f} nats to reach "
        f'p < {ALPHA} and by {detected:.3f} to be found with 80% power. "Settles" means the later changes stay '
        f"below that size, not that the gap is shown constant. The scatter is widest at "
        f"{widest.tokens_per_param:.3g} tokens per parameter (sd {widest_sd:.4f}), so a comparison with that "
        "budget resolves less than this." + paper_change_clause(significant)
    )


def paper_change(variant: str) -> float:
    """The paper's change in `variant` − FFN_ReLU from its 65k-step column to its 524k-step one."""
    return (TABLE1[variant][2] - TABLE1[BASELINE][2]) - (TABLE1[variant][0] - TABLE1[BASELINE][0])


def paper_change_clause(significant: float) -> str:
    change = paper_change("swiglu")
    side = "below" if abs(change) < significant else "above"
    return (
        f" The paper's own FFN_SwiGLU change from 65k to 524k steps ({change:+.3f}) is {side} what these seeds "
        "resolve."
    )


def _f(x: float | None, fmt: str = "+.4f") -> str:
    return "–" if x is None else f"{x:{fmt}}"


def _ci(s: VariantStats) -> str:
    return f"{_f(s.paired_delta)} [{_f(s.ci_low)}, {_f(s.ci_high)}] (Holm p {_f(s.p_holm, '.2g')})"


def curve_line(full_curve: list[Budget], variant: str, floor: float | None = None) -> str:
    name = get_variant(variant).paper_name
    # a sweep still running may lack this variant at some budget: that budget drops out of its curve
    curve = [b for b in full_curve if gaps(b, variant)]
    if len(curve) < 2:
        return f"- {name} − FFN_ReLU: paired at fewer than two training lengths, so no curve yet."
    points = "; ".join(f"{b.tokens_per_param:.3g}: {_f(b.vs_relu[variant].paired_delta)}" for b in curve)
    last, before = curve[-1], curve[-2]
    change, p = differs(gaps(before, variant), gaps(last, variant))
    return (
        f"- {name} − FFN_ReLU along the curve (tokens per parameter: paired Δ): {points}. "
        f"{settle_clause(curve, variant, floor)}. From {before.tokens_per_param:.3g} to "
        f"{last.tokens_per_param:.3g} the gap changes by {_f(change)} (Welch p {_f(p, '.2g')})"
        f"{paper_clause(variant)}."
    )


def settle_clause(curve: list[Budget], variant: str, floor: float | None) -> str:
    """Where the gap settles, read on the budgets past the regime bar."""
    judged = past_the_bar(curve, floor)
    scope = " past the regime bar" if len(judged) < len(curve) else ""
    if len(judged) < 2:
        return "Fewer than two of its budgets are past the regime bar, so **where it settles is not read**"
    start = settles_from(judged, variant)
    if start is None:
        return (
            f"It **does not settle** within the budgets{scope} (a later budget still differs from each earlier "
            "one)"
        )
    return (
        f"It **settles from {start.tokens_per_param:.3g} tokens per parameter** ({start.steps} steps): no later "
        f"budget's gap differs from it (Welch p >= {ALPHA}{'; of the budgets' + scope if scope else ''})"
    )


def paper_clause(variant: str) -> str:
    """The paper's own change in this gap from its 65k-step column to its 524k one, where it has the variant."""
    if variant not in TABLE1:
        return ""
    short = TABLE1[variant][0] - TABLE1[BASELINE][0]
    return (
        f"; the paper's from its 65k-step column (~{PAPER_TOKENS_PER_PARAM:g} tokens per parameter) to its 524k "
        f"(~{PAPER_LONG_TOKENS_PER_PARAM:g}): {short:+.3f} -> {short + paper_change(variant):+.3f}, a change of "
        f"{paper_change(variant):+.3f}"
    )


def regime_line(curve: list[Budget], floor: float | None) -> str:
    if floor is None:
        return "- Regime: the runs did not record the unigram floor of their held-out set."
    parts = [
        f"{b.tokens_per_param:.3g} {m:+.3f}"
        for b in curve
        if (m := baseline_margin(b.records, floor)) is not None
    ]
    below = [f"{b.tokens_per_param:.3g}" for b in curve if b not in past_the_bar(curve, floor)]
    bar = (
        f"Below the regime bar ({REGIME_MARGIN:g} nats under it): {', '.join(below)} tokens per parameter, left out "
        "of where each gap settles (a baseline barely past token frequencies says little about the variants)."
        if below
        else f"Every budget is past the regime bar ({REGIME_MARGIN:g} nats under it)."
    )
    return (
        f"- Regime: unigram floor {floor:.4f}; FFN_ReLU's worst seed under it (nats) at each training length (tokens "
        f"per parameter): {', '.join(parts)}. {bar}"
    )


def regime_curve_markdown(records: list[RunRecord], curve: list[Budget], title: str) -> str:
    floor = unigram_floor(records)
    variants = [v for v in by_variant(records) if v != BASELINE]
    out = io.StringIO()
    w = out.write
    w(f"# The GLU gap against training length: {title}\n\n")
    w(
        f"Test-set log-perplexity (nats per target token) of {len(records)} runs at {records[0].model}, seeds "
        f"{', '.join(map(str, sorted({r.seed for r in records})))}; {len(curve)} training lengths, each its own "
        "full schedule. Every Δ is paired by seed (the same batches, masks and initialisation seed), with a 95% CI "
        "from the t distribution and Holm's correction over the variants at a budget. Scope: seed variance alone, "
        "one fixed test set, one corpus.\n\n"
    )
    w("| steps | tokens per parameter | FFN_ReLU mean ± std (n) | ")
    w(" | ".join(f"{get_variant(v).paper_name} − ReLU [95% CI]" for v in variants) + " |\n")
    w("|---:|---:|---:|" + "---:|" * len(variants) + "\n")
    for b in curve:
        base = b.vs_relu[BASELINE]
        cells = [_ci(b.vs_relu[v]) if v in b.vs_relu else "–" for v in variants]
        spread = _f(base.std if base.n > 1 else None, ".4f")  # one seed so far: no spread
        w(f"| {b.steps} | {b.tokens_per_param:.3g} | {base.mean:.4f} ± {spread} ({base.n}) | ")
        w(" | ".join(cells) + " |\n")
    if floor is not None:
        w(f"| *unigram floor* | | {floor:.4f} |" + " |" * len(variants) + "\n")
    lines = [regime_line(curve, floor), *(curve_line(curve, v, floor) for v in variants)]
    if (power := power_line(curve, variants)) is not None:
        lines.append(power)
    w("\n## Reading\n\n" + "\n".join(lines) + "\n")
    return out.getvalue()


def write_regime_curve(records: list[RunRecord], out_dir: Path, title: str) -> list[Budget]:
    out_dir.mkdir(parents=True, exist_ok=True)
    curve = budgets(records)
    (out_dir / "regime_curve.md").write_text(regime_curve_markdown(records, curve, title))
    write_runs_csv(records, out_dir / "runs.csv")
    points = {
        v: [(b.tokens_per_param, b.vs_relu[v]) for b in curve if v in b.vs_relu]
        for v in by_variant(records)
        if v != BASELINE
    }
    plot_regime_curve(points, PAPER_TOKENS_PER_PARAM, out_dir / "regime_curve.png")
    return curve
