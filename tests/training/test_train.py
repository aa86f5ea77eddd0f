"""The training loop, held-out evaluation (test and validation sets), W&B records, exact resume and faults."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import T5ForConditionalGeneration

from glu_study.config import compose
from glu_study.data import load_hf_tokenizer
from glu_study.errors import ConfigError, NonFiniteLossError
from glu_study.evaluate import evaluate_run
from glu_study.train import train
from glu_study.training.checkpoints import list_checkpoints, load_checkpoint
from glu_study.training.heldout import heldout_log_perplexity
from glu_study.training.optim import rsqrt_schedule
from glu_study.training.run_dir import read_metrics
from tests.helpers import ROOT, TINY, run_cli


def evals(run_dir: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["eval/log_perplexity"])
        for r in read_metrics(run_dir)
        if "eval/log_perplexity" in r and "source" not in r
    ]


def test_rsqrt_schedule_shape():
    # plateau at 1/sqrt(warmup), inverse square root after it, linear to zero over the last 10%
    assert rsqrt_schedule(0, 10_000, 100_000, 0.1) == rsqrt_schedule(9_999, 10_000, 100_000, 0.1) == 0.01
    assert rsqrt_schedule(40_000, 10_000, 100_000, 0.1) == pytest.approx(0.005)
    assert rsqrt_schedule(95_000, 10_000, 100_000, 0.1) == pytest.approx(0.5 / 95_000**0.5)
    assert rsqrt_schedule(100_000, 10_000, 100_000, 0.1) == 0.0


def test_short_run_lowers_heldout_log_perplexity(tmp_path):
    cfg = compose([*TINY, "trainer.max_steps=30", "trainer.eval_every=10", "trainer.log_every=5"])
    summary = train(cfg, tmp_path)
    curve = evals(tmp_path)
    assert [s for s, _ in curve] == [0, 10, 20, 30]
    assert curve[-1][1] < curve[0][1] - 0.5
    assert summary["eval/log_perplexity"] == curve[-1][1]
    assert summary["steps"] == 30 and summary["ffn"] == "relu"
    for key in (
        "params",
        "non_embedding_params",
        "d_ff",
        "tokens_seen",
        "train/tokens_per_s",
        "wall_s",
        "seed",
    ):
        assert key in summary
    # the validation figure beside the test figure at every evaluation, and the regime in the summary
    vals = [(r["step"], r["val/log_perplexity"]) for r in read_metrics(tmp_path) if "val/log_perplexity" in r]
    assert [s for s, _ in vals] == [0, 10, 20, 30] and summary["val/log_perplexity"] == vals[-1][1]
    assert summary["val/log_perplexity"] != summary["eval/log_perplexity"]  # two different sets
    assert summary["tokens_seen"] == 30 * 8 * (64 + 14)  # batch 8, inputs 64 + targets 14
    assert summary["tokens_per_param"] == round(summary["tokens_seen"] / summary["non_embedding_params"], 4)
    assert summary["data_epochs"] > 0 and len(summary["corpus_fingerprint"]) == 16
    from glu_study.data.tokenizer import tokenizer_fingerprint

    spiece = tmp_path / "model" / "spiece.model"  # the export's tokenizer: the one the run tokenised with
    assert summary["tokenizer_fingerprint"] == tokenizer_fingerprint(spiece)
    assert 0 <= summary["eval/test_ngram_overlap"] <= 1
    logged = [r for r in read_metrics(tmp_path) if "train/loss" in r]
    assert [r["step"] for r in logged] == [5, 10, 15, 20, 25, 30]
    assert all({"train/lr", "train/tokens_per_s"} <= set(r) for r in logged)
    assert len(list_checkpoints(tmp_path)) == cfg.trainer.keep_checkpoints


def test_copyable_and_novel_tokens_partition_the_papers_metric(tmp_path, tiny_data):
    """The two classes' weighted mean is the paper's metric at every evaluation, on both held-out sets."""
    cfg = compose([*TINY, "trainer.max_steps=6", "trainer.eval_every=3"])
    summary = train(cfg, tmp_path)
    events = [r for r in read_metrics(tmp_path) if "eval/log_perplexity" in r]
    assert [r["step"] for r in events] == [0, 3, 6]
    for record in [*events, summary]:
        for prefix in ("eval", "val"):
            share = record[f"{prefix}/copyable_share"]
            copyable, novel = (
                record[f"{prefix}/copyable_log_perplexity"],
                record[f"{prefix}/novel_log_perplexity"],
            )
            assert 0 < share < 1 and copyable != novel
            whole = share * copyable + (1 - share) * novel
            assert whole == pytest.approx(record[f"{prefix}/log_perplexity"], rel=1e-12)
    # the class is the token's id in the example's visible input: recounted here from the held-out pairs
    copyable = total = 0
    for inputs, labels in tiny_data.eval_pairs("test"):
        copyable += int(sum(label in set(inputs.tolist()) for label in labels.tolist()))
        total += len(labels)
    assert summary["eval/copyable_share"] == pytest.approx(copyable / total, abs=1e-12)


def test_dense_evaluations_from_a_step_on(tmp_path):
    cfg = compose(
        [
            *TINY,
            "trainer.max_steps=12",
            "trainer.eval_every=6",
            "trainer.eval_dense_from=7",
            "trainer.eval_dense_every=2",
        ]
    )
    train(cfg, tmp_path)
    assert [s for s, _ in evals(tmp_path)] == [0, 6, 7, 9, 11, 12]


def test_every_run_records_its_code_version(tmp_path):
    summary = train(compose([*TINY, "trainer.max_steps=2"]), tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert summary["code_commit"] == head.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True)
    assert summary["code_clean"] is (dirty.stdout.strip() == "")
    assert json.loads((tmp_path / "summary.json").read_text())["code_commit"] == summary["code_commit"]


def test_code_version_outside_a_checkout(tmp_path):
    from glu_study.code_version import code_version

    assert code_version(tmp_path) == {"code_commit": None, "code_clean": None}


def test_export_loads_in_transformers_and_reproduces_eval(tmp_path, tiny_data):
    cfg = compose([*TINY, "ffn=swiglu"])
    summary = train(cfg, tmp_path)
    model = T5ForConditionalGeneration.from_pretrained(tmp_path / "model")
    assert model.config.feed_forward_proj == "gated-silu"
    tok = load_hf_tokenizer(tmp_path / "model" / "spiece.model")
    assert len(tok) == model.config.vocab_size
    value = heldout_log_perplexity(model, tiny_data, torch.device("cpu"), "fp32", 8)
    assert value == pytest.approx(summary["eval/log_perplexity"], abs=1e-6)
    # and the evaluate command agrees, reading the latest checkpoint, and records its figure
    result = evaluate_run(tmp_path, batch_size=8)
    assert result["eval/log_perplexity"] == pytest.approx(summary["eval/log_perplexity"], abs=1e-6)
    assert read_metrics(tmp_path)[-1]["source"] == "evaluate"


def test_a_finished_run_re_run_re_reports_without_a_second_evaluation(tmp_path):
    first = train(compose(TINY), tmp_path)
    again = train(compose(TINY), tmp_path)
    assert again == first
    assert [s for s, _ in evals(tmp_path)] == [0, 3, 6]  # each evaluation once


def test_a_line_torn_by_a_kill_mid_append_is_dropped_and_the_run_resumes(tmp_path):
    """A kill while metrics.jsonl is appended to leaves a last line without its newline: readers skip it and
    the same command resumes past it (here: the run killed after its step-3 checkpoint)."""
    import shutil

    from glu_study.reporting.records import read_run_dir

    full = train(compose(TINY), tmp_path)
    shutil.rmtree(tmp_path / "checkpoints" / "step_6")
    (tmp_path / "summary.json").unlink()
    kept = [json.dumps(r) for r in read_metrics(tmp_path) if r["step"] <= 3]
    (tmp_path / "metrics.jsonl").write_text("\n".join(kept) + '\n{"step": 4, "train/lo')
    assert [r["step"] for r in read_metrics(tmp_path)][-1] == 3
    resumed = train(compose(TINY), tmp_path)
    assert resumed["eval/log_perplexity"] == full["eval/log_perplexity"]
    assert (tmp_path / "metrics.jsonl").read_text().endswith("\n")
    assert read_run_dir(tmp_path).curve == evals(tmp_path) and [s for s, _ in evals(tmp_path)] == [0, 3, 6]


def test_a_run_that_would_repeat_its_data_too_often_is_refused_before_it_writes(tmp_path, tiny_data):
    from glu_study.errors import DataError

    passes = 6 * 8 / tiny_data.info.train_examples  # TINY: 6 steps of 8 examples
    cfg = compose([*TINY, f"data.max_epochs={passes / 2}"])
    with pytest.raises(
        DataError, match=rf"{tiny_data.info.train_examples:,} training chunks {passes:.2f} times"
    ):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert train(compose([*TINY, f"data.max_epochs={passes}"]), tmp_path / "ok")["data_epochs"] == round(
        passes, 4
    )


def test_run_state_is_typed_and_restores_what_it_saved():
    from glu_study.training.state import FinetuneState, PretrainState

    state = PretrainState(step=5, data_position=40, wandb_id="ab12")
    state.record_eval({"eval/log_perplexity": 4.0, "val/log_perplexity": 4.1})
    state.record_eval({"eval/log_perplexity": 4.2, "val/log_perplexity": 4.3, "eval/copyable_share": 0.5})
    restored = PretrainState()
    restored.load_state_dict(state.state_dict())
    assert restored == state and restored.best_eval == 4.0 and restored.last_val == 4.3
    assert restored.last_figures["eval/copyable_share"] == 0.5  # the latest evaluation's every figure
    older = PretrainState()
    older.load_state_dict({"step": 7, "data_position": 56})  # a checkpoint from before a field existed
    assert older.step == 7 and older.last_val is None
    assert FinetuneState().best == {} and FinetuneState().best is not FinetuneState().best


def test_resume_refuses_a_different_config(tmp_path):
    train(compose(TINY), tmp_path)
    with pytest.raises(ConfigError, match="different configuration.*ffn.name: 'relu' -> 'swiglu'"):
        train(compose([*TINY, "ffn=swiglu"]), tmp_path)
    # the checkpoint's own config is compared the same way (one comparison), when the record is gone
    (tmp_path / ".hydra" / "config.yaml").unlink()
    with pytest.raises(ConfigError, match="different configuration.*trainer.lr: 1.0 -> 0.5"):
        train(compose([*TINY, "trainer.lr=0.5"]), tmp_path)


def test_nan_guard_stops_with_diagnostic_checkpoint(tmp_path):
    cfg = compose([*TINY, "trainer.optimizer=adamw", "trainer.schedule=constant", "trainer.lr=1e30"])
    with pytest.raises(NonFiniteLossError, match="diagnostic checkpoint"):
        train(cfg, tmp_path)
    diag = sorted((tmp_path / "checkpoints").glob("diagnostic_step_*"))
    assert diag and load_checkpoint(diag[0])["state"]["step"] >= 1
    assert not (tmp_path / "summary.json").exists()
    assert not {p for _, p in list_checkpoints(tmp_path)} & set(diag)  # never picked up by resume


def test_nan_guard_cli_exit_code(tmp_path):
    r = run_cli(
        "glu_study.train",
        *TINY,
        "trainer.optimizer=adamw",
        "trainer.schedule=constant",
        "trainer.lr=1e30",
        f"hydra.run.dir={tmp_path}",
    )
    assert r.returncode == 3, r.stderr
    assert "loss is nan" in r.stderr or "loss is inf" in r.stderr


def _leet_summary(run_dir: Path) -> dict:
    wandb_bin = Path(sys.executable).parent / "wandb"
    r = subprocess.run(
        [str(wandb_bin), "leet", "inspect", "--summary", "--json", str(run_dir / "wandb" / "latest-run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _leet_history(run_dir: Path) -> list[dict]:
    wandb_bin = Path(sys.executable).parent / "wandb"
    r = subprocess.run(
        [str(wandb_bin), "leet", "inspect", "--json", str(run_dir / "wandb" / "latest-run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    records = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return [rec["history"]["item"] for rec in records if rec.get("type") == "history"]


def test_wandb_offline_run_read_back_by_wandb_tooling(tmp_path):
    cfg = compose([*TINY, "ffn=geglu", "logger=offline", "logger.group=unit"])
    summary = train(cfg, tmp_path)
    s = _leet_summary(tmp_path)
    assert s["state"] == "finished" and s["name"] == "geglu-s0"
    assert s["config"]["ffn"]["name"] == "geglu" and s["config"]["derived"]["d_ff"] == 344
    assert s["summary"]["eval/log_perplexity"]["last"] == pytest.approx(summary["eval/log_perplexity"])
    hist = [h["eval/log_perplexity"] for h in _leet_history(tmp_path) if "eval/log_perplexity" in h]
    assert hist == [v for _, v in evals(tmp_path)]
    # the regime and the corpus travel to W&B too
    assert s["summary"]["val/log_perplexity"]["last"] == pytest.approx(summary["val/log_perplexity"])
    assert s["summary"]["tokens_per_param"] == summary["tokens_per_param"]
    assert s["summary"]["corpus_fingerprint"] == summary["corpus_fingerprint"]
    assert s["config"]["derived"]["corpus_fingerprint"] == summary["corpus_fingerprint"]
    assert s["config"]["derived"]["tokenizer_fingerprint"] == summary["tokenizer_fingerprint"]


@pytest.mark.slow
def test_first_run_ends_with_where_to_look_next_and_its_commands_run_as_printed(tmp_path):
    """What `make train` prints last (through the CLI, as a newcomer sees it): the figure, its floor, the run
    directory and the commands that open it — which run as printed from a fresh shell with no venv activated
    (the report writes beside the run; `wandb leet` is a terminal UI, so only its --help is run)."""
    r = run_cli("glu_study.train", *TINY[:-1], "logger=offline", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    tail = r.stdout.strip().splitlines()[-6:]
    assert tail[0].startswith("final held-out log-perplexity (relu-s0, step 6): ")
    assert "unigram floor of the held-out set" in tail[1] and "validation set" in tail[1]
    assert f"run directory: {tmp_path / 'run'}" in tail[2]
    assert any(f"wandb sync {tmp_path / 'run' / 'wandb'}/offline-run-*" in line for line in tail)
    commands = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].split("   (")[0].strip() for line in tail[3:]
    }
    fresh = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    report = subprocess.run(
        ["bash", "-c", commands["report"]], cwd=ROOT, env=fresh, capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "run" / "report" / "table1.md").is_file()
    leet = commands["W&B run"].split(" leet ")[0]
    assert (
        subprocess.run(
            ["bash", "-c", f"{leet} leet --help"], cwd=ROOT, env=fresh, capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.slow
def test_multirun_sweep_gives_one_run_dir_and_wandb_run_per_job(tmp_path):
    r = run_cli(
        "glu_study.train", "-m", *TINY, "ffn=relu,swiglu", "logger=offline", f"hydra.sweep.dir={tmp_path}"
    )
    assert r.returncode == 0, r.stderr
    dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert dirs == ["relu-s0", "swiglu-s0"]
    ids = set()
    for d in dirs:
        runs = list((tmp_path / d / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        ids.add(runs[0].name.rsplit("-", 1)[-1])
        assert _leet_summary(tmp_path / d)["config"]["ffn"]["name"] == d.split("-")[0]
        assert (tmp_path / d / "summary.json").exists()
    assert len(ids) == 2


@pytest.mark.gpu
def test_bf16_autocast_on_cuda_matches_fp32(tmp_path):
    """On a GPU: bf16 autocast trains, and its held-out figure stays close to an fp32 run's."""
    base = [*TINY, "trainer.device=cuda", "trainer.max_steps=20", "trainer.eval_every=20"]
    fp32 = train(compose([*base, "trainer.precision=fp32"]), tmp_path / "fp32")
    bf16 = train(compose([*base, "trainer.precision=bf16"]), tmp_path / "bf16")
    assert math.isfinite(bf16["eval/log_perplexity"])
    assert abs(bf16["eval/log_perplexity"] - fp32["eval/log_perplexity"]) < 0.05


def test_a_second_ctrl_c_interrupts_at_once():
    """The first SIGINT only asks the loop to stop after its step; the second raises KeyboardInterrupt, which
    the command line turns into one `error:` line and exit 130 (glu_study.errors.cli_exit_codes)."""
    import os
    import signal

    from glu_study.errors import cli_exit_codes
    from glu_study.training.loop import StopSignals

    with pytest.raises(SystemExit) as stopped, cli_exit_codes():
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested and stop.received == "SIGINT"
            os.kill(os.getpid(), signal.SIGTERM)  # a later signal does not change how the run ends
            assert stop.received == "SIGINT"
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("the second Ctrl-C did not interrupt")
    assert stopped.value.code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored on the way out


def test_a_sigusr2_means_requeue_whatever_comes_after_it():
    import os
    import signal

    from glu_study.training.loop import StopSignals

    for first in (signal.SIGTERM, signal.SIGUSR2):
        with StopSignals() as stop:
            os.kill(os.getpid(), first)
            os.kill(os.getpid(), signal.SIGUSR2 if first == signal.SIGTERM else signal.SIGTERM)
            assert stop.requested and stop.received == "SIGUSR2"
