"""The learning-rate check beside a study (experiment=table1_cpu_lr): each variant's final held-out figure at each
learning-rate plateau, so a reader can see whether the study's rate favours one family."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from glu_study.ffn import get_variant, paper_order
from glu_study.reporting.figures import finish, pyplot
from glu_study.reporting.records import RunRecord, unigram_floor


def is_lr_check(records: list[RunRecord]) -> bool:
    return len({r.plateau for r in records}) > 1


def mean_finals(records: list[RunRecord]) -> dict[str, dict[float, list[float]]]:
    """variant -> plateau -> final figures (one per seed)."""
    out: dict[str, dict[float, list[float]]] = {}
    for r in sorted(records, key=lambda r: (paper_order(r.ffn), r.plateau, r.seed)):
        out.setdefault(r.ffn, {}).setdefault(r.plateau, []).append(r.final)
    return out


def lr_check_markdown(records: list[RunRecord], title: str, baseline: str = "relu") -> str:
    finals = mean_finals(records)
    plateaus = sorted({r.plateau for r in records})
    variants = list(finals)
    out = io.StringIO()
    w = out.write
    w(f"# Learning-rate check: {title}\n\n")
    w(
        f"Final held-out log-perplexity after {', '.join(map(str, sorted({r.steps for r in records})))} steps at "
        f"each learning-rate plateau (lr x rsqrt(max(step, warmup))), mean over seeds "
        f"{', '.join(map(str, sorted({r.seed for r in records})))}; {len(records)} runs."
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
    w("\n## Reading\n\n" + "\n".join(lr_reading(finals, baseline)) + "\n")
    return out.getvalue()


def lr_reading(finals: dict[str, dict[float, list[float]]], baseline: str) -> list[str]:
    lines = []
    for v, by_p in finals.items():
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
                + (" — the same sign at every rate" if same_sign else " — the sign depends on the rate")
                + f"; its size depends on the rate: largest at plateau {widest:g}, smallest at {narrowest:g}."
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
        ylabel="final held-out log-perplexity",
        title="Learning-rate check (mean over seeds)",
    )


def write_lr_check(records: list[RunRecord], out_dir: Path, title: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = lr_check_markdown(records, title)
    (out_dir / "lr_check.md").write_text(text)
    plot_lr_check(records, out_dir / "lr_check.png")
    return text
