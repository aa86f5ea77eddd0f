"""Issue 8: fine-tuning on GLUE / SuperGLUE / SQuAD (Tables 2-4). Text-to-text casting per task, metrics against
hand-computed values, loaders on local files in the hub's schema, end-to-end fine-tunes of a tiny pretrained run
read back by the report, exact resume, and bad input."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from glu_study.config import compose
from glu_study.data import DataError
from glu_study.finetune import finetune, mixture_rates, sample_batch
from glu_study.report import main as report_main
from glu_study.tasks import (
    BENCHMARKS,
    MIXTURES,
    TASKS,
    UnknownTaskError,
    benchmark_averages,
    load_split,
    resolve_tasks,
    score,
    score_splits,
    text_to_text,
)
from glu_study.train import ConfigError, list_checkpoints, load_checkpoint, train

from .conftest import ROOT, TINY, run_cli
from .task_fixtures import ROWS, classification_rows, squad_rows, write_split

# ---------------------------------------------------------------------------------------------------------
# Text-to-text
# ---------------------------------------------------------------------------------------------------------


def test_every_task_has_a_fixture_row():
    assert sorted(ROWS) == sorted(TASKS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_text_to_text_matches_t5(name):
    row, expected = ROWS[name]
    assert text_to_text(TASKS[name], row, for_training=False)[0] == expected


def test_training_pairs_record_per_answer_wsc_correct_referent_only():
    row = dict(ROWS["record"][0], answers=["Rome", "Roma"])
    assert [t for _, t in text_to_text(TASKS["record"], row, for_training=True)] == ["Rome", "Roma"]
    assert len(text_to_text(TASKS["record"], row, for_training=False)) == 1
    wrong = dict(ROWS["wsc"][0], span1_text="Mark", label=0)
    assert text_to_text(TASKS["wsc"], wrong, for_training=True) == []
    assert text_to_text(TASKS["wsc"], wrong, for_training=False)[0][1] == "Mark"


def test_stsb_rounds_to_steps_of_0_2():
    task, row = TASKS["stsb"], ROWS["stsb"][0]
    targets = [
        text_to_text(task, dict(row, label=x), for_training=True)[0][1] for x in (0.0, 0.09, 0.11, 3.5, 5.0)
    ]
    assert targets == ["0.0", "0.0", "0.2", "3.6", "5.0"]  # 3.5 * 5 = 17.5 rounds half to even, as tf.round


def test_resolve_tasks_and_mixtures():
    assert [t.name for t in resolve_tasks("rte")] == ["rte"]
    assert [t.name for t in resolve_tasks("cola+squad+cola")] == ["cola", "squad"]
    assert [t.name for t in resolve_tasks("all")] == MIXTURES["all"]
    assert "wnli" not in MIXTURES["glue"] and len(MIXTURES["glue"]) == 8 and len(MIXTURES["superglue"]) == 8
    with pytest.raises(UnknownTaskError) as e:
        resolve_tasks("rte+colaa")
    assert "colaa" in str(e.value) and "superglue_rte" in str(e.value) and "all" in str(e.value)


# ---------------------------------------------------------------------------------------------------------
# Metrics (hand-computed values)
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Loaders and sampling
# ---------------------------------------------------------------------------------------------------------


def test_local_files_in_the_hub_schema(tmp_path):
    write_split(tmp_path / "rte" / "train.jsonl", classification_rows(10))
    ds = load_split(TASKS["rte"], "train", tmp_path)
    assert len(ds) == 10 and {"sentence1", "sentence2", "label", "idx"} <= set(ds.column_names)
    import datasets

    datasets.Dataset.from_list(squad_rows(5)).to_parquet(str(tmp_path / "squad" / "validation.parquet"))
    assert load_split(TASKS["squad"], "validation", tmp_path)[0]["answers"]["text"]
    with pytest.raises(DataError, match="no validation split"):
        load_split(TASKS["rte"], "validation", tmp_path)
    write_split(tmp_path / "cola" / "train.jsonl", [{"text": "no sentence field", "label": 0}])
    with pytest.raises(DataError, match="unexpected schema, missing sentence"):
        load_split(TASKS["cola"], "train", tmp_path)
    write_split(tmp_path / "sst2" / "train.jsonl", [{"sentence": "x", "label": 7, "idx": 0}])
    with pytest.raises(DataError, match="class ids"):
        load_split(TASKS["sst2"], "train", tmp_path)


def test_mixture_is_examples_proportional_and_batches_are_a_function_of_step():
    assert mixture_rates([100, 300, 10_000], limit=1000) == pytest.approx(
        [0.071428, 0.214286, 0.714286], rel=1e-4
    )
    import datasets

    sets = [
        datasets.Dataset.from_dict({"input_ids": [[t]] * n, "labels": [[t + 1]] * n})
        for t, n in ((1, 3), (3, 9))
    ]
    rates = mixture_rates([3, 9], 100)
    a, b = sample_batch(sets, rates, 64, 0, 5), sample_batch(sets, rates, 64, 0, 5)
    assert a == b and a != sample_batch(sets, rates, 64, 0, 6)
    share = sum(x == [3] for x, _ in a) / 64
    assert 0.55 < share < 0.95  # task 2 has 3/4 of the examples


# ---------------------------------------------------------------------------------------------------------
# End to end: a tiny pretrained run, fine-tuned on fixture RTE and SQuAD, read back by the report
# ---------------------------------------------------------------------------------------------------------

FAST = ["finetune.batch_size=16", "finetune.eval_batch_size=32", "finetune.log_every=5", "finetune.lr=0.01"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    run_dir = root / "runs" / "relu-s0"
    train(compose(TINY), run_dir)
    data = root / "data"
    write_split(data / "rte" / "train.jsonl", classification_rows(300, 0))
    write_split(data / "rte" / "validation.jsonl", classification_rows(24, 1))
    write_split(data / "squad" / "train.jsonl", squad_rows(300, 0))
    write_split(data / "squad" / "validation.jsonl", squad_rows(24, 1))
    return run_dir, data


def test_end_to_end_rte_and_squad_recorded_and_reported(pretrained, tmp_path):
    run_dir, data = pretrained
    r = run_cli(
        "glu_study.finetune",
        f"run_dir={run_dir}",
        "task=rte+squad",
        f"data_dir={data}",
        "logger=offline",
        "finetune.max_steps=120",
        "finetune.eval_every=60",
        *FAST,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = run_dir / "finetune" / "rte+squad"
    s = json.loads((out / "scores.json").read_text())
    assert s["finished"] and s["steps"] == 120 and s["ffn"] == "relu" and not s["dev_truncated"]
    assert set(s["best"]) == {"rte", "squad"} and s["best"]["rte"]["step"] in (60, 120)
    assert 0 < s["best"]["rte"]["accuracy"] <= 100  # it answers with label words after 120 steps
    assert 0 <= s["squad_em"] <= s["squad_f1"] <= 100 and s["glue_avg"] is None
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if "rte/accuracy" in e] == [60, 120]
    assert any("train/loss" in e for e in evals) and (out / "config.yaml").is_file()
    assert list((out / "wandb").glob("offline-run-*")), "W&B offline run missing"
    assert "rte" in r.stdout and "squad_em" in r.stdout

    report = tmp_path / "report"
    assert report_main([str(run_dir.parent), "--out", str(report)]) == 0
    table = (report / "table2.md").read_text()
    assert (
        f"| FFN_ReLU | – | 83.80 | – | 72.76 | {s['squad_em']:.2f} (1) | 83.18 | {s['squad_f1']:.2f} (1) |"
        in table
    )
    assert f"{s['best']['rte']['score']:.2f} (1)" in table
    rows = (report / "finetune.csv").read_text().splitlines()
    assert any(",rte,accuracy," in x for x in rows) and any(",squad,em," in x for x in rows)
    copied = report / "runs" / "relu-s0" / "finetune" / "rte+squad" / "scores.json"
    assert json.loads(copied.read_text()) == s
    again = tmp_path / "again"  # the committed copies regenerate the same tables
    assert report_main([str(report / "runs"), "--out", str(again)]) == 0
    assert (again / "table2.md").read_text() == table
    assert "## Table 2: GLUE (dev)" in table and "## Table 4: SQuAD (dev)" in table
    assert "## Table 3" not in table  # no SuperGLUE task was fine-tuned

    broken = report / "runs" / "relu-s0" / "finetune" / "broken"
    broken.mkdir()
    (broken / "scores.json").write_text("{}")
    assert report_main([str(report / "runs"), "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()  # read everything before writing anything


def test_resume_is_exact(pretrained):
    run_dir, data = pretrained
    overrides = [
        f"run_dir={run_dir}",
        "task=rte",
        f"data_dir={data}",
        "logger=disabled",
        "name=resume",
        "finetune.max_steps=4",
        "finetune.checkpoint_every=2",
        "finetune.keep_checkpoints=2",
        "finetune.eval_every=4",
        *FAST,
    ]
    cfg = compose(overrides, config_name="finetune")
    out = run_dir / "finetune" / "resume"
    finetune(cfg, out)
    final = load_checkpoint(out / "checkpoints" / "step_4")["model"]
    shutil.rmtree(out / "checkpoints" / "step_4")  # as if killed after step 2's checkpoint
    again = finetune(cfg, out)
    resumed = load_checkpoint(out / "checkpoints" / "step_4")["model"]
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    assert again["steps"] == 4
    changed = compose([*overrides, "finetune.lr=0.5"], config_name="finetune")
    with pytest.raises(ValueError, match="different configuration"):
        finetune(changed, out)


def test_multirun_one_record_directory_per_task(pretrained, tmp_path):
    run_dir, data = pretrained
    r = run_cli(
        "glu_study.finetune",
        "-m",
        f"run_dir={run_dir}",
        "task=rte,squad",
        f"data_dir={data}",
        "logger=disabled",
        "finetune.max_steps=4",
        "finetune.eval_every=4",
        "finetune.eval_examples=8",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *FAST,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for task in ("rte", "squad"):
        s = json.loads((run_dir / "finetune" / task / "scores.json").read_text())
        assert s["tasks"] == [task] and s["steps"] == 4 and s["dev_truncated"]  # 8 of 24 dev rows


def test_sigterm_checkpoints_and_the_same_command_resumes(pretrained):
    run_dir, data = pretrained
    args = [
        "-m",
        "glu_study.finetune",
        f"run_dir={run_dir}",
        "task=rte",
        f"data_dir={data}",
        "logger=disabled",
        "name=preempted",
        "finetune.max_steps=80",
        "finetune.checkpoint_every=2",
        "finetune.eval_every=80",
        *FAST,
    ]
    out = run_dir / "finetune" / "preempted"
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 180
    while not list_checkpoints(out):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "SIGTERM" in stdout, stderr[-2000:]
    step = list_checkpoints(out)[-1][0]
    assert 2 <= step < 80 and not (out / "scores.json").exists()
    r = run_cli(*args[1:])
    assert r.returncode == 0 and f"from step {step}" in r.stdout, r.stderr[-2000:]
    assert json.loads((out / "scores.json").read_text())["finished"]


@pytest.mark.gpu
def test_finetune_bf16_on_cuda(pretrained):
    run_dir, data = pretrained
    overrides = [f"run_dir={run_dir}", "task=rte+squad", f"data_dir={data}", "logger=disabled", "name=cuda"]
    overrides += [
        "finetune.device=cuda",
        "finetune.precision=bf16",
        "finetune.max_steps=20",
        "finetune.eval_every=20",
    ]
    s = finetune(compose([*overrides, *FAST], config_name="finetune"), run_dir / "finetune" / "cuda")
    assert s["finished"] and 0 <= s["squad_em"] <= s["squad_f1"] <= 100


# ---------------------------------------------------------------------------------------------------------
# Config and bad input
# ---------------------------------------------------------------------------------------------------------


def test_finetune_presets_compose():
    cfg = compose(["run_dir=x", "task=rte"], config_name="finetune")
    assert (cfg.finetune.lr, cfg.finetune.dropout_rate, cfg.finetune.schedule, cfg.finetune.optimizer) == (
        1e-3,
        0.1,
        "constant",
        "adafactor",
    )
    paper = compose(["run_dir=x", "experiment=table2_paper"], config_name="finetune")
    assert paper.task == "all" and paper.logger.group == "table2_paper"
    assert (paper.finetune.max_steps, paper.finetune.batch_size, paper.finetune.inputs_length) == (
        131072,
        128,
        512,
    )
    assert paper.finetune.eval_examples == 0 and paper.finetune.lr == 1e-3


@pytest.mark.parametrize(
    "override,message",
    [
        ("finetune.precision=fp16", "finetune.precision='fp16' is not one of fp32, bf16"),
        ("finetune.batch_size=0", "finetune.batch_size must be >= 1"),
        ("finetune.grad_accum=3", "not divisible by grad_accum=3"),
        ("finetune.dropout_rate=1.0", "dropout_rate must be in [0, 1)"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(tmp_path, override, message):
    cfg = compose([f"run_dir={tmp_path}", "task=rte", override], config_name="finetune")
    with pytest.raises(ConfigError) as e:
        finetune(cfg, tmp_path / "out")
    assert message in str(e.value) and not (tmp_path / "out").exists()


def test_bad_input_one_error_nonzero_exit_nothing_written(pretrained, tmp_path):
    run_dir, data = pretrained
    before = (
        sorted(p.name for p in (run_dir / "finetune").iterdir()) if (run_dir / "finetune").exists() else []
    )

    r = run_cli("glu_study.finetune", f"run_dir={run_dir}", "task=rtee", f"data_dir={data}")
    assert r.returncode == 2 and "unknown task 'rtee'" in r.stderr and "cola" in r.stderr
    after = (
        sorted(p.name for p in (run_dir / "finetune").iterdir()) if (run_dir / "finetune").exists() else []
    )
    assert after == before

    r = run_cli("glu_study.finetune", "task=rte", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: missing run_dir=") and "squad" in r.stderr
    r = run_cli("glu_study.finetune", f"run_dir={run_dir}", cwd=tmp_path)
    assert r.returncode == 2 and "missing task=" in r.stderr and r.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir()) and not (run_dir / "finetune" / "unnamed").exists()

    missing = tmp_path / "no_such_run"
    r = run_cli("glu_study.finetune", f"run_dir={missing}", "task=rte")
    assert r.returncode == 2 and "no such run directory" in r.stderr and not missing.exists()

    unexported = tmp_path / "unexported"
    (unexported / "checkpoints").mkdir(parents=True)
    r = run_cli("glu_study.finetune", f"run_dir={unexported}", "task=rte")
    assert r.returncode == 2 and "no exported model" in r.stderr
    assert [p.name for p in unexported.iterdir()] == ["checkpoints"]

    bad = tmp_path / "bad_data"
    write_split(bad / "rte" / "train.jsonl", [{"premise": "a", "hypothesis": "b", "label": 0}])
    r = run_cli("glu_study.finetune", f"run_dir={run_dir}", "task=rte", f"data_dir={bad}", "name=bad")
    assert r.returncode == 2 and "unexpected schema" in r.stderr
    assert r.stderr.count("error:") == 1 and not (run_dir / "finetune" / "bad").exists()
