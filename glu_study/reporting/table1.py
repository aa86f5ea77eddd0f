"""Table 1: held-out log-perplexity per variant, its statistics against FFN_ReLU, and a generated reading.

`compute_stats` turns run records into per-variant figures (mean, std, the difference from FFN_ReLU unpaired and
paired by seed); `table1_markdown` writes them beside the paper's Table 1 with a plain-language verdict generated
from the numbers; `write_table1` writes table1.md, runs.csv and the two figures.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from glu_study.ffn import get_variant, paper_order
from glu_study.paper import SOURCE, TABLE1
from glu_study.reporting.falls import decay_start, fall_step
from glu_study.reporting.figures import plot_curves, plot_ranking
from glu_study.reporting.records import METRIC, RunRecord, unigram_floor

# The paper's claim, "GLU variants improve the Transformer", is tested on the four gated variants with a
# non-trivial or identity gate that the paper recommends; GLU (sigmoid), GELU and Swish get CIs and plain p-values.
PRIMARY = ("bilinear", "geglu", "swiglu", "reglu")
ALPHA = 0.05
REGIME_MARGIN = 0.3  # nats under the unigram floor the baseline must reach for the study to say anything
EQUIVALENCE = 0.02  # the paper: GELU and Swish within about this of FFN_ReLU


@dataclass
class VariantStats:
    ffn: str
    n: int
    params: int
    mean: float
    std: float
    rank: int = 0
    # against FFN_ReLU, unpaired (Welch)
    delta: float | None = None  # mean - relu mean
    delta_se: float | None = None  # sqrt(s1^2/n1 + s2^2/n2)
    p_welch: float | None = None  # two-sided
    # against FFN_ReLU, paired by seed (same batches, masks and initialisation seed)
    paired_n: int = 0
    paired_delta: float | None = None  # mean over seeds of (variant - relu)
    paired_sd: float | None = None
    ci_low: float | None = None  # 95% CI of the paired mean, t distribution with n-1 df
    ci_high: float | None = None
    p_paired: float | None = None  # one-sided paired t-test, H1: the variant is lower
    p_holm: float | None = None  # Holm-adjusted over the family (Table 1: PRIMARY; None for the others)


def by_variant(records: list[RunRecord]) -> dict[str, dict[int, RunRecord]]:
    out: dict[str, dict[int, RunRecord]] = {}
    for r in records:
        out.setdefault(r.ffn, {})[r.seed] = r
    return {v: out[v] for v in sorted(out, key=paper_order)}


def compute_stats(
    records: list[RunRecord], baseline: str = "relu", family: tuple[str, ...] = PRIMARY
) -> dict[str, VariantStats]:
    """Per-variant figures and each variant against `baseline`; Holm's correction over the `family` present."""
    runs = by_variant(records)
    out = {}
    for v, seeds in runs.items():
        vals = np.array([seeds[s].final for s in sorted(seeds)])
        std = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        out[v] = VariantStats(v, len(vals), seeds[min(seeds)].params, float(vals.mean()), std)
    for rank, v in enumerate(sorted(out, key=lambda k: out[k].mean), start=1):
        out[v].rank = rank
    if baseline in runs:
        for v in out:
            if v != baseline:
                compare(out[v], runs[v], runs[baseline])
        holm([out[v] for v in family if v in out and out[v].p_paired is not None])
    return out


def compare(s: VariantStats, runs: dict[int, RunRecord], base: dict[int, RunRecord]) -> None:
    """Fill in `s`'s figures against the baseline: Welch on all runs, paired t on the seeds both have."""
    from scipy import stats as st

    vals, ref = np.array([r.final for r in runs.values()]), np.array([r.final for r in base.values()])
    s.delta = float(vals.mean() - ref.mean())
    if len(vals) > 1 and len(ref) > 1:
        s.delta_se = float(math.sqrt(vals.var(ddof=1) / len(vals) + ref.var(ddof=1) / len(ref)))
        s.p_welch = float(st.ttest_ind(vals, ref, equal_var=False).pvalue)
    common = sorted(set(runs) & set(base))
    diffs = np.array([runs[k].final - base[k].final for k in common])
    s.paired_n = len(diffs)
    if len(diffs) == 0:
        return
    s.paired_delta = float(diffs.mean())
    if len(diffs) > 1:
        s.paired_sd = float(diffs.std(ddof=1))
        half = st.t.ppf(0.975, len(diffs) - 1) * s.paired_sd / math.sqrt(len(diffs))
        s.ci_low, s.ci_high = s.paired_delta - half, s.paired_delta + half
        variant, reference = [runs[k].final for k in common], [base[k].final for k in common]
        s.p_paired = float(st.ttest_rel(variant, reference, alternative="less").pvalue)


def holm(family: list[VariantStats]) -> None:
    """Holm's step-down correction over a family of one-sided paired tests (statsmodels' multipletests)."""
    if not family:
        return
    from statsmodels.stats.multitest import multipletests

    adjusted = multipletests([s.p_paired for s in family], alpha=ALPHA, method="holm")[1]
    for s, p in zip(family, adjusted, strict=True):
        s.p_holm = float(p)


def seeds_needed(sd: float, gap: float, alpha: float, power: float = 0.8) -> int:
    """Seeds a one-sided paired t-test needs to detect `gap` at `alpha` with `power`, given the per-seed sd."""
    from statsmodels.stats.power import TTestPower

    return math.ceil(
        TTestPower().solve_power(effect_size=gap / sd, alpha=alpha, power=power, alternative="larger")
    )


def paired_spread(stats: dict[str, VariantStats]) -> float | None:
    """The pooled sd of per-seed differences from FFN_ReLU over every comparison (what seeds must average out)."""
    sds = [s.paired_sd for s in stats.values() if s.paired_sd is not None]
    return float(math.sqrt(np.mean(np.square(sds)))) if sds else None


def paper_ranks(variants: list[str]) -> dict[str, int]:
    ordered = sorted((v for v in variants if v in TABLE1), key=lambda v: TABLE1[v][0])
    return {v: i for i, v in enumerate(ordered, start=1)}


def kendall_tau(stats: dict[str, VariantStats]) -> tuple[float, float, int]:
    from scipy import stats as st

    common = [v for v in stats if v in TABLE1]
    if len(common) < 3:
        return float("nan"), float("nan"), len(common)
    res = st.kendalltau([stats[v].mean for v in common], [TABLE1[v][0] for v in common])
    return float(res.statistic), float(res.pvalue), len(common)


BOOTSTRAP = 2000  # seed resamples; drawn from a fixed generator, so a report regenerates byte for byte
BOOTSTRAP_SEED = 20200212


@dataclass
class Bootstrap:
    """What resampling seeds (with replacement, the same seeds for every variant: the comparison stays paired)
    says about the ranking: each variant's 95% rank interval, how often a set of variants is on top, and an
    interval for Kendall τ with the paper's ranking."""

    rank_low: dict[str, int]
    rank_high: dict[str, int]
    top_two: dict[frozenset, float]  # share of resamples whose two best variants are exactly this pair
    tau_low: float | None
    tau_high: float | None


def seed_bootstrap(records: list[RunRecord]) -> Bootstrap | None:
    """None unless every variant has at least two seeds in common."""
    from scipy import stats as st

    runs = by_variant(records)
    seeds = sorted(set.intersection(*(set(s) for s in runs.values())))
    if len(seeds) < 2 or len(runs) < 3:
        return None
    variants = list(runs)
    finals = np.array([[runs[v][k].final for k in seeds] for v in variants])  # variants x seeds
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picks = rng.integers(0, len(seeds), size=(BOOTSTRAP, len(seeds)))
    means = finals[:, picks].mean(axis=2).T  # resamples x variants
    ranks = means.argsort(axis=1).argsort(axis=1) + 1
    low, high = np.percentile(ranks, [2.5, 97.5], axis=0, method="nearest")
    # The paper's "best two" is a claim about its own variants: the top pair is counted among those alone, so an
    # extra row (FFN_Maxout, a custom FFN) never takes a place in it.
    common = [i for i, v in enumerate(variants) if v in TABLE1]
    pairs: dict[frozenset, float] = {}
    for row in means[:, common].argsort(axis=1)[:, :2] if len(common) >= 2 else []:
        key = frozenset(variants[common[i]] for i in row)
        pairs[key] = pairs.get(key, 0.0) + 1.0 / BOOTSTRAP
    tau_low = tau_high = None
    if len(common) >= 3:
        paper = [TABLE1[variants[i]][0] for i in common]
        taus = [st.kendalltau(m[common], paper).statistic for m in means]
        tau_low, tau_high = (float(x) for x in np.nanpercentile(taus, [2.5, 97.5]))
    return Bootstrap(
        rank_low={v: int(x) for v, x in zip(variants, low, strict=True)},
        rank_high={v: int(x) for v, x in zip(variants, high, strict=True)},
        top_two=pairs,
        tau_low=tau_low,
        tau_high=tau_high,
    )


def paired_p(records: list[RunRecord], better: str, worse: str) -> tuple[float, float | None]:
    """(mean paired difference better − worse, one-sided paired t-test p that `better` is lower)."""
    from scipy import stats as st

    runs = by_variant(records)
    common = sorted(set(runs[better]) & set(runs[worse]))
    a = np.array([runs[better][k].final for k in common])
    b = np.array([runs[worse][k].final for k in common])
    p = float(st.ttest_rel(a, b, alternative="less").pvalue) if len(common) > 1 else None
    return float((a - b).mean()), p


def _f(x, fmt=".4f", sign=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+{fmt}}" if sign else f"{x:{fmt}}"


def _name(v: str) -> str:
    return get_variant(v).paper_name


# ---------------------------------------------------------------------------------------------------------
# The reading: every sentence generated from the numbers above
# ---------------------------------------------------------------------------------------------------------


def baseline_margin(records: list[RunRecord], floor: float) -> float | None:
    """How far FFN_ReLU's worst seed ends under the unigram floor (nats); None without FFN_ReLU runs. The regime
    bar (REGIME_MARGIN) is read on this figure by every report."""
    base = [r.final for r in records if r.ffn == "relu"]
    return floor - max(base) if base else None


PAPER_TOKENS_PER_PARAM = 26.5  # the paper's 65,536-step column: 65,536 x 128 x (512 + 114) / ~198M


def value_range(values: list[float], spec: str) -> str:
    """'low–high' in this format, or one figure when both print the same."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}–{high}"


def training_length(records: list[RunRecord]) -> str:
    """How far into training the runs are, against the paper's 65k-step column."""
    ratios = [r.tokens_per_param for r in records if r.tokens_per_param is not None]
    ratio = value_range(ratios, ".3g")
    epochs = [r.data_epochs for r in records if r.data_epochs is not None]
    overlap = {r.test_overlap for r in records if r.test_overlap is not None}
    return (
        f"{ratio} tokens seen per non-embedding parameter (the paper's 65k-step column: "
        f"~{PAPER_TOKENS_PER_PARAM:g}; {float(np.mean(ratios)) / PAPER_TOKENS_PER_PARAM:.2g}x that)"
        + (f", {max(epochs):.2g} passes over the training chunks" if epochs else "")
        + (
            f"; {100 * overlap.pop():.1f}% of the test set's 8-token windows also occur in the training split "
            "(near-copies across files: a test figure partly measures recall)"
            if len(overlap) == 1
            else ""
        )
    )


def regime_line(records: list[RunRecord], floor: float | None, label: str = "Regime") -> str:
    if floor is None:
        return (
            f"- {label}: these runs did not record the unigram floor of their held-out set, so whether the models "
            "learned more than token frequencies is not shown here."
        )
    margin = baseline_margin(records, floor)
    if margin is None:
        return f"- {label}: unigram floor of the held-out set {floor:.4f}; no FFN_ReLU runs."
    base = [r.final for r in records if r.ffn == "relu"]
    ok = margin >= REGIME_MARGIN
    return (
        f"- {label}: {training_length(records)}. A model that knows only the training split's token frequencies "
        f"scores {floor:.4f} on this held-out set (the unigram floor). FFN_ReLU ends at "
        f"{value_range(base, '.4f')}, at least {margin:.3f} nats under it: "
        + (
            f"**the models learn more than token frequencies** (every seed >= {REGIME_MARGIN} under the floor)."
            if ok
            else f"**not clearly past token frequencies** (needs >= {REGIME_MARGIN} under the floor for every "
            "seed); the comparison below says little about FFN variants."
        )
    )


def claim_line(stats: dict[str, VariantStats]) -> str | None:
    primary = [v for v in PRIMARY if v in stats and stats[v].p_holm is not None]
    if not primary:
        return None
    lower = [v for v in primary if stats[v].paired_delta < 0]
    signif = [v for v in primary if stats[v].p_holm < ALPHA]
    parts = ", ".join(
        f"{_name(v)} {_f(stats[v].paired_delta, '.4f', True)} (Holm p {_f(stats[v].p_holm, '.2g')})"
        for v in primary
    )
    if len(signif) == len(primary):
        verdict = "**Holds.**"
    elif len(lower) == len(primary):
        verdict = "**Holds in direction only.**"
    else:
        verdict = "**Does not hold here**: " + mixed_claim(primary, lower, signif) + "."
    return (
        f"- Paper: the GLU variants beat FFN_ReLU. Here, paired by seed, {len(lower)} of {len(primary)} primary "
        f"comparisons are lower than FFN_ReLU and {len(signif)} significantly after Holm's correction "
        f"(one-sided paired t-test, alpha {ALPHA}): {parts}. {verdict}"
    )


def mixed_claim(primary: list[str], lower: list[str], signif: list[str]) -> str:
    """Which of the primary comparisons the claim holds for, which point its way unresolved, which the other way."""
    groups = (
        (signif, f"it holds for {{}} (Holm p < {ALPHA})"),
        ([v for v in lower if v not in signif], "{} lower but not resolved"),
        ([v for v in primary if v not in lower], "{} not lower than FFN_ReLU"),
    )
    return "; ".join(text.format(", ".join(map(_name, vs))) for vs, text in groups if vs)


def best_two_line(
    records: list[RunRecord], stats: dict[str, VariantStats], boot: Bootstrap | None
) -> str | None:
    """The paper's "GEGLU and SwiGLU are the best two", said only when the data resolve it: our two lowest means
    among the paper's variants (a row without a paper figure is not part of the claim) count as the best two only
    if the 2nd is lower than the 3rd by a paired test (alpha ALPHA)."""
    paper = [v for v in stats if v in TABLE1]
    if not {"geglu", "swiglu"} <= set(paper) or len(paper) < 3:
        return None
    order = sorted(paper, key=lambda v: stats[v].mean)
    top2, third = order[:2], order[2]
    gap, p = paired_p(records, order[1], third)
    resolved = p is not None and p < ALPHA
    hit = {"geglu", "swiglu"} & set(top2)
    share = boot.top_two.get(frozenset(("geglu", "swiglu")), 0.0) if boot else None
    evidence = (
        f"2nd vs 3rd ({_name(order[1])} − {_name(third)}) {gap:+.4f}, paired one-sided p {_f(p, '.2g')}"
        + (f"; GEGLU and SwiGLU are the two best in {100 * share:.0f}% of seed resamples" if boot else "")
    )
    if not resolved:
        verdict = "**Not resolved**: the 2nd and 3rd are not told apart by these seeds."
    else:
        verdict = "**Holds.**" if len(hit) == 2 else "**Partly holds.**" if hit else "**Does not hold here.**"
    return (
        "- Paper: GEGLU and SwiGLU are the best two. Our two lowest means"
        + (" among the paper's variants" if len(paper) < len(stats) else "")
        + f": {', '.join(map(_name, top2))} "
        f"({evidence}). {verdict}"
    )


def equivalence_word(low: float, high: float) -> str:
    """Where a 95% CI lies against the band ±EQUIVALENCE: inside it (within), wholly beyond it (lower or higher
    by more than the band), or across its edge (neither shown)."""
    if -EQUIVALENCE <= low and high <= EQUIVALENCE:
        return "within"
    if high < -EQUIVALENCE:
        return f"lower by more than {EQUIVALENCE}"
    if low > EQUIVALENCE:
        return f"higher by more than {EQUIVALENCE}"
    return "neither within nor beyond shown"


def nongated_line(stats: dict[str, VariantStats]) -> str | None:
    parts = []
    for v in ("gelu", "swish"):
        s = stats.get(v)
        if s is None or s.ci_low is None:
            continue
        parts.append(
            f"{_name(v)} {_f(s.paired_delta, '.4f', True)} [{_f(s.ci_low, '.4f', True)}, {_f(s.ci_high, '.4f', True)}]"
            f" ({equivalence_word(s.ci_low, s.ci_high)})"
        )
    if not parts:
        return None
    return (
        f"- Paper: the non-gated GELU and Swish are within about {EQUIVALENCE} of FFN_ReLU. Here, paired Δ with "
        f"its 95% CI: {'; '.join(parts)}."
    )


def power_line(stats: dict[str, VariantStats], n: int) -> str | None:
    sd = paired_spread(stats)
    if sd is None or n < 2:
        return None
    from scipy import stats as st

    level = ALPHA / len(PRIMARY)  # Holm's first step: the smallest p of the family must beat alpha / 4
    t_needed = st.t.ppf(1 - level, n - 1)
    return (
        f"- What {n} seeds can resolve: with {n - 1} degrees of freedom the smallest primary p-value needs "
        f"t > {t_needed:.2f} (one-sided, alpha {ALPHA}/{len(PRIMARY)}), i.e. a mean gap of "
        f"{t_needed * sd / math.sqrt(n):.3f} nats at the measured spread of per-seed differences (sd {sd:.4f}). "
        f"At that spread, 80% power needs {seeds_needed(sd, 0.05, level)} seeds for a 0.05-nat gap and "
        f"{seeds_needed(sd, 0.01, level)} for a 0.01-nat gap."
    )


PAPER_PLATEAU = 0.01


def rate_line(records: list[RunRecord]) -> str | None:
    plateaus = sorted({r.plateau for r in records if r.plateau is not None})
    if not plateaus or plateaus == [PAPER_PLATEAU]:
        return None
    return (
        f"- Learning rate: plateau {', '.join(f'{p:g}' for p in plateaus)} instead of the paper's {PAPER_PLATEAU:g}, "
        "the same for every variant, chosen on FFN_ReLU alone by the learning-rate check beside this study."
    )


def verdict(
    records: list[RunRecord], stats: dict[str, VariantStats], tau: float, tau_p: float, boot: Bootstrap | None
) -> list[str]:
    """Plain-language reading, generated from the numbers (nothing here is typed by hand)."""
    n = min((s.paired_n for s in stats.values() if s.paired_n), default=0)
    lines = [regime_line(records, unigram_floor(records))]
    if line := rate_line(records):
        lines.append(line)
    lines += [x for x in (claim_line(stats), best_two_line(records, stats, boot), nongated_line(stats)) if x]
    if not math.isnan(tau):
        strength = "strong" if tau >= 0.6 else "moderate" if tau >= 0.3 else "weak" if tau > 0 else "no"
        interval = (
            f", seed-bootstrap 95% interval [{boot.tau_low:.2f}, {boot.tau_high:.2f}]"
            if boot and boot.tau_low is not None
            else ""
        )
        lines.append(
            f"- Ranking agreement with the paper's 65k-step column: Kendall τ = {tau:.3f} (p {tau_p:.2g}"
            f"{interval}), {strength} agreement at the point estimate."
        )
    if line := fall_line(records, stats):
        lines.append(line)
    if line := threads_line(records):
        lines.append(line)
    if line := power_line(stats, n):
        lines.append(line)
    return lines


def threads_line(records: list[RunRecord]) -> str | None:
    """Which seeds ran with which CPU thread count, when that differs between runs (it changes the bits)."""
    if len({r.num_threads for r in records}) < 2:
        return None
    by_seed = {k: {r.num_threads for r in records if r.seed == k} for k in sorted({r.seed for r in records})}
    mixed = [k for k, t in by_seed.items() if len(t) > 1]
    groups: dict[int, list[int]] = {}
    for k, t in by_seed.items():
        if k not in mixed:
            groups.setdefault(min(t), []).append(k)
    said = "; ".join(
        f"{'torch default' if n == 0 else n} thread{'s' if n != 1 else ''}: seed{'s' if len(ks) > 1 else ''} "
        f"{', '.join(map(str, ks))}"
        for n, ks in sorted(groups.items())
    )
    within = (
        f"**seed {', '.join(map(str, mixed))} mixes thread counts**, so its pairs compare runs whose bits differ "
        "for that reason too"
        if mixed
        else "the same within every seed, and every comparison here is paired within a seed"
    )
    return (
        f"- CPU threads differ between runs ({said}; trainer.num_threads, torch's default being one per core): a "
        f"thread count changes a run's floating-point bits, not its recipe, batches or initialisation; {within}."
    )


def fall_line(records: list[RunRecord], stats: dict[str, VariantStats]) -> str | None:
    """When each variant's training loss falls late in training (glu_study.reporting.falls), if any run's does."""
    falls = {r.name: fall_step(r.train_curve, decay_start(r)) for r in records}
    if not any(f is not None for f in falls.values()):
        return None
    parts = []
    for v in stats:
        steps = [falls[r.name] for r in records if r.ffn == v]
        came = [f for f in steps if f is not None]
        where = f"step {float(np.median(came)):,.0f}" if came else "none"
        parts.append(f"{get_variant(v).paper_name} {where} ({len(came)} of {len(steps)} seeds)")
    start = {f"{decay_start(r):,.0f}" for r in records}
    return (
        f"- Late fall of the training loss before the decay (step {', '.join(sorted(start))}; the rule of "
        f"glu_study.reporting.falls), median step over the seeds where it came: {'; '.join(parts)}. "
        "A run whose loss falls earlier has longer to descend before the last evaluation, so at this length the "
        "final figures partly measure when the fall came."
    )


def table1_markdown(records: list[RunRecord], stats: dict[str, VariantStats], title: str) -> str:
    tau, tau_p, n_tau = kendall_tau(stats)
    boot = seed_bootstrap(records)
    pranks = paper_ranks(list(stats))
    steps = sorted({r.steps for r in records})
    models = sorted({r.model for r in records})
    seeds = sorted({r.seed for r in records})
    plateaus = sorted({r.plateau for r in records if r.plateau is not None})
    floor = unigram_floor(records)
    out = io.StringIO()
    w = out.write
    w(f"# Table 1 reproduction: {title}\n\n")
    w(
        f"Held-out log-perplexity (mean cross-entropy in nats per target token on span filling) after "
        f"{', '.join(map(str, steps))} steps, model {', '.join(models)}, seeds {', '.join(map(str, seeds))}"
        + (f", learning-rate plateau {', '.join(f'{p:g}' for p in plateaus)}" if plateaus else "")
        + f"; {len(records)} runs. Paper: {SOURCE}, T5-base on C4 (its absolute values are not comparable with "
        "ours; the ranking and the signs of the differences are).\n\n"
    )
    w(
        "| variant | params | ours: mean ± std (n) | paired Δ vs ReLU [95% CI] | p (paired, one-sided) | "
        "Holm p | Welch Δ ± SE (p) | paper 65k (± std) | paper 524k | our rank [95%] | paper rank |\n"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for v, s in stats.items():
        paper = TABLE1.get(v)
        ci = f"[{_f(s.ci_low, '.4f', True)}, {_f(s.ci_high, '.4f', True)}]" if s.ci_low is not None else ""
        w(
            f"| {_name(v)} | {s.params:,} | {_f(s.mean)} ± {_f(s.std)} ({s.n}) | "
            f"{_f(s.paired_delta, '.4f', True)} {ci} | {_f(s.p_paired, '.3g')} | {_f(s.p_holm, '.3g')} | "
            f"{_f(s.delta, '.4f', True)} ± {_f(s.delta_se)} ({_f(s.p_welch, '.3g')}) | "
            f"{f'{paper[0]:.3f} ± {paper[1]:.3f}' if paper else '–'} | {f'{paper[2]:.3f}' if paper else '–'} | "
            f"{s.rank}{f' [{boot.rank_low[v]}–{boot.rank_high[v]}]' if boot else ''} | {pranks.get(v, '–')} |\n"
        )
    if floor is not None:
        w(f"| *unigram floor* | – | {floor:.4f} | | | | | | | | |\n")
    w(
        f"\nKendall τ between our ranking and the paper's 65k-step ranking ({n_tau} variants): "
        f"{_f(tau, '.3f')} (p = {_f(tau_p, '.3g')}).\n\n"
    )
    w(
        "Paired Δ is the mean over seeds of (variant − FFN_ReLU) for runs that shared a seed, hence the same batches, "
        "masks and initialisation seed; its 95% CI uses the t distribution with n − 1 degrees of freedom, and p is "
        "a one-sided paired t-test (H1: the variant is lower). Holm p corrects the comparisons tested here "
        f"({', '.join(_name(v) for v in holm_family(stats) if v in stats)}: the paper's primary claims and any "
        "variant beyond the paper's eight) for multiple testing; the other rows are uncorrected. Welch Δ is the "
        "unpaired difference of means with its SE and two-sided Welch p. Our rank's interval is the 2.5–97.5% "
        f"range of ranks over {BOOTSTRAP:,} resamples of the seeds (paired across variants). **Scope**: every CI, "
        "p-value and interval here is over seed variance alone — one fixed test set (data.eval_seed), one corpus, "
        "one recipe — so it says how the figures would move with other seeds, not with another test set, corpus "
        "or training length."
        + (
            " The unigram floor is the figure of a model that knows only the training split's token frequencies "
            "(sentinels and EOS free)."
            if floor is not None
            else ""
        )
        + "\n\n"
    )
    w("## Reading\n\n")
    w("\n".join(verdict(records, stats, tau, tau_p, boot)) + "\n")
    return out.getvalue()


def write_runs_csv(records: list[RunRecord], path: Path) -> None:
    cols = [
        "name",
        "ffn",
        "seed",
        "model",
        "group",
        "params",
        "non_embedding_params",
        "d_ff",
        "steps",
        "tokens_seen",
        "final",
        "tokens_per_s",
        "wall_s",
    ]
    with open(path, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow([c if c != "final" else METRIC for c in cols])
        for r in sorted(records, key=lambda r: (r.model, paper_order(r.ffn), r.seed)):
            d = asdict(r)
            wr.writerow([repr(d[c]) if isinstance(d[c], float) else d[c] for c in cols])


def holm_family(variants) -> tuple[str, ...]:
    """What a Table 1 tests against FFN_ReLU with Holm's correction: the paper's four primary claims, and every
    variant beyond the paper's eight (a challenger, e.g. yours from experiment=compare_cpu)."""
    return PRIMARY + tuple(v for v in variants if v not in TABLE1)


def write_table1(records: list[RunRecord], out_dir: Path, title: str) -> dict[str, VariantStats]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = compute_stats(records, family=holm_family({r.ffn for r in records}))
    (out_dir / "table1.md").write_text(table1_markdown(records, stats, title))
    write_runs_csv(records, out_dir / "runs.csv")
    plot_curves(records, stats, out_dir / "curves.png")
    plot_ranking(stats, out_dir / "ranking.png")
    return stats
