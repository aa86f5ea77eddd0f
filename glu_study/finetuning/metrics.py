"""Scoring generated text as T5 does (its postprocessors + each task's official metric), in percent as in the
paper: scikit-learn's accuracy / F1 / Matthews, scipy's Pearson / Spearman, torchmetrics' port of SQuAD's EM / F1.

Benchmark averages follow T5 (`t5/scripts/parse_tb.py`): a task with two metrics counts as their mean, MNLI is the
mean of matched and mismatched, WNLI is left out of the GLUE average (T5 never trained on it), and an average is
given only when every task of the benchmark has a score.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from glu_study.finetuning.tasks import BENCHMARKS, Task, pad_punctuation

_WSC_DETERMINERS = set(
    "a an few her his each every many much my our some that the their these this those which whose your".split()
)


def _class_ids(task: Task, predictions: list[str]) -> np.ndarray:
    """T5's string_label_to_class_id: a word that is not a label is -1 (always wrong)."""
    index = {w: i for i, w in enumerate(task.labels)}
    return np.array([index.get(p.strip(), -1) for p in predictions])


def _f1_with_invalid(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """T5's f1_score_with_invalid: an invalid prediction counts as the wrong class."""
    from sklearn.metrics import f1_score

    y_pred = np.where((y_pred == 0) | (y_pred == 1), y_pred, 1 - y_true)
    return 100 * f1_score(y_true, y_pred)


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -1.0  # T5's string_to_float default


def _correlations(y_true, y_pred) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    # A constant prediction has no correlation; it scores 0, not NaN, so averages stay defined.
    if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
        return {"pearson": 0.0, "spearman": 0.0}
    return {"pearson": 100 * pearsonr(y_true, y_pred)[0], "spearman": 100 * spearmanr(y_true, y_pred)[0]}


def _wsc_referent(prediction: str, referent: str) -> int:
    """T5's wsc_simple postprocessor: does the predicted noun phrase name span1 (determiners ignored)?"""

    def clean(s: str) -> str:
        return " ".join(w for w in s.strip().lower().split(" ") if w not in _WSC_DETERMINERS)

    prediction, referent = clean(prediction), clean(referent)
    if not prediction:
        return -1
    if ("'" in prediction) != ("'" in referent):
        return 0
    p, r = set(prediction.split(" ")), set(referent.split(" "))
    return int(p <= r or r <= p)


def squad_scores(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """SQuAD v1.1 exact match and token F1, best over the reference answers (torchmetrics' official port)."""
    from torchmetrics.functional.text import squad

    preds = [{"prediction_text": p, "id": str(i)} for i, p in enumerate(predictions)]
    target = [
        {"answers": {"text": list(a), "answer_start": [0] * len(a)}, "id": str(i)}
        for i, a in enumerate(answers)
    ]
    out = squad(preds, target)
    return {"em": float(out["exact_match"]), "f1": float(out["f1"])}


def score(task: Task, predictions: list[str], rows: list[dict]) -> dict[str, float]:
    """Each metric of the task, plus `score` (their mean): what the benchmark average uses."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if len(predictions) != len(rows):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows")
    out: dict[str, float]
    if task.kind == "squad":
        out = squad_scores(predictions, [[pad_punctuation(a) for a in r["answers"]["text"]] for r in rows])
    elif task.kind == "record":
        out = squad_scores(predictions, [list(r["answers"]) for r in rows])
    elif task.kind == "regress":
        out = _correlations(
            np.array([float(r["label"]) for r in rows]), np.array([_to_float(p) for p in predictions])
        )
    elif task.kind == "wsc":
        y_pred = [_wsc_referent(p, r["span1_text"]) for p, r in zip(predictions, rows, strict=True)]
        out = {"accuracy": 100 * accuracy_score([int(r["label"]) for r in rows], y_pred)}
    else:
        y_true, y_pred = np.array([int(r["label"]) for r in rows]), _class_ids(task, predictions)
        out = {}
        for m in task.metrics:
            if m == "accuracy":
                out[m] = 100 * accuracy_score(y_true, y_pred)
            elif m == "matthews_corrcoef":
                out[m] = 100 * matthews_corrcoef(y_true, y_pred)
            elif m == "f1_macro":  # CB: the mean F1 over its classes (an invalid answer is no class)
                out[m] = 100 * f1_score(y_true, y_pred, labels=range(len(task.labels)), average="macro")
            elif m in ("f1", "f1a"):  # MultiRC's F1a: binary F1 over all answer options
                out[m] = _f1_with_invalid(y_true, y_pred)
            elif m == "em":  # MultiRC: a question counts only if every one of its answers is right
                groups = defaultdict(list)
                for r, t, p in zip(rows, y_true, y_pred, strict=True):
                    groups[(r["idx"]["paragraph"], r["idx"]["question"])].append(t == p)
                out[m] = 100 * float(np.mean([all(g) for g in groups.values()]))
    out = {k: float(v) for k, v in out.items()}
    out["score"] = float(np.mean(list(out.values())))
    return out


def score_splits(task: Task, per_split: dict[str, tuple[list[str], list[dict]]]) -> dict[str, float]:
    """`score` over the task's dev splits. MNLI has two: `accuracy_matched`, `accuracy_mismatched`, and a `score`
    that is their mean."""
    if len(per_split) == 1:
        return score(task, *next(iter(per_split.values())))
    out, scores = {}, []
    for split, (predictions, rows) in per_split.items():
        s = score(task, predictions, rows)
        scores.append(s.pop("score"))
        out.update({f"{k}_{split.removeprefix('validation_')}": v for k, v in s.items()})
    out["score"] = float(np.mean(scores))
    return out


def benchmark_averages(scores: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """GLUE / SuperGLUE averages of the per-task `score`s (None unless every task of the benchmark has one),
    and SQuAD's EM and F1. `scores` maps task name -> that task's metrics."""
    out: dict[str, float | None] = {}
    for bench in ("glue", "superglue"):
        vals = [scores.get(t, {}).get("score") for t in BENCHMARKS[bench]]
        ok = all(v is not None and math.isfinite(v) for v in vals)
        out[f"{bench}_avg"] = float(np.mean(vals)) if ok else None
    out["squad_em"] = scores.get("squad", {}).get("em")
    out["squad_f1"] = scores.get("squad", {}).get("f1")
    return out
