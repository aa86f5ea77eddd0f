"""The FFN variants across model sizes (experiment=scaling_cpu): does the GLU gap grow, shrink or hold with size,
and do the later challengers (ReLU², xIELU) beat SwiGLU at any size?

Per size, the Table 1 statistics (glu_study.reporting.table1): every variant's Δ vs FFN_ReLU paired by seed with
a 95% CI and a one-sided paired t-test, Holm-corrected over all comparisons at that size; each challenger's Δ vs
FFN_SwiGLU the same way (H1: the challenger is lower), Holm over the challengers present. Across sizes, each
variant's advantage over ReLU (its mean over seeds at a size) is regressed on log2 of the non-embedding
parameters, one point per size: its slope is the change per doubling of the model, with a 95% CI (three sizes at
least; two sizes are compared, "larger at X than at Y"). A change across sizes is read as an effect of size only
when the sizes were trained equally far (tokens per parameter within 10%); where a size's FFN_ReLU misses the
regime bar (REGIME_MARGIN under the unigram floor), the reading is given again without that size; where the sizes
repeat the corpus unequally (equal tokens per parameter, one corpus), the reading says so. `write_scaling` writes
scaling.md, runs.csv, scaling.png and gap.png; every sentence of the reading is generated from these numbers.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glu_study.config import MODEL_SIZES
from glu_study.ffn import get_variant
from glu_study.model import param_counts
from glu_study.reporting.figures import plot_gaps, plot_scaling
from glu_study.reporting.records import RunRecord, unigram_floor
from glu_study.reporting.table1 import (
    ALPHA,
    REGIME_MARGIN,
    VariantStats,
    baseline_margin,
    by_variant,
    compute_stats,
    write_runs_csv,
)

BASELINE = "relu"
REFERENCE = "swiglu"  # the GLU variant the challengers are measured against
CHALLENGERS = ("relu2", "reglu2", "xielu", "xieluglu")
GLU = ("geglu", "swiglu", "reglu", "bilinear", "glu")  # the paper's gated variants, whose gap the trend reads


def is_scaling(records: list[RunRecord]) -> bool:
    return len({r.model for r in records}) > 1


@dataclass
class Size:
    model: str
    params: int  # FFN_ReLU's non-embedding parameters at this size (the x axis)
    records: list[RunRecord]
    vs_relu: dict[str, VariantStats]
    vs_swiglu: dict[str, VariantStats]  # challengers only


@dataclass
class Trend:
    ffn: str
    slope: float  # change of the advantage over ReLU (nats) per doubling of non-embedding parameters
    low: float
    high: float
    p: float  # two-sided, slope = 0
    points: int


def sizes(records: list[RunRecord]) -> list[Size]:
    """The per-size statistics, smallest model first."""
    out = []
    for model in sorted({r.model for r in records}):
        recs = [r for r in records if r.model == model]
        present = list(by_variant(recs))
        vs_relu = compute_stats(recs, BASELINE, family=tuple(v for v in present if v != BASELINE))
        challengers = tuple(v for v in CHALLENGERS if v in present)
        vs_swiglu = {}
        if REFERENCE in present and challengers:
            pair = [r for r in recs if r.ffn in (REFERENCE, *challengers)]
            vs_swiglu = {
                v: s for v, s in compute_stats(pair, REFERENCE, family=challengers).items() if v != REFERENCE
            }
        params = min(r.non_embedding_params for r in recs if r.ffn == BASELINE or BASELINE not in present)
        out.append(Size(model, params, recs, vs_relu, vs_swiglu))
    return sorted(out, key=lambda s: s.params)


def variants_of(all_sizes: list[Size]) -> list[str]:
    """Every variant run at any size, in the paper's order then by name."""
    return list(by_variant([r for s in all_sizes for r in s.records]))


def advantages(size: Size, variant: str) -> list[float]:
    """ReLU − variant per seed both ran (positive: the variant is better)."""
    runs = by_variant(size.records)
    if variant not in runs or BASELINE not in runs:
        return []
    common = sorted(set(runs[variant]) & set(runs[BASELINE]))
    return [runs[BASELINE][k].final - runs[variant][k].final for k in common]


def trend(all_sizes: list[Size], variant: str) -> Trend | None:
    """Least-squares slope of the advantage over log2(parameters) at the level of sizes — one point per size
    (its mean over seeds), since the seeds of one size are not independent evidence about size — with its
    t-based 95% CI (n − 2 degrees of freedom). None with fewer than three sizes: two points have no CI."""
    from scipy import stats as st

    points = [(math.log2(s.params), float(np.mean(a))) for s in all_sizes if (a := advantages(s, variant))]
    if len(points) < 3:
        return None
    fit = st.linregress(*zip(*points, strict=True))
    half = st.t.ppf(0.975, len(points) - 2) * fit.stderr
    return Trend(
        variant,
        float(fit.slope),
        float(fit.slope - half),
        float(fit.slope + half),
        float(fit.pvalue),
        len(points),
    )


def two_sizes(small: Size, large: Size, variant: str) -> tuple[float, float | None]:
    """(advantage at the larger size − at the smaller, Welch's two-sided p over their per-seed advantages)."""
    from scipy import stats as st

    a, b = advantages(large, variant), advantages(small, variant)
    p = float(st.ttest_ind(a, b, equal_var=False).pvalue) if min(len(a), len(b)) > 1 else None
    return float(np.mean(a) - np.mean(b)), p


def training_lengths(all_sizes: list[Size]) -> dict[str, float]:
    """Tokens seen per non-embedding parameter at each size (mean over its runs)."""
    return {s.model: float(np.mean([r.tokens_per_param for r in s.records])) for s in all_sizes}


def data_passes(all_sizes: list[Size]) -> dict[str, float]:
    """Passes over the training chunks at each size (mean over its runs), for the sizes whose runs recorded it."""
    return {
        s.model: float(np.mean(e))
        for s in all_sizes
        if (e := [r.data_epochs for r in s.records if r.data_epochs is not None])
    }


def equal_length(all_sizes: list[Size], tolerance: float = 1.1) -> bool:
    """Whether the sizes were trained equally far (tokens per parameter within 10%): only then can a change of
    the gap across them be read as an effect of size rather than of training length."""
    lengths = training_lengths(all_sizes).values()
    return max(lengths) <= tolerance * min(lengths)


def _f(x: float | None, fmt: str = "+.4f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{fmt}}"


def _ci(s: VariantStats) -> str:
    return (
        f"{_f(s.paired_delta)} [{_f(s.ci_low)}, {_f(s.ci_high)}]"
        if s.ci_low is not None
        else _f(s.paired_delta)
    )


def _name(v: str) -> str:
    return get_variant(v).paper_name


# ---------------------------------------------------------------------------------------------------------
# The reading: every sentence generated from the numbers above
# ---------------------------------------------------------------------------------------------------------


def past_floor(all_sizes: list[Size], floor: float | None) -> list[Size]:
    """The sizes whose baseline clears the regime bar: the ones that can say something about FFN variants."""
    if floor is None:
        return all_sizes
    return [
        s for s in all_sizes if (m := baseline_margin(s.records, floor)) is not None and m >= REGIME_MARGIN
    ]


def ran_below_bar(all_sizes: list[Size], passing: list[Size], variant: str) -> bool:
    """Whether the variant has runs at a size whose baseline misses the regime bar (its trend then changes
    when that size is left out)."""
    return any(variant in s.vs_relu for s in all_sizes if s not in passing)


def regime_line(all_sizes: list[Size], floor: float | None) -> str:
    if floor is None:
        return "- Regime: the runs did not record the held-out set's unigram floor."
    margins = [(s.model, m) for s in all_sizes if (m := baseline_margin(s.records, floor)) is not None]
    ok = all(m >= REGIME_MARGIN for _, m in margins)
    parts = [f"{model} {abs(m):.3f} {'under' if m >= 0 else 'above'}" for model, m in margins]
    verdict = (
        f"**every size learns more than token frequencies** (>= {REGIME_MARGIN} under the floor, every seed)"
        if ok
        else f"**not every size is clearly past token frequencies** (needs >= {REGIME_MARGIN}); read those sizes "
        "with care"
    )
    return (
        f"- Regime: the unigram floor of the held-out set is {floor:.4f}; FFN_ReLU's worst seed ends "
        f"{', '.join(parts)} it (nats): {verdict}."
    )


def baseline_line(all_sizes: list[Size]) -> str | None:
    """Does the baseline itself get better with size? What a larger model that ends no better means depends on how
    far each size was trained: at one step budget it is further from convergence; at one tokens-per-parameter
    ratio it simply gains nothing from its width here."""
    means = [
        (s.model, float(np.mean(a)))
        for s in all_sizes
        if (a := [r.final for r in s.records if r.ffn == BASELINE])
    ]
    if len(means) < 2:
        return None
    listed = ", ".join(f"{m} {v:.4f}" for m, v in means)
    if all(b < a for (_, a), (_, b) in zip(means, means[1:], strict=False)):
        return f"- Size: FFN_ReLU's mean improves with every size ({listed}): larger models learn more here."
    line = f"- Size: FFN_ReLU's mean does **not** improve with every size ({listed})."
    if len({r.steps for s in all_sizes for r in s.records}) == 1:
        return line + (
            " Every size trains the same number of steps, so a larger model that ends no better is further from "
            "convergence: a trend below mixes model size with under-training at the larger sizes."
        )
    if equal_length(all_sizes):
        return line + (
            " Every size saw the same tokens per parameter, so the larger model gains nothing from its width at "
            "this training length on this corpus (it also repeats the corpus more: see the training line)."
        )
    return (
        line
        + " The sizes were trained to different lengths, so a trend below mixes size with training length."
    )


def length_line(all_sizes: list[Size]) -> str:
    """How far each size was trained: tokens per non-embedding parameter, steps and, where the runs recorded it,
    passes over the training chunks (equal tokens per parameter on one corpus are unequal passes)."""
    parts, lengths, passes = [], training_lengths(all_sizes), data_passes(all_sizes)
    for s in all_sizes:
        steps = sorted({r.steps for r in s.records})
        part = f"{s.model} {lengths[s.model]:.3g} ({'/'.join(f'{n:,}' for n in steps)} steps"
        known = s.model in passes
        parts.append(part + (f", {passes[s.model]:.2f} passes over the training chunks)" if known else ")"))
    return f"- Training length, tokens seen per non-embedding parameter: {'; '.join(parts)}."


def trend_word(t: Trend) -> str:
    if t.low > 0:
        return "grows"
    if t.high < 0:
        return "shrinks"
    return "holds (no change with size resolved)"


def size_verdict(all_sizes: list[Size], variant: str) -> str | None:
    """What the sizes say about the gap, at equal training length: a slope with its CI from three sizes up,
    "larger at X than at Y" (or not resolved) from two, never a per-doubling trend from two points."""
    present = [s for s in all_sizes if advantages(s, variant)]
    if len(present) == 2:
        small, large = present
        diff, p = two_sizes(small, large, variant)
        resolved = p is not None and p < ALPHA
        bigger, smaller = (large, small) if diff > 0 else (small, large)
        return f"its advantage at {large.model} − at {small.model}: {_f(diff)} (Welch p {_f(p, '.2g')}): " + (
            f"the gap is **larger at {bigger.model} than at {smaller.model}**"
            if resolved
            else f"**not resolved** between {small.model} and {large.model}"
        )
    t = trend(present, variant)
    if t is None:
        return None
    return (
        f"its advantage changes by {_f(t.slope)} nats per doubling of the model [{_f(t.low)}, {_f(t.high)}] "
        f"(p {t.p:.2g}, one point per size, {t.points} sizes): the gap **{trend_word(t)}** with size"
    )


def gap_line(all_sizes: list[Size], variant: str, passing: list[Size]) -> str | None:
    if sum(1 for s in all_sizes if advantages(s, variant)) < 2:
        return None
    per_size = "; ".join(f"{s.model} {_ci(s.vs_relu[variant])}" for s in all_sizes if variant in s.vs_relu)
    line = f"- {_name(variant)} − FFN_ReLU, paired Δ [95% CI] per size: {per_size}."
    if not equal_length(all_sizes):
        lengths = ", ".join(f"{m} {x:.3g}" for m, x in training_lengths(all_sizes).items())
        return line + (
            f" The sizes were trained to different lengths ({lengths} tokens per non-embedding parameter), so "
            "how the gap changes across them mixes model size with training length: **no reading about size**."
        )
    line += f" Across sizes, {size_verdict(all_sizes, variant)}."
    if ran_below_bar(all_sizes, passing, variant) and len(passing) >= 2:
        line += (
            f" Over the sizes past the regime bar only ({', '.join(s.model for s in passing)}): "
            f"{size_verdict(passing, variant)}."
        )
    return line


def challenger_line(all_sizes: list[Size], variant: str) -> str | None:
    rows = [(s.model, s.vs_swiglu[variant]) for s in all_sizes if variant in s.vs_swiglu]
    if not rows:
        return None
    beats = [m for m, s in rows if s.p_holm is not None and s.p_holm < ALPHA]
    lower = [m for m, s in rows if s.paired_delta is not None and s.paired_delta < 0]
    verdict = (
        f"**beats FFN_SwiGLU at {', '.join(beats)}** (Holm p < {ALPHA})"
        if beats
        else f"**lower than FFN_SwiGLU in direction only, at {', '.join(lower)}** (no Holm p < {ALPHA})"
        if lower
        else "**does not beat FFN_SwiGLU at any size**"
    )
    parts = "; ".join(f"{m} {_ci(s)} (Holm p {_f(s.p_holm, '.2g')})" for m, s in rows)
    return f"- {_name(variant)} − FFN_SwiGLU per size: {parts}: {verdict}."


def passes_differ(all_sizes: list[Size], tolerance: float = 1.1) -> dict[str, float] | None:
    """Each size's passes over the training chunks, where they differ by more than 10% (None otherwise, or where
    the runs did not record them): equal tokens per parameter on one corpus repeat it unequally."""
    passes = data_passes(all_sizes)
    if len(passes) < 2 or max(passes.values()) <= tolerance * min(passes.values()):
        return None
    return passes


def scope_line(all_sizes: list[Size], seeds: int) -> str:
    lo, hi = all_sizes[0].params, all_sizes[-1].params
    base = param_counts(MODEL_SIZES["t5_base"], get_variant(BASELINE), vocab_size=32128)[
        "non_embedding_params"
    ]
    what = "A slope" if len(all_sizes) >= 3 else "A difference between the two sizes"
    line = (
        f"- What this can say: {len(all_sizes)} sizes spanning {hi / lo:.1f}x in non-embedding parameters "
        f"({lo:,} to {hi:,}), {seeds} seeds each, one corpus and one recipe (how far each size trained: the "
        f"training line above). {what} here is local to these sizes and these lengths; it does not extrapolate "
        f"to the paper's T5-base ({base:,} non-embedding parameters, {base / hi:.0f}x the largest here) or "
        "beyond, and runs of one seed share batches across sizes, so the sizes are not fully independent evidence."
    )
    if passes := passes_differ(all_sizes):
        listed = ", ".join(f"{m} {e:.2f}" for m, e in passes.items())
        line += (
            f" The sizes also repeat the corpus unequally ({listed} passes), so a difference between them is one "
            "of size and repetition together (experiment=regime_control measures what repetition does at one size)."
        )
    return line


def reading(records: list[RunRecord], all_sizes: list[Size]) -> list[str]:
    floor = unigram_floor(records)
    passing = past_floor(all_sizes, floor)
    lines = [regime_line(all_sizes, floor)]
    lines.append(length_line(all_sizes))
    lines += [x for x in (baseline_line(all_sizes),) if x]
    present = set(variants_of(all_sizes))
    lines += [x for v in GLU if v in present if (x := gap_line(all_sizes, v, passing))]
    lines += [x for v in CHALLENGERS if v in present if (x := challenger_line(all_sizes, v))]
    lines += [x for v in CHALLENGERS if v in present if (x := gap_line(all_sizes, v, passing))]
    lines.append(scope_line(all_sizes, len({r.seed for r in records})))
    return lines


# ---------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------


def size_table(all_sizes: list[Size], floor: float | None) -> str:
    out = io.StringIO()
    out.write(
        "| size | variant | non-embedding params | steps | mean ± std (n) | paired Δ vs ReLU [95% CI] | "
        "p (one-sided) | Holm p |\n|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    for size in all_sizes:
        runs = by_variant(size.records)
        for v, s in size.vs_relu.items():
            r = runs[v][min(runs[v])]
            out.write(
                f"| {size.model} | {_name(v)} | {r.non_embedding_params:,} | {r.steps} | "
                f"{s.mean:.4f} ± {_f(s.std, '.4f')} ({s.n}) | {_ci(s)} | {_f(s.p_paired, '.3g')} | "
                f"{_f(s.p_holm, '.3g')} |\n"
            )
    if floor is not None:
        out.write(f"| *unigram floor* | | | | {floor:.4f} | | | |\n")
    return out.getvalue()


def challenger_table(all_sizes: list[Size]) -> str:
    rows = [(size.model, v, s) for size in all_sizes for v, s in size.vs_swiglu.items()]
    if not rows:
        return ""
    out = io.StringIO()
    out.write(
        "| size | variant | paired Δ vs SwiGLU [95% CI] | p (one-sided) | Holm p |\n|---|---|---:|---:|---:|\n"
    )
    for model, v, s in rows:
        out.write(f"| {model} | {_name(v)} | {_ci(s)} | {_f(s.p_paired, '.3g')} | {_f(s.p_holm, '.3g')} |\n")
    return out.getvalue()


def trend_table(all_sizes: list[Size], keep=lambda v: True) -> str:
    out = io.StringIO()
    out.write(
        "| variant | advantage over ReLU per doubling [95% CI] | p (two-sided) | sizes |\n|---|---:|---:|---:|\n"
    )
    for t in (trend(all_sizes, v) for v in variants_of(all_sizes) if v != BASELINE and keep(v)):
        if t is not None:
            out.write(
                f"| {_name(t.ffn)} | {_f(t.slope)} [{_f(t.low)}, {_f(t.high)}] | {t.p:.3g} | {t.points} |\n"
            )
    return out.getvalue()


def compute_line(all_sizes: list[Size]) -> str:
    """What the sweep cost, from each run's recorded wall time. A run slowed by other work on the machine counts
    as it ran, so the median says what a run takes."""
    per_size = [(s.model, [r.wall_s for r in s.records if r.wall_s is not None]) for s in all_sizes]
    total = sum(sum(w) for _, w in per_size)
    parts = "; ".join(
        f"{m} {sum(w) / 3600:.2f} h, median {np.median(w):.0f} s a run" for m, w in per_size if w
    )
    return f"Compute: {total / 3600:.2f} hours of recorded run wall time in all ({parts})."


def scaling_markdown(records: list[RunRecord], all_sizes: list[Size], title: str) -> str:
    floor = unigram_floor(records)
    plateaus = sorted({r.plateau for r in records if r.plateau is not None})
    out = io.StringIO()
    w = out.write
    w(f"# FFN variants across model sizes: {title}\n\n")
    w(
        f"Held-out log-perplexity (nats per target token) of {len(records)} runs: sizes "
        f"{', '.join(s.model for s in all_sizes)}, seeds {', '.join(map(str, sorted({r.seed for r in records})))}"
        + (f", learning-rate plateau {', '.join(f'{p:g}' for p in plateaus)}" if plateaus else "")
        + ". Runs of one size and seed share batches, masks and initialisation seed, so every Δ is paired by "
        "seed: its 95% CI uses the t distribution, p is a one-sided paired t-test (H1: the variant is lower), and "
        "Holm's correction runs over all comparisons against FFN_ReLU at a size (and, separately, over the "
        "challengers against FFN_SwiGLU).\n\n"
    )
    w(compute_line(all_sizes) + "\n\n")
    w("## Against FFN_ReLU, per size\n\n" + size_table(all_sizes, floor) + "\n")
    if table := challenger_table(all_sizes):
        w("## The challengers against FFN_SwiGLU, per size\n\n" + table + "\n")
    lengths = ", ".join(f"{m} {x:.3g}" for m, x in training_lengths(all_sizes).items())
    w(
        "## Trend with size\n\nEach variant's advantage over FFN_ReLU (ReLU − variant, its mean over seeds at a "
        "size) regressed on log2 of the non-embedding parameters, one point per size: the slope is the change per "
        "doubling (positive: the gap grows in the variant's favour), with a 95% CI from the t distribution "
        "(sizes − 2 degrees of freedom; three sizes at least). Tokens seen per non-embedding parameter: "
        f"{lengths}"
        + (
            "."
            if equal_length(all_sizes)
            else " — **the sizes differ in training length**, so these slopes mix size with training length."
        )
        + "\n\n"
        + (
            trend_table(all_sizes)
            if len(all_sizes) >= 3
            else f"{len(all_sizes)} sizes: no slope (two points have no CI); the reading compares the sizes.\n"
        )
        + "\n"
    )
    w("## Reading\n\n" + "\n".join(reading(records, all_sizes)) + "\n")
    return out.getvalue()


def write_scaling(records: list[RunRecord], out_dir: Path, title: str) -> list[Size]:
    out_dir.mkdir(parents=True, exist_ok=True)
    all_sizes = sizes(records)
    (out_dir / "scaling.md").write_text(scaling_markdown(records, all_sizes, title))
    write_runs_csv(records, out_dir / "runs.csv")
    points = {
        v: [
            (s.params, np.array([r.final for r in s.records if r.ffn == v]))
            for s in all_sizes
            if v in s.vs_relu
        ]
        for v in variants_of(all_sizes)
    }
    plot_scaling(points, out_dir / "scaling.png")
    gaps = {
        v: [(s.params, s.vs_relu[v]) for s in all_sizes if v in s.vs_relu] for v in points if v != BASELINE
    }
    plot_gaps(gaps, out_dir / "gap.png")
    return all_sizes
