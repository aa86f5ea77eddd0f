"""Run records as the reports read them: one RunRecord type, read from run directories or from W&B.

A run directory (or a report's copy of one) gives summary.json, metrics.jsonl and its config; the W&B Public API
gives the same figures for runs synced from a cluster. Fine-tune records (finetune/<name>/scores.json) are read
beside them. `copy_raw_records` puts every record a report was computed from next to the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from glu_study.errors import BadInputError, DataError
from glu_study.ffn import VARIANTS, check_variant_config
from glu_study.training import run_dir as records
from glu_study.training.heldout import COPYABLE, NOVEL, TEST_METRIC, VAL_METRIC
from glu_study.training.loop import TRAIN_LOSS

METRIC = TEST_METRIC  # the test set's figure: what every table reports (VAL_METRIC: what choices are made on)
TEST_COPYABLE, TEST_NOVEL = f"eval/{COPYABLE}", f"eval/{NOVEL}"  # the test set's two token classes


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
    unigram_floor: float | None = None  # the held-out set's unigram floor (recorded since the 2026-11 study)
    plateau: float | None = None  # the learning-rate plateau: trainer.lr / sqrt(trainer.warmup_steps)
    # Recorded since the 2026-12 studies (None in older records):
    val_final: float | None = None  # val/log_perplexity at the last step
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_param: float | None = None  # tokens seen per non-embedding parameter: the training regime
    data_epochs: float | None = None  # passes over the training chunks
    corpus_fingerprint: str | None = None  # the corpus's content hash: runs pool only when it is the same
    test_overlap: float | None = None  # share of the test set's 8-token windows that occur in training
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train/loss) every log_every
    decay_fraction: float = 0.0  # the schedule's final linear decay, as a share of the steps (0: none)
    num_threads: int = 0  # trainer.num_threads: torch's CPU threads (0: torch's default, one per core)
    tokenizer_fingerprint: str | None = None  # spiece.model's content hash (recorded since 2026-12-02)
    # Recorded since 2026-12-05 (None / empty in older records):
    study: str | None = None  # the preset's study kind (config `study`)
    code_commit: str | None = None  # the git commit the run ran from (glu_study.code_version)
    code_clean: bool | None = None
    copyable_curve: list[tuple[int, float]] = field(
        default_factory=list
    )  # (step, eval/copyable_log_perplexity)
    novel_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, eval/novel_log_perplexity)
    copyable_share: float | None = None  # eval/copyable_share: the test set's copyable target tokens


def plateau_of(trainer) -> float | None:
    """The rsqrt schedule's plateau, lr x rsqrt(warmup_steps): 0.01 for the paper's recipe."""
    if trainer is None or trainer.get("schedule", "rsqrt") != "rsqrt":
        return None
    return float(trainer["lr"]) / max(int(trainer["warmup_steps"]), 1) ** 0.5


def run_record(
    summary,
    *,
    name,
    ffn,
    seed,
    model,
    group,
    final,
    curve,
    val_curve=(),
    train_curve=(),
    copyable_curve=(),
    novel_curve=(),
    trainer=None,
    study=None,
) -> RunRecord:
    """The record from a run's summary (summary.json or W&B's run.summary) and what is stored elsewhere."""
    ratio = summary.get("tokens_per_param")
    if ratio is None:  # older records: the same ratio from what they did record
        ratio = int(summary["tokens_seen"]) / int(summary["non_embedding_params"])
    val = summary.get(VAL_METRIC)
    return RunRecord(
        name=name,
        ffn=ffn,
        seed=int(seed),
        model=model,
        group=group,
        params=int(summary["params"]),
        non_embedding_params=int(summary["non_embedding_params"]),
        d_ff=int(summary["d_ff"]),
        steps=int(summary["steps"]),
        tokens_seen=int(summary["tokens_seen"]),
        final=float(final),
        tokens_per_s=summary.get("train/tokens_per_s"),
        wall_s=summary.get("wall_s"),
        curve=curve,
        unigram_floor=summary.get("eval/unigram_floor"),
        plateau=plateau_of(trainer),
        val_final=float(val.get("last") if isinstance(val, dict) else val) if val is not None else None,
        val_curve=list(val_curve),
        tokens_per_param=float(ratio),
        data_epochs=summary.get("data_epochs"),
        corpus_fingerprint=summary.get("corpus_fingerprint"),
        test_overlap=summary.get("eval/test_ngram_overlap"),
        train_curve=list(train_curve),
        decay_fraction=float(trainer.get("decay_fraction", 0.0)) if trainer is not None else 0.0,
        num_threads=int(trainer.get("num_threads", 0)) if trainer is not None else 0,
        tokenizer_fingerprint=summary.get("tokenizer_fingerprint"),
        study=study,
        code_commit=summary.get("code_commit"),
        code_clean=summary.get("code_clean"),
        copyable_curve=list(copyable_curve),
        novel_curve=list(novel_curve),
        copyable_share=summary.get("eval/copyable_share"),
    )


def read_run_dir(run_dir: Path) -> RunRecord:
    """The run's record; a damaged file is named (DataError), never skipped."""
    try:
        return _read_run_dir(run_dir)
    except BadInputError:  # e.g. a custom variant whose module this process cannot import: said as it is
        raise
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise DataError(f"{run_dir}: damaged run record ({type(e).__name__}: {e})") from None


def _read_run_dir(run_dir: Path) -> RunRecord:
    s = records.read_summary(run_dir)
    events = records.read_metrics(run_dir)
    cfg = records.load_config(run_dir)
    if cfg is not None and cfg.ffn.name not in VARIANTS:  # a variant defined outside the package: register it
        check_variant_config(cfg.ffn)
    group = cfg.logger.group if cfg is not None else "runs"
    return run_record(
        s,
        name=s["name"],
        ffn=s["ffn"],
        seed=s["seed"],
        model=s["model"],
        group=group,
        final=s[METRIC],
        curve=curve_of(events, METRIC),
        val_curve=curve_of(events, VAL_METRIC),
        train_curve=curve_of(events, TRAIN_LOSS),
        copyable_curve=curve_of(events, TEST_COPYABLE),
        novel_curve=curve_of(events, TEST_NOVEL),
        trainer=cfg.trainer if cfg is not None else None,
        study=cfg.get("study") if cfg is not None else None,
    )


def curve_of(events: list[dict], metric: str) -> list[tuple[int, float]]:
    """(step, value) of the training run's evaluations, one per step: `evaluate` re-checks (with a "source")
    are not part of the curve, and a step evaluated twice (a re-run that re-reported, before 2026-12) counts
    once, its last value."""
    points = {int(r["step"]): float(r[metric]) for r in events if metric in r and "source" not in r}
    return sorted(points.items())


def check_one_corpus(runs: list[RunRecord]) -> None:
    """Runs are pooled only when they saw the same token stream, the same corpus tokenised by the same
    tokenizer: a DataError naming the runs of each (corpus, tokenizer) otherwise. Records from before a
    fingerprint was recorded count as one "unrecorded" corpus or tokenizer."""
    by_corpus: dict[str, list[str]] = {}
    for r in runs:
        key = r.corpus_fingerprint or "unrecorded"
        if r.tokenizer_fingerprint:
            key += f" (tokenizer {r.tokenizer_fingerprint})"
        by_corpus.setdefault(key, []).append(r.name)
    if len(by_corpus) > 1:
        listed = "; ".join(
            f"{fp}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''} ({len(names)} runs)"
            for fp, names in sorted(by_corpus.items())
        )
        raise DataError(
            f"these runs saw different corpora or tokenizers, so they cannot be pooled in one study: {listed}"
        )


def unigram_floor(records: list[RunRecord]) -> float | None:
    """The held-out set's unigram floor, if the runs recorded it (one set per study, so one value)."""
    floors = {round(r.unigram_floor, 6) for r in records if r.unigram_floor is not None}
    return floors.pop() if len(floors) == 1 else None


def find_run_dirs(paths: list[Path], warn=print) -> list[Path]:
    """Run directories (holding summary.json) given as themselves or anywhere below the given paths. Runs that
    have not finished (metrics but no summary.json) are left out, each with a warning."""
    found = []
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such directory")
        found.extend(sorted(q.parent for q in p.rglob(records.SUMMARY)))
        started = {q.parent for q in p.rglob(records.METRICS)}
        for d in sorted(started):
            if not (d / records.SUMMARY).is_file() and d.parent.name != "finetune":
                warn(f"warning: {d} has no {records.SUMMARY} (not finished?); left out of the report")
    if not found:
        raise DataError(f"no finished runs (summary.json) under {', '.join(map(str, paths))}")
    return found


def read_wandb(path: str, group: str | None = None) -> list[RunRecord]:
    """The same records through the W&B Public API (entity/project), e.g. for runs synced from a cluster."""
    import wandb

    out = []
    for run in wandb.Api().runs(path, filters={"group": group} if group else {}):
        if run.state != "finished" or run.job_type not in (None, "pretrain"):  # fine-tunes are not Table 1
            continue
        s, c = run.summary, run.config
        final = s.get(METRIC)
        final = final.get("last") if isinstance(final, dict) else final
        curve, val_curve, train_curve, copyable_curve, novel_curve = (
            [(int(row["_step"]), float(row[m])) for row in run.scan_history(keys=["_step", m])]
            for m in (METRIC, VAL_METRIC, TRAIN_LOSS, TEST_COPYABLE, TEST_NOVEL)
        )
        out.append(
            run_record(
                s,
                name=run.name,
                ffn=c["ffn"]["name"],
                seed=c["seed"],
                model=c["model"]["name"],
                group=run.group,
                final=final,
                curve=curve,
                val_curve=val_curve,
                train_curve=train_curve,
                copyable_curve=copyable_curve,
                novel_curve=novel_curve,
                trainer=c.get("trainer"),
                study=c.get("study"),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------------------
# Fine-tune records
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FinetuneRecord:
    run: str  # the pretraining run's name, e.g. swiglu-s0
    ffn: str
    seed: int
    finetune: str  # the fine-tune's name (its directory)
    tasks: list[str]
    steps: int
    finished: bool
    eval_examples: int
    dev_truncated: bool  # scored only the first eval_examples rows of some dev split
    best: dict[str, dict[str, float]]


def finetune_record(s: dict) -> FinetuneRecord:
    return FinetuneRecord(
        run=s["pretrained"]["name"],
        ffn=s["ffn"],
        seed=int(s["seed"]),
        finetune=s["name"],
        tasks=list(s["tasks"]),
        steps=int(s["steps"]),
        finished=bool(s["finished"]),
        eval_examples=int(s["eval_examples"]),
        dev_truncated=bool(s["dev_truncated"]),
        best=s["best"],
    )


def read_finetunes(run_dirs: list[Path]) -> list[FinetuneRecord]:
    out = []
    for d in run_dirs:
        for f in records.finetune_dirs(d):
            path = f / records.SCORES
            try:
                out.append(finetune_record(json.loads(path.read_text())))
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{path} is not a complete fine-tune record ({e!r})") from None
    return out


def copy_raw_records(run_dirs: list[Path], dest: Path) -> None:
    """summary.json, metrics.jsonl and the resolved config of each run (and of its fine-tunes) beside the
    report, no checkpoints: what `make report` regenerates the report from."""
    for d in run_dirs:
        target = dest / records.read_summary(d)["name"]
        if target.resolve() == d.resolve():
            continue
        records.copy_records(d, target, records.RECORD_FILES)
        for ft in records.finetune_dirs(d):
            records.copy_records(ft, target / "finetune" / ft.name, records.FINETUNE_RECORD_FILES)
