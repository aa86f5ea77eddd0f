"""The learning-rate check beside a study (experiment=table1_cpu_lr, table1_regime_lr): each variant's final
figure at each learning-rate plateau, the baseline's pick, and whether the grid brackets it, so a reader can see
whether the study's rate is a fair one and whether it favours one family.

The choice is made on the validation set (val/log_perplexity, the mean over seeds) — never on the test set the
study reports. Records from before the validation set existed can only be read on the test set; the report says
so instead of hiding it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from glu_study.ffn import get_variant, paper_order
from glu_study.reporting.figures import finish, pyplot
from glu_study.reporting.records import RunRecord, unigram_floor
from glu_study.reporting.table1 import regime_line, value_range


def is_lr_check(records: list[RunRecord]) -> bool:
    return len({r.plateau for r in records}) > 1


def choice_basis(records: list[RunRecord]) -> str:
    """ "validation" when every run recorded the validation figure, else "test" (older records)."""
    return "validation" if all(r.val_final is not None for r in records) else "test"


def mean_finals(records: list[RunRecord]) -> dict[str, dict[float, list[float]]]:
    """variant -> plateau -> final figures on the choice basis (one per seed)."""
    basis = choice_basis(records)
    out: dict[str, dict[float, list[float]]] = {}
    for r in sorted(records, key=lambda r: (paper_order(r.ffn), r.plateau, r.seed)):
        value = r.val_final if basis == "validation" else r.final
        out.setdefault(r.ffn, {}).setdefault(r.plateau, []).append(value)
    return out


def lr_check_markdown(records: list[RunRecord], title: str, baseline: str = "relu") -> str:
    finals = mean_finals(records)
    plateaus = sorted({r.plateau for r in records})
    variants = list(finals)
    basis = choice_basis(records)
    out = io.StringIO()
    w = out.write
    w(f"# Learning-rate check: {title}\n\n")
    w(
        f"Final {basis}-set log-perplexity after {', '.join(map(str, sorted({r.steps for r in records})))} steps "
        f"at each learning-rate plateau (lr x rsqrt(max(step, warmup))), mean over seeds "
        f"{', '.join(map(str, sorted({r.seed for r in records})))}; {len(records)} runs; "
        f"{regime_phrase(records)}."
    )
    floor = unigram_floor(records)
    if floor is not None:
        w(f" Unigram floor of the held-out set (a model that knows only token frequencies): {floor:.4f}.")
    w("\n\n")
    others = [v for v in variants if v != baseline]
    w("| plateau | " + " | ".join(get_variant(v).paper_name for v in variants))
    w("".join(f" | Δ {get_variant(v).paper_name} − ReLU" for v in others if baseline in finals) + " |\n")
    w("|---:|" + "---:|" * (len(variants) + (len(others) if baseline in finals else 0)) + "\n")
    for p in plateaus:
        means = {v: np.mean(finals[v][p]) if p in finals[v] else None for v in variants}
        cells = [f"{m:.4f}" if m is not None else "–" for m in means.values()]
        if baseline in finals:
            cells += [
                f"{means[v] - means[baseline]:+.4f}" if None not in (means[v], means[baseline]) else "–"
                for v in others
            ]
        w(f"| {p:g} | " + " | ".join(cells) + " |\n")
    lines = [*pick_lines(finals, baseline, basis), *lr_reading(finals, baseline)]
    if baseline in finals:  # the rate the study trains at must put its baseline clearly under the floor
        best, _ = baseline_pick(finals, baseline)
        at_pick = [r for r in records if r.plateau == best]
        lines.append(regime_line(at_pick, floor, label=f"Regime at the pick (test set, plateau {best:g})"))
    w("\n## Reading\n\n" + "\n".join(lines) + "\n")
    return out.getvalue()


def regime_phrase(records: list[RunRecord]) -> str:
    ratios = [r.tokens_per_param for r in records if r.tokens_per_param is not None]
    # variants differ in parameters by < 0.5%: usually one figure
    return f"{value_range(ratios, '.3g')} tokens seen per non-embedding parameter"


def baseline_pick(finals: dict[str, dict[float, list[float]]], baseline: str) -> tuple[float, bool]:
    """The baseline's plateau with the lowest mean figure, and whether it is interior (a tested plateau on each
    side of it)."""
    by_p = finals[baseline]
    best = min(by_p, key=lambda p: np.mean(by_p[p]))
    ordered = sorted(by_p)
    return best, ordered[0] < best < ordered[-1]


def pick_lines(finals: dict[str, dict[float, list[float]]], baseline: str, basis: str) -> list[str]:
    if baseline not in finals:
        return []
    best, interior = baseline_pick(finals, baseline)
    seeds = len(finals[baseline][best])
    where = (
        "interior: the grid brackets it, so the optimum is not beyond the tested rates"
        if interior
        else "**at the edge of the grid**: the optimum may lie beyond it, so the grid must be extended before "
        "this rate is used"
    )
    lines = [
        f"- **Pick: plateau {best:g}**, FFN_ReLU's {basis}-set argmin (mean over {seeds} seed"
        f"{'s' if seeds > 1 else ''}: {np.mean(finals[baseline][best]):.4f}); {where}. FFN_ReLU alone decides; "
        "every variant is then trained at it."
    ]
    if basis == "test":
        lines.append(
            "- These records predate the validation set: the rate was chosen on the test set the study reports, "
            "which later studies never do (their checks choose on `val/log_perplexity`)."
        )
    return lines


def lr_reading(finals: dict[str, dict[float, list[float]]], baseline: str) -> list[str]:
    lines = []
    for v, by_p in finals.items():
        if v == baseline:
            continue
        best = min(by_p, key=lambda p: np.mean(by_p[p]))
        lines.append(
            f"- {get_variant(v).paper_name}: best plateau {best:g} (mean {np.mean(by_p[best]):.4f})."
        )
    if baseline in finals:
        for v in (v for v in finals if v != baseline):
            common = sorted(set(finals[v]) & set(finals[baseline]))
            gaps = [np.mean(finals[v][p]) - np.mean(finals[baseline][p]) for p in common]
            same_sign = all(g < 0 for g in gaps) or all(g > 0 for g in gaps)
            widest, narrowest = common[int(np.argmax(np.abs(gaps)))], common[int(np.argmin(np.abs(gaps)))]
            lines.append(
                f"- {get_variant(v).paper_name} − FFN_ReLU at every plateau: "
                + ", ".join(f"{g:+.4f}" for g in gaps)
                + (" — the same sign at every rate" if same_sign else " — the sign differs between rates")
                + f"; in these means (no test across rates) it is largest at plateau {widest:g}, smallest at "
                f"{narrowest:g}."
            )
    return lines


def plot_lr_check(records: list[RunRecord], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for v, by_p in mean_finals(records).items():
        ps = sorted(by_p)
        ax.plot(ps, [np.mean(by_p[p]) for p in ps], marker="o", label=get_variant(v).paper_name)
    ax.set_xscale("log")
    plateaus = sorted({r.plateau for r in records})
    ax.minorticks_off()
    ax.set_xticks(plateaus, [f"{p:g}" for p in plateaus])  # the tested rates, not the log axis' decades
    finish(
        fig,
        ax,
        path,
        xlabel="learning-rate plateau",
        ylabel=f"final {choice_basis(records)}-set log-perplexity",
        title="Learning-rate check (mean over seeds)",
    )


def write_lr_check(records: list[RunRecord], out_dir: Path, title: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = lr_check_markdown(records, title)
    (out_dir / "lr_check.md").write_text(text)
    plot_lr_check(records, out_dir / "lr_check.png")
    return text
