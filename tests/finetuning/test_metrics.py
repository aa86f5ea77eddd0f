"""Scoring generated text: each task's metric against hand-computed values, benchmark averages."""

from __future__ import annotations

import pytest

from glu_study.finetuning.metrics import benchmark_averages, score, score_splits
from glu_study.finetuning.tasks import BENCHMARKS, TASKS
from tests.helpers.task_fixtures import ROWS, squad_rows


def _rows(task, labels, **extra):
    return [dict(ROWS[task][0], label=y, **extra) for y in labels]


def test_accuracy_and_matthews_with_an_invalid_prediction():
    out = score(TASKS["sst2"], ["positive", "negative", "purple"], _rows("sst2", [1, 0, 1]))
    assert out == pytest.approx({"accuracy": 200 / 3, "score": 200 / 3})
    # CoLA: y = [1,1,0,0], predicted [1,0,0,0]: TP 1, TN 2, FP 0, FN 1 -> MCC = 2 / sqrt(1*2*3*2) = 0.5774
    out = score(TASKS["cola"], ["acceptable"] + ["unacceptable"] * 3, _rows("cola", [1, 1, 0, 0]))
    assert out["matthews_corrcoef"] == pytest.approx(100 * 2 / 12**0.5)


def test_f1_counts_an_invalid_prediction_as_wrong():
    # y = [1,1,0,0]; predicted [1, invalid -> 0, 1, 0]: TP 1, FP 1, FN 1 -> F1 0.5; accuracy 2/4
    preds = ["equivalent", "???", "equivalent", "not_equivalent"]
    out = score(TASKS["mrpc"], preds, _rows("mrpc", [1, 1, 0, 0]))
    assert out == pytest.approx({"f1": 50.0, "accuracy": 50.0, "score": 50.0})


def test_cb_macro_f1_over_three_classes():
    # y = [0,1,2,2]; predicted [0,1,1,invalid]: F1 per class 1, 2/3, 0 -> macro 5/9; accuracy 2/4
    preds = ["entailment", "contradiction", "contradiction", "maybe"]
    out = score(TASKS["cb"], preds, _rows("cb", [0, 1, 2, 2]))
    assert out["f1_macro"] == pytest.approx(500 / 9) and out["accuracy"] == pytest.approx(50.0)


def test_stsb_pearson_spearman_and_unparseable_as_minus_one():
    rows = _rows("stsb", [1.0, 2.0, 3.0, 4.0])
    out = score(TASKS["stsb"], ["2.0", "4.0", "6.0", "8.0"], rows)
    assert out["pearson"] == pytest.approx(100) and out["spearman"] == pytest.approx(100)
    # predicted [1,2,3,-1]: ranks [2,3,4,1] vs [1,2,3,4], sum d^2 = 12 -> rho = 1 - 6*12/(4*15) = -0.2
    out = score(TASKS["stsb"], ["1.0", "2.0", "3.0", "n/a"], rows)
    assert out["spearman"] == pytest.approx(-20.0)
    assert score(TASKS["stsb"], ["3.0"] * 4, rows)["pearson"] == 0.0  # constant: undefined, scored 0


def test_multirc_f1a_and_question_exact_match():
    def row(q, label):
        return dict(ROWS["multirc"][0], label=label, idx={"paragraph": 0, "question": q, "answer": 0})

    rows = [row(0, 1), row(0, 0), row(1, 1), row(1, 1)]
    out = score(TASKS["multirc"], ["True", "False", "True", "False"], rows)
    # question 0 all right, question 1 not -> EM 50; answers: TP 2, FN 1, FP 0 -> F1a 0.8
    assert out["em"] == pytest.approx(50.0) and out["f1a"] == pytest.approx(80.0)


def test_squad_em_f1_best_over_answers():
    rows = [
        dict(squad_rows(1)[0], answers={"text": a, "answer_start": [0] * len(a)})
        for a in (["1842"], ["a bridge over"], ["1842", "in 1842!"])
    ]
    out = score(TASKS["squad"], ["1842", "the bridge", "In 1842"], rows)
    # EM: 1, 0, 1 (normalised: case, punctuation); F1: 1, 2/3 ("bridge" vs "bridge over"), 1
    assert out["em"] == pytest.approx(200 / 3) and out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)


def test_record_and_wsc():
    rows = [dict(ROWS["record"][0], answers=["Rome", "Roma"])] * 2
    assert score(TASKS["record"], ["Roma", "Italy"], rows)["em"] == pytest.approx(50.0)
    rows = [dict(ROWS["wsc"][0], label=1), dict(ROWS["wsc"][0], label=0), dict(ROWS["wsc"][0], label=1)]
    # "the Pete" names Pete (determiner ignored) -> 1 (right); "Pete" -> 1 (wrong); "Mark" -> 0 (wrong)
    assert score(TASKS["wsc"], ["the Pete", "Pete", "Mark"], rows)["accuracy"] == pytest.approx(100 / 3)


def test_mnli_two_splits_and_benchmark_averages():
    rows = _rows("mnli", [0, 1])
    out = score_splits(
        TASKS["mnli"],
        {
            "validation_matched": (["entailment", "neutral"], rows),
            "validation_mismatched": (["entailment", "contradiction"], rows),
        },
    )
    assert out == pytest.approx({"accuracy_matched": 100.0, "accuracy_mismatched": 50.0, "score": 75.0})
    scores = {t: {"score": float(i)} for i, t in enumerate(BENCHMARKS["glue"])}
    scores["squad"] = {"em": 80.0, "f1": 88.0, "score": 84.0}
    avgs = benchmark_averages(scores)
    assert avgs["glue_avg"] == pytest.approx(3.5) and avgs["superglue_avg"] is None
    assert (avgs["squad_em"], avgs["squad_f1"]) == (80.0, 88.0)
