"""Tables 2-4 (fine-tuned dev scores) from the fine-tune records under pretraining run directories.

`python -m glu_study.report` uses this whenever a run directory holds finetune/<name>/scores.json: it writes
table2.md (GLUE average, SuperGLUE average, SQuAD EM/F1 per variant beside the paper's figures, then Tables 2, 3
and 4 with the paper's per-task columns) and finetune.csv (one row per run, task and metric).

A pretraining run may have several fine-tunes (say `rte` alone and the `all` mixture). A task's score is taken from
the fine-tune that covers the most tasks (the paper's protocol is the full mixture), ties broken by name, so the
choice never depends on which score is higher.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from glu_study.ffn import get_variant, paper_order
from glu_study.finetuning.metrics import benchmark_averages
from glu_study.finetuning.tasks import BENCHMARKS
from glu_study.paper import FINETUNE, RAFFEL_2019, SOURCE
from glu_study.reporting.records import FinetuneRecord

COLUMNS = ("glue_avg", "superglue_avg", "squad_em", "squad_f1")
# The paper's per-task columns (Tables 2-4): (task, metric, header). WNLI (not in the paper) only when scored.
PAPER_COLUMNS = {
    "glue": [
        ("cola", "matthews_corrcoef", "CoLA MCC"),
        ("sst2", "accuracy", "SST-2 Acc"),
        ("mrpc", "f1", "MRPC F1"),
        ("mrpc", "accuracy", "MRPC Acc"),
        ("stsb", "pearson", "STS-B PCC"),
        ("stsb", "spearman", "STS-B SCC"),
        ("qqp", "f1", "QQP F1"),
        ("qqp", "accuracy", "QQP Acc"),
        ("mnli", "accuracy_matched", "MNLI-m Acc"),
        ("mnli", "accuracy_mismatched", "MNLI-mm Acc"),
        ("qnli", "accuracy", "QNLI Acc"),
        ("rte", "accuracy", "RTE Acc"),
        ("wnli", "accuracy", "WNLI Acc"),
    ],
    "superglue": [
        ("boolq", "accuracy", "BoolQ Acc"),
        ("cb", "f1_macro", "CB F1"),
        ("cb", "accuracy", "CB Acc"),
        ("copa", "accuracy", "CoPA Acc"),
        ("multirc", "f1a", "MultiRC F1a"),
        ("multirc", "em", "MultiRC EM"),
        ("record", "f1", "ReCoRD F1"),
        ("record", "em", "ReCoRD EM"),
        ("superglue_rte", "accuracy", "RTE Acc"),
        ("wic", "accuracy", "WiC Acc"),
        ("wsc", "accuracy", "WSC Acc"),
    ],
    "squad": [("squad", "em", "EM"), ("squad", "f1", "F1")],
}
HEADERS = ("GLUE avg", "SuperGLUE avg", "SQuAD EM", "SQuAD F1")


def merged_scores(records: list[FinetuneRecord]) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """(ffn, seed) -> task -> best metrics, each task from the widest fine-tune of that pretraining run."""
    out: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for r in sorted(records, key=lambda r: (-len(r.tasks), r.finetune)):
        tasks = out.setdefault((r.ffn, r.seed), {})
        for name, metrics in r.best.items():
            tasks.setdefault(name, metrics)
    return out


def _scored(merged: dict, task: str) -> bool:
    return any(task in m for m in merged.values())


def _mean_std(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.2f} (1)"
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f} ({len(vals)})"


def table2_markdown(records: list[FinetuneRecord], title: str) -> str:
    merged = merged_scores(records)
    ffns = sorted({f for f, _ in merged}, key=paper_order)
    averages = {key: benchmark_averages(tasks) for key, tasks in merged.items()}
    out = io.StringIO()
    w = out.write
    steps = sorted({r.steps for r in records})
    w(f"# Tables 2-4 reproduction: {title}\n\n")
    w(
        f"Dev-set scores after fine-tuning ({len(records)} fine-tunes of {len(merged)} pretrained runs, "
        f"{', '.join(map(str, steps))} fine-tuning steps), best evaluation per task as in the paper; ours: "
        f"mean ± std over pretraining seeds (n). An average is shown only when every task of its benchmark was "
        f"scored (GLUE without WNLI, MNLI = mean of matched and mismatched). Paper: {SOURCE}, T5-base after "
        "524,288 pretraining steps.\n\n"
    )
    partial = [r for r in records if r.dev_truncated or not r.finished]
    if partial:
        w(
            f"**Not comparable with the paper:** {len(partial)} fine-tune(s) scored only part of a dev split "
            "(`finetune.eval_examples`) or did not finish.\n\n"
        )
    w("| variant | " + " | ".join(f"{h} (ours) | {h} (paper)" for h in HEADERS) + " |\n")
    w("|---|" + "---:|" * (2 * len(HEADERS)) + "\n")
    for v in ffns:
        avgs = [a for (f, _), a in averages.items() if f == v]
        paper = FINETUNE.get(v)
        cells = []
        for i, col in enumerate(COLUMNS):
            cells.append(_mean_std([a[col] for a in avgs if a[col] is not None]))
            cells.append(f"{paper[i]:.2f}" if paper else "–")
        w(f"| {get_variant(v).paper_name} | " + " | ".join(cells) + " |\n")
    w("| T5 (Raffel et al. 2019) | " + " | ".join(f"– | {x:.2f}" for x in RAFFEL_2019) + " |\n")

    for bench, heading in (
        ("glue", "Table 2: GLUE"),
        ("superglue", "Table 3: SuperGLUE"),
        ("squad", "Table 4: SQuAD"),
    ):
        columns = [
            c for c in PAPER_COLUMNS[bench] if bench != "glue" or c[0] != "wnli" or _scored(merged, "wnli")
        ]
        if not any(_scored(merged, task) for task, _, _ in columns):
            continue
        avg = [] if bench == "squad" else [f"{bench}_avg"]
        w(f"\n## {heading} (dev)\n\n")
        w("| variant | " + " | ".join(["Score avg"] * len(avg) + [h for _, _, h in columns]) + " |\n")
        w("|---|" + "---:|" * (len(avg) + len(columns)) + "\n")
        for v in ffns:
            runs = [m for (f, _), m in merged.items() if f == v]
            avgs = [a for (f, _), a in averages.items() if f == v]
            cells = [_mean_std([x[a] for x in avgs if x[a] is not None]) for a in avg]
            cells += [_mean_std([m[t][k] for m in runs if t in m]) for t, k, _ in columns]
            w(f"| {get_variant(v).paper_name} | " + " | ".join(cells) + " |\n")
        missing = [t for t in BENCHMARKS[bench] if not _scored(merged, t)]
        if missing and bench != "squad":
            w(f"\nNo score for {', '.join(missing)}, so no {heading.split(': ')[1]} average.\n")
    return out.getvalue()


def write_finetune_csv(records: list[FinetuneRecord], path: Path) -> None:
    with open(path, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(
            ["run", "ffn", "seed", "finetune", "steps", "eval_examples", "task", "metric", "value", "step"]
        )
        for r in sorted(records, key=lambda r: (paper_order(r.ffn), r.seed, r.finetune)):
            for task, metrics in r.best.items():
                for k, v in metrics.items():
                    if k != "step":
                        row = [r.run, r.ffn, r.seed, r.finetune, r.steps, r.eval_examples, task, k, repr(v)]
                        wr.writerow([*row, metrics["step"]])


def write_finetune_report(records: list[FinetuneRecord], out_dir: Path, title: str) -> str:
    table = table2_markdown(records, title)
    (out_dir / "table2.md").write_text(table)
    write_finetune_csv(records, out_dir / "finetune.csv")
    return table
