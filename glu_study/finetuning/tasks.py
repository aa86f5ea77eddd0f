"""The fine-tuning tasks of Tables 2-4 (GLUE, SuperGLUE, SQuAD), cast to text-to-text exactly as T5 does.

Read top to bottom: the task registry (hub name, splits, the columns we need, label words, metrics), the
text-to-text casting (T5's `t5.data.preprocessors.glue/stsb/record/wsc_simple/squad`), and the loaders (one
`datasets.load_dataset` call per split, from the hub or from local files with the same schema). Scoring is in
glu_study.finetuning.metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex

from glu_study.errors import DataError, UnknownTaskError
from glu_study.network import reachable


@dataclass(frozen=True)
class Task:
    name: str  # ours (and the W&B / record key); SuperGLUE's RTE is `superglue_rte`
    benchmark: str  # glue | superglue | squad
    hub: tuple[str, str | None]  # (dataset path, config name) for `datasets.load_dataset`
    prefix: str  # T5's benchmark name, the first word of every input
    features: tuple[str, ...]  # input fields, in T5's order ("<field>: <value>" after the prefix)
    labels: tuple[str, ...] = ()  # the label words a class id turns into (T5: TFDS label_classes)
    eval_splits: tuple[str, ...] = ("validation",)
    kind: str = "classify"  # classify | regress | record | wsc | squad
    metrics: tuple[str, ...] = ("accuracy",)

    @property
    def columns(self) -> tuple[str, ...]:
        """What a split must have: the input fields and the answer."""
        answer = {"squad": ("answers",), "record": ("answers",), "wsc": ("span1_text", "label")}
        return tuple(dict.fromkeys((*self.features, *answer.get(self.kind, ("label",)))))


_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")
_BOOL = ("False", "True")


def _glue(name, features, labels, **kw) -> Task:
    return Task(name, "glue", ("nyu-mll/glue", name), name, features, labels, **kw)


def _sglue(name, features, labels=(), *, config=None, **kw) -> Task:
    """SuperGLUE; `config` is the hub config (and T5's prefix) where it differs from our name."""
    config = config or name
    return Task(name, "superglue", ("aps/super_glue", config), config, features, labels, **kw)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _glue("cola", ("sentence",), ("unacceptable", "acceptable"), metrics=("matthews_corrcoef",)),
        _glue("sst2", ("sentence",), ("negative", "positive")),
        _glue(
            "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), metrics=("f1", "accuracy")
        ),
        _glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), metrics=("f1", "accuracy")),
        _glue("stsb", ("sentence1", "sentence2"), (), kind="regress", metrics=("pearson", "spearman")),
        _glue(
            "mnli",
            ("hypothesis", "premise"),
            _NLI3,
            eval_splits=("validation_matched", "validation_mismatched"),
        ),
        _glue("qnli", ("question", "sentence"), _NLI2),
        _glue("rte", ("sentence1", "sentence2"), _NLI2),
        _glue("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
        _sglue("boolq", ("passage", "question"), _BOOL),
        _sglue(
            "cb",
            ("hypothesis", "premise"),
            ("entailment", "contradiction", "neutral"),
            metrics=("f1_macro", "accuracy"),
        ),
        _sglue("copa", ("choice1", "choice2", "premise", "question"), ("choice1", "choice2")),
        _sglue("multirc", ("question", "answer", "paragraph"), _BOOL, metrics=("f1a", "em")),
        _sglue("record", ("query", "entities", "passage"), kind="record", metrics=("em", "f1")),
        _sglue("superglue_rte", ("hypothesis", "premise"), _NLI2, config="rte"),
        _sglue("wic", ("sentence1", "sentence2", "word"), _BOOL),
        _sglue("wsc", ("text", "span1_text", "span2_index", "span2_text"), kind="wsc", config="wsc.fixed"),
        Task(
            "squad",
            "squad",
            ("rajpurkar/squad", None),
            "",
            ("question", "context"),
            kind="squad",
            metrics=("em", "f1"),
        ),
    ]
}

BENCHMARKS = {
    "glue": [t for t in TASKS if TASKS[t].benchmark == "glue" and t != "wnli"],
    "superglue": [t for t in TASKS if TASKS[t].benchmark == "superglue"],
    "squad": ["squad"],
}
# `task=` takes one task or a mixture; `all` is the paper's GLUE + SuperGLUE + SQuAD mixture.
MIXTURES = {**BENCHMARKS, "all": [*BENCHMARKS["glue"], *BENCHMARKS["superglue"], "squad"]}


def resolve_tasks(spec: str) -> list[Task]:
    """`rte` -> [rte]; `glue` -> the GLUE tasks; `cola+squad` -> both. Unknown names list the valid ones."""
    names: list[str] = []
    for part in str(spec).split("+"):
        part = part.strip()
        if part in MIXTURES:
            names.extend(MIXTURES[part])
        elif part in TASKS:
            names.append(part)
        else:
            raise UnknownTaskError(
                f"unknown task {part!r}; tasks: {', '.join(TASKS)}; mixtures: {', '.join(MIXTURES)} "
                "(join several with '+')"
            )
    return [TASKS[n] for n in dict.fromkeys(names)]


# ---------------------------------------------------------------------------------------------------------
# Text-to-text, as T5 (t5/data/preprocessors.py)
# ---------------------------------------------------------------------------------------------------------


def pad_punctuation(text: str) -> str:
    """T5's `_pad_punctuation` for SQuAD: spaces around every character that is not a letter, digit or mark."""
    text = regex.sub(r"([^_\s\p{N}\p{L}\p{M}])", r" \1 ", str(text))
    return regex.sub(r"\s+", " ", text).strip()


def _fields(task: Task, row: dict) -> str:
    parts = [task.prefix]
    for key in task.features:
        value = row[key]
        if task.name == "multirc" and key == "paragraph":  # T5 strips MultiRC's HTML markup
            value = regex.sub(r"<(/)?b>", "", regex.sub(r"<br>", " ", value))
        parts += [f"{key}:", str(value)]
    return " ".join(parts)


def _record_inputs(row: dict) -> str:
    passage = regex.sub(r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ", row["passage"])
    passage = regex.sub(r"\n@highlight\n", ". ", passage)
    return f"record query: {row['query']} entities: {', '.join(row['entities'])} passage: {passage}"


def _wsc_inputs(row: dict) -> str:
    """T5's `wsc_simple`: the pronoun (span2) marked with asterisks, in place."""
    words = row["text"].split(" ")
    i = int(row["span2_index"])
    if not 0 <= i < len(words):
        raise DataError(f"wsc: span2_index {i} outside the text ({len(words)} words)")
    words[i] = f"*{row['span2_text']}*" + words[i][len(row["span2_text"]) :]  # keep trailing punctuation
    return "wsc: " + " ".join(words)


def text_to_text(task: Task, row: dict, *, for_training: bool) -> list[tuple[str, str]]:
    """(inputs, target) pairs of one dataset row; ReCoRD trains on one pair per answer, WSC only on rows whose
    span1 *is* the pronoun's referent (T5's correct_referent_only). Evaluation uses the first pair."""
    if task.kind == "squad":
        q, c = pad_punctuation(row["question"]), pad_punctuation(row["context"])
        answers = [pad_punctuation(a) for a in row["answers"]["text"]] or ["<unk>"]
        return [(f"question: {q} context: {c}", answers[0])]
    if task.kind == "record":
        inputs = _record_inputs(row)
        answers = list(row["answers"]) or ["<unk>"]
        return [(inputs, a) for a in (answers if for_training else answers[:1])]
    if task.kind == "wsc":
        if for_training and not int(row["label"]):
            return []
        return [(_wsc_inputs(row), row["span1_text"])]
    inputs = _fields(task, row)
    if task.kind == "regress":  # STS-B: the score rounded to steps of 0.2, one decimal
        return [(inputs, f"{round(float(row['label']) * 5) / 5:.1f}")]
    label = int(row["label"])
    return [(inputs, task.labels[label] if label >= 0 else "<unk>")]


# ---------------------------------------------------------------------------------------------------------
# Loading: canonical hub names, or local files with the same schema (same code path)
# ---------------------------------------------------------------------------------------------------------

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


LOCAL_COPIES = (
    "give data_dir=DIR with local copies (README: Fine-tuning), or set HF_DATASETS_OFFLINE=1 to use the cache"
)
HUB_TIMEOUT_S = 5.0


def check_hub(data_dir) -> None:
    """Without data_dir= the tasks come from the hub: refuse at once, not after minutes of retries, when it cannot
    be reached (unless datasets is told to work offline from its cache)."""
    import os

    from huggingface_hub.constants import ENDPOINT

    offline = any(
        os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    if data_dir is None and not offline and not reachable(ENDPOINT, HUB_TIMEOUT_S):
        raise DataError(
            f"the Hugging Face hub ({ENDPOINT}) is not reachable within {HUB_TIMEOUT_S:g} s; {LOCAL_COPIES}"
        )


def load_split(
    task: Task, split: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None
):
    """One split as a `datasets.Dataset`, from the hub, or from <data_dir>/<task>/<split>.<ext> when given;
    `datasets` keeps its cache (and the tokenised maps derived from it) under `cache_dir`."""
    import datasets

    if data_dir is not None:
        found = [
            p for p in (Path(data_dir) / task.name / f"{split}{ext}" for ext in _BUILDERS) if p.is_file()
        ]
        if not found:
            raise DataError(
                f"{task.name}: no {split} split in {Path(data_dir) / task.name} "
                f"(expected {split}.jsonl, .json, .parquet or .csv)"
            )
        path = found[0]
        try:
            ds = datasets.load_dataset(
                _BUILDERS[path.suffix], data_files={split: str(path)}, split=split, cache_dir=cache_dir
            )
        except Exception as e:  # a malformed file: say which, not a traceback from the builder
            raise DataError(f"{task.name} {split}: cannot read {path}: {e}") from e
        source = str(path)
    else:
        source = "/".join(x for x in task.hub if x)
        try:
            ds = datasets.load_dataset(task.hub[0], task.hub[1], split=split, cache_dir=cache_dir)
        except (OSError, ValueError) as e:  # no network and no cached copy, in the hub libraries' many ways
            raise DataError(
                f"{task.name} {split}: cannot load {source} ({type(e).__name__}); {LOCAL_COPIES}"
            ) from e
    check_schema(task, ds, f"{task.name} {split} ({source})")
    return ds


def check_schema(task: Task, ds, where: str) -> None:
    missing = [c for c in task.columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{where}: unexpected schema, missing {', '.join(missing)}; "
            f"expected {', '.join(task.columns)}, found {', '.join(ds.column_names)}"
        )
    if len(ds) == 0:
        raise DataError(f"{where}: no rows")
    if task.kind == "classify":
        labels = np.asarray(ds["label"])
        if labels.dtype.kind not in "iu" or labels.max() >= len(task.labels) or labels.min() < -1:
            raise DataError(
                f"{where}: labels must be class ids in -1..{len(task.labels) - 1} ({', '.join(task.labels)})"
            )
    if task.kind in ("squad", "record"):
        first = ds[0]["answers"]
        ok = isinstance(first, dict) and "text" in first if task.kind == "squad" else isinstance(first, list)
        if not ok:
            raise DataError(f"{where}: unexpected 'answers' field {first!r}")
