"""Turn pretraining runs into the paper's Table 1, beside the paper's figures.

    python -m glu_study.report runs/table1_cpu                     # a sweep directory (or several run dirs)
    python -m glu_study.report --wandb ENTITY/PROJECT --group table1_cpu

writes reports/<experiment>/: table1.md, runs.csv, curves.png, ranking.png, and runs/<name>/ with the raw records
every number was computed from (summary.json, metrics.jsonl, config.yaml), so `make report` can regenerate the
same files from what is committed. Runs with fine-tune records (finetune/<name>/scores.json) add table2.md and
finetune.csv: Tables 2-4 (glu_study.report_finetune), their records copied beside the others. Local directories
and the W&B Public API are two readers of one record type.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from glu_study.ffn import get_variant, paper_order
from glu_study.paper import SOURCE, TABLE1
from glu_study.report_finetune import finetune_dirs, read_finetunes, write_finetune_report

ROOT = Path(__file__).resolve().parent.parent
METRIC = "eval/log_perplexity"


@dataclass
class RunRecord:
    name: str
    ffn: str
    seed: int
    model: str
    group: str
    params: int
    non_embedding_params: int
    d_ff: int
    steps: int
    tokens_seen: int
    final: float  # eval/log_perplexity at the last step
    tokens_per_s: float | None
    wall_s: float | None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, eval/log_perplexity)


# ---------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------


def _group_of(run_dir: Path) -> str:
    import yaml

    for cfg_path in (run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml"):
        if cfg_path.is_file():
            return yaml.safe_load(cfg_path.read_text())["logger"]["group"]
    return "runs"


def read_run_dir(run_dir: Path) -> RunRecord:
    s = json.loads((run_dir / "summary.json").read_text())
    curve = []
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if METRIC in r and "source" not in r:  # `evaluate` re-checks are not part of the curve
                curve.append((int(r["step"]), float(r[METRIC])))
    return RunRecord(
        name=s["name"],
        ffn=s["ffn"],
        seed=int(s["seed"]),
        model=s["model"],
        group=_group_of(run_dir),
        params=int(s["params"]),
        non_embedding_params=int(s["non_embedding_params"]),
        d_ff=int(s["d_ff"]),
        steps=int(s["steps"]),
        tokens_seen=int(s["tokens_seen"]),
        final=float(s[METRIC]),
        tokens_per_s=s.get("train/tokens_per_s"),
        wall_s=s.get("wall_s"),
        curve=curve,
    )


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories (holding summary.json) given as themselves or anywhere below the given paths."""
    found = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such directory")
        found.extend(
            [p] if (p / "summary.json").is_file() else sorted(q.parent for q in p.rglob("summary.json"))
        )
    if not found:
        raise FileNotFoundError(f"no finished runs (summary.json) under {', '.join(map(str, paths))}")
    return found


def read_wandb(path: str, group: str | None = None) -> list[RunRecord]:
    """The same records through the W&B Public API (entity/project), e.g. for runs synced from a cluster."""
    import wandb

    api = wandb.Api()
    filters = {"group": group} if group else {}
    records = []
    for run in api.runs(path, filters=filters):
        if run.state != "finished" or run.job_type not in (None, "pretrain"):  # fine-tunes are not Table 1
            continue
        s, c = run.summary, run.config
        final = s.get(METRIC)
        final = final.get("last") if isinstance(final, dict) else final
        curve = [(int(row["_step"]), float(row[METRIC])) for row in run.scan_history(keys=["_step", METRIC])]
        records.append(
            RunRecord(
                name=run.name,
                ffn=c["ffn"]["name"],
                seed=int(c["seed"]),
                model=c["model"]["name"],
                group=run.group,
                params=int(s["params"]),
                non_embedding_params=int(s["non_embedding_params"]),
                d_ff=int(s["d_ff"]),
                steps=int(s["steps"]),
                tokens_seen=int(s["tokens_seen"]),
                final=float(final),
                tokens_per_s=s.get("train/tokens_per_s"),
                wall_s=s.get("wall_s"),
                curve=curve,
            )
        )
    return records


# ---------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------


@dataclass
class VariantStats:
    ffn: str
    n: int
    params: int
    mean: float
    std: float
    delta: float | None = None  # mean - relu mean
    delta_se: float | None = None  # unpaired: sqrt(s1^2/n1 + s2^2/n2)
    p_welch: float | None = None
    paired_delta: float | None = None  # mean over seeds of (variant - relu) with the same seed
    paired_se: float | None = None
    paired_n: int = 0
    rank: int = 0


def compute_stats(records: list[RunRecord], baseline: str = "relu") -> dict[str, VariantStats]:
    from scipy import stats as st

    by_ffn: dict[str, dict[int, RunRecord]] = {}
    for r in records:
        by_ffn.setdefault(r.ffn, {})[r.seed] = r
    order = sorted(by_ffn, key=paper_order)
    out: dict[str, VariantStats] = {}
    for v in order:
        vals = np.array([by_ffn[v][s].final for s in sorted(by_ffn[v])])
        out[v] = VariantStats(
            ffn=v,
            n=len(vals),
            params=by_ffn[v][min(by_ffn[v])].params,
            mean=float(vals.mean()),
            std=float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
        )
    if baseline in by_ffn:
        base = np.array([by_ffn[baseline][s].final for s in sorted(by_ffn[baseline])])
        for v, s in out.items():
            if v == baseline:
                continue
            vals = np.array([by_ffn[v][k].final for k in sorted(by_ffn[v])])
            s.delta = s.mean - out[baseline].mean
            if len(vals) > 1 and len(base) > 1:
                s.delta_se = float(math.sqrt(vals.var(ddof=1) / len(vals) + base.var(ddof=1) / len(base)))
                s.p_welch = float(st.ttest_ind(vals, base, equal_var=False).pvalue)
            common = sorted(set(by_ffn[v]) & set(by_ffn[baseline]))
            if common:
                diffs = np.array([by_ffn[v][k].final - by_ffn[baseline][k].final for k in common])
                s.paired_delta, s.paired_n = float(diffs.mean()), len(diffs)
                s.paired_se = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else None
    for rank, v in enumerate(sorted(out, key=lambda k: out[k].mean), start=1):
        out[v].rank = rank
    return out


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


# ---------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------


def _f(x, fmt=".4f", sign=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+{fmt}}" if sign else f"{x:{fmt}}"


def verdict(stats: dict[str, VariantStats], tau: float, tau_p: float, alpha: float = 0.05) -> list[str]:
    """Plain-language reading, generated from the numbers (nothing here is typed by hand)."""
    lines = []
    gated = [v for v in stats if v in TABLE1 and get_variant(v).gated]
    if "relu" in stats and gated:
        better = [v for v in gated if stats[v].delta is not None and stats[v].delta < 0]
        signif = [v for v in better if stats[v].p_welch is not None and stats[v].p_welch < alpha]
        lines.append(
            f"- Paper: every GLU variant beats FFN_ReLU. Here {len(better)} of {len(gated)} gated variants have a "
            f"lower mean than FFN_ReLU ({', '.join(better) or 'none'}), {len(signif)} of them significantly "
            f"(Welch p < {alpha}: {', '.join(signif) or 'none'})."
            + (
                " **Holds.**"
                if len(signif) == len(gated)
                else " **Holds in direction only.**"
                if len(better) == len(gated)
                else " **Does not hold here.**"
            )
        )
    paper_best = {"geglu", "swiglu"}
    if paper_best <= set(stats):
        ours_top2 = sorted(stats, key=lambda v: stats[v].mean)[:2]
        hit = paper_best & set(ours_top2)
        lines.append(
            f"- Paper: GEGLU and SwiGLU are the best two. Our best two: {', '.join(ours_top2)}."
            + (
                " **Holds.**"
                if len(hit) == 2
                else " **Partly holds.**"
                if hit
                else " **Does not hold here.**"
            )
        )
    nongated = [v for v in ("gelu", "swish") if v in stats and stats[v].delta is not None]
    if nongated:
        parts = [f"{v} {_f(stats[v].delta, '.4f', True)} (p {_f(stats[v].p_welch, '.2g')})" for v in nongated]
        lines.append(
            "- Paper: the non-gated GELU and Swish are within about 0.015 of FFN_ReLU at 65k steps. Here: "
            + "; ".join(parts)
            + "."
        )
    if not math.isnan(tau):
        strength = "strong" if tau >= 0.6 else "moderate" if tau >= 0.3 else "weak" if tau > 0 else "no"
        lines.append(
            f"- Ranking agreement with the paper's 65k-step column: Kendall τ = {tau:.3f} (p {tau_p:.2g}), "
            f"{strength} agreement."
        )
    return lines


def table1_markdown(records: list[RunRecord], stats: dict[str, VariantStats], title: str) -> str:
    tau, tau_p, n_tau = kendall_tau(stats)
    pranks = paper_ranks(list(stats))
    steps = sorted({r.steps for r in records})
    models = sorted({r.model for r in records})
    seeds = sorted({r.seed for r in records})
    out = io.StringIO()
    w = out.write
    w(f"# Table 1 reproduction: {title}\n\n")
    w(
        f"Held-out log-perplexity (mean cross-entropy in nats per target token on span filling) after "
        f"{', '.join(map(str, steps))} steps, model {', '.join(models)}, seeds {', '.join(map(str, seeds))}; "
        f"{len(records)} runs. Paper: {SOURCE}, T5-base on C4 (its absolute values are not comparable with ours; "
        "the ranking and the signs of the differences are).\n\n"
    )
    w(
        "| variant | params | ours: mean ± std (n) | Δ vs ReLU ± SE | Welch p | paired Δ ± SE | "
        "paper 65k (± std) | paper 524k | our rank | paper rank |\n"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for v, s in stats.items():
        paper = TABLE1.get(v)
        w(
            f"| {get_variant(v).paper_name} | {s.params:,} | {_f(s.mean)} ± {_f(s.std)} ({s.n}) | "
            f"{_f(s.delta, '.4f', True)} ± {_f(s.delta_se)} | {_f(s.p_welch, '.3g')} | "
            f"{_f(s.paired_delta, '.4f', True)} ± {_f(s.paired_se)} | "
            f"{f'{paper[0]:.3f} ± {paper[1]:.3f}' if paper else '–'} | {f'{paper[2]:.3f}' if paper else '–'} | "
            f"{s.rank} | {pranks.get(v, '–')} |\n"
        )
    w(
        f"\nKendall τ between our ranking and the paper's 65k-step ranking ({n_tau} variants): "
        f"{_f(tau, '.3f')} (p = {_f(tau_p, '.3g')}).\n\n"
    )
    w(
        "Δ vs ReLU is unpaired (difference of means, SE from both sample variances, Welch's t-test); paired Δ is the "
        "mean over seeds of (variant − ReLU) for runs that shared a seed, hence the same batches and masks and the "
        "same initialisation seed.\n\n"
    )
    w("## Reading\n\n")
    w("\n".join(verdict(stats, tau, tau_p)) + "\n")
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
        for r in sorted(
            records,
            key=lambda r: (paper_order(r.ffn), r.seed),
        ):
            d = asdict(r)
            wr.writerow([repr(d[c]) if isinstance(d[c], float) else d[c] for c in cols])


def _savefig(fig, path: Path) -> None:
    # No timestamp or version in the PNG metadata: the same records give the same bytes.
    fig.savefig(path, dpi=110, metadata={"Software": None}, bbox_inches="tight")


def plot_curves(records: list[RunRecord], stats: dict[str, VariantStats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            linestyle="-" if get_variant(v).gated else "--",
        )
        if len(runs) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), color=cmap(i % 10), alpha=0.15, linewidth=0)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out log-perplexity (nats / target token)")
    ax.set_title("Eval log-perplexity: mean over seeds, band = min..max (dashed: non-gated)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _savefig(fig, path)
    plt.close(fig)


def plot_ranking(stats: dict[str, VariantStats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            color="tab:red" if get_variant(v).gated else "tab:blue",
            capsize=3,
        )
        ax.annotate(
            get_variant(v).paper_name.replace("FFN_", ""),
            (TABLE1[v][0], s.mean),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("paper: log-perplexity at 65,536 steps (± std)")
    ax.set_ylabel("ours: final log-perplexity (± std over seeds)")
    ax.set_title("Ours vs paper (red: gated, blue: non-gated)")
    ax.grid(alpha=0.3)
    _savefig(fig, path)
    plt.close(fig)


def copy_raw_records(run_dirs: list[Path], dest: Path) -> None:
    """summary.json, metrics.jsonl and the resolved config of each run, beside the report (no checkpoints)."""
    for d in run_dirs:
        name = json.loads((d / "summary.json").read_text())["name"]
        target = dest / name
        if target.resolve() == d.resolve():
            continue
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d / "summary.json", target / "summary.json")
        shutil.copyfile(d / "metrics.jsonl", target / "metrics.jsonl")
        cfg = d / ".hydra" / "config.yaml" if (d / ".hydra" / "config.yaml").is_file() else d / "config.yaml"
        if cfg.is_file():
            shutil.copyfile(cfg, target / "config.yaml")
        for ft in finetune_dirs(d):  # fine-tune records: scores.json, metrics.jsonl, config.yaml
            (target / "finetune" / ft.name).mkdir(parents=True, exist_ok=True)
            for f in ("scores.json", "metrics.jsonl", "config.yaml"):
                if (ft / f).is_file():
                    shutil.copyfile(ft / f, target / "finetune" / ft.name / f)


def write_report(records: list[RunRecord], out_dir: Path, title: str) -> dict[str, VariantStats]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = compute_stats(records)
    (out_dir / "table1.md").write_text(table1_markdown(records, stats, title))
    write_runs_csv(records, out_dir / "runs.csv")
    plot_curves(records, stats, out_dir / "curves.png")
    plot_ranking(stats, out_dir / "ranking.png")
    return stats


def update_readme(readme: Path, experiment: str, table_md: str) -> None:
    """Replace the text between `<!-- <experiment>:begin -->` and `<!-- <experiment>:end -->` in the README with
    the generated table and reading, so the README shows the committed study without a hand-typed number."""
    begin, end = f"<!-- {experiment}:begin -->", f"<!-- {experiment}:end -->"
    text = readme.read_text()
    if begin not in text or end not in text:
        raise KeyError(f"{readme} has no {begin} ... {end} markers")
    body = table_md.split("\n", 2)[2]  # drop the "# Table 1 reproduction" heading
    head, rest = text.split(begin, 1)
    readme.write_text(f"{head}{begin}\n{body.rstrip()}\n{end}{rest.split(end, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m glu_study.report", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="*", type=Path, help="run directories or sweep directories")
    p.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="read the runs through the W&B Public API instead"
    )
    p.add_argument("--group", help="W&B group (experiment) to read; default: all finished runs")
    p.add_argument("--out", type=Path, help="output directory (default: reports/<experiment>)")
    p.add_argument(
        "--readme", type=Path, help="also refresh this README's <!-- <experiment>:begin/end --> section"
    )
    args = p.parse_args(argv)
    try:
        if args.wandb:
            records, run_dirs = read_wandb(args.wandb, args.group), []
        else:
            if not args.dirs:
                p.error("give run directories, or --wandb ENTITY/PROJECT")
            run_dirs = find_run_dirs(args.dirs)
            records = [read_run_dir(d) for d in run_dirs]
        finetunes = read_finetunes(run_dirs)  # read everything before writing anything
    except (FileNotFoundError, KeyError, ValueError) as e:  # ValueError covers json.JSONDecodeError
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not records:
        print("error: no finished runs found", file=sys.stderr)
        return 2
    groups = sorted({r.group for r in records})
    experiment = groups[0] if len(groups) == 1 else "mixed"
    out_dir = args.out or ROOT / "reports" / experiment
    if run_dirs:
        copy_raw_records(run_dirs, out_dir / "runs")
    stats = write_report(records, out_dir, experiment)
    table_md = (out_dir / "table1.md").read_text()
    if args.readme:
        try:
            update_readme(args.readme, experiment, table_md)
        except KeyError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(table_md)
    print(
        f"wrote {out_dir}/table1.md, runs.csv, curves.png, ranking.png ({len(records)} runs, {len(stats)} variants)"
    )
    if finetunes:  # Tables 2-4 whenever fine-tune records exist
        print(write_finetune_report(finetunes, out_dir, experiment))
        print(f"wrote {out_dir}/table2.md, finetune.csv ({len(finetunes)} fine-tunes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
