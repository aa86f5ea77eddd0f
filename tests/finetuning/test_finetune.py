"""The fine-tune command end to end: a tiny pretrained run fine-tuned on fixture RTE and SQuAD and read back by
the report, exact resume, SIGTERM, -m sweeps, presets, and bad input."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from glu_study.config import compose
from glu_study.errors import ConfigError
from glu_study.finetune import finetune
from glu_study.report import main as report_main
from glu_study.train import train
from glu_study.training.checkpoints import list_checkpoints, load_checkpoint
from tests.helpers import ROOT, TINY, run_cli
from tests.helpers.task_fixtures import classification_rows, squad_rows, write_split

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
        ("finetune.lr=-1", "finetune.lr must be > 0.0"),
        ("logger.mode=sometimes", "logger.mode='sometimes' is not one of"),  # the same preflight as train
    ],
)
def test_bad_settings_are_refused_before_anything_runs(tmp_path, override, message):
    cfg = compose([f"run_dir={tmp_path}", "task=rte", override], config_name="finetune")
    with pytest.raises(ConfigError) as e:
        finetune(cfg, tmp_path / "out")
    assert message in str(e.value) and not (tmp_path / "out").exists()


@pytest.mark.slow
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
    # the W&B mode is checked up front, as for pretraining: one line, nothing written
    r = run_cli(
        "glu_study.finetune", f"run_dir={run_dir}", "task=rte", f"data_dir={data}", "logger.mode=sometimes"
    )
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "logger.mode='sometimes'" in r.stderr
    assert not (run_dir / "finetune" / "rte").exists() or "rte" in before

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


def test_offline_without_data_dir_is_a_fast_clear_error(pretrained):
    """No route to the hub and no data_dir=: one error line at once (not minutes of retries), nothing left."""
    run_dir, _ = pretrained
    before = (
        sorted(p.name for p in (run_dir / "finetune").iterdir()) if (run_dir / "finetune").exists() else []
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # a closed port
    start = time.monotonic()
    r = run_cli("glu_study.finetune", f"run_dir={run_dir}", "task=rte", "name=offline", env=env)
    assert (
        r.returncode == 2 and r.stderr.startswith("error: the Hugging Face hub") and r.stderr.count("\n") == 1
    )
    assert "data_dir=DIR" in r.stderr and time.monotonic() - start < 60
    after = (
        sorted(p.name for p in (run_dir / "finetune").iterdir()) if (run_dir / "finetune").exists() else []
    )
    assert after == before


def test_a_second_fine_tune_on_the_same_directory_is_refused(pretrained):
    run_dir, data = pretrained
    out = run_dir / "finetune" / "locked"
    out.mkdir(parents=True)
    with open(out / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running fine-tune of this name holds
        r = run_cli("glu_study.finetune", f"run_dir={run_dir}", "task=rte", "name=locked", f"data_dir={data}")
    assert r.returncode == 2 and "being written by another process" in r.stderr and r.stderr.count("\n") == 1
    assert [p.name for p in out.iterdir()] == [".lock"]  # the owner's directory is left alone
