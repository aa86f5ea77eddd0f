"""Faults a cluster inflicts, through the real CLI: SIGKILL (lose at most the work since the last checkpoint),
SIGTERM and SIGUSR2 (checkpoint at the end of the step, exit 0), and a SLURM-style time-out under submitit's local
executor (checkpoint, requeue, resume). Each resumed run must end bit for bit where an uninterrupted one ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glu_study.training.checkpoints import list_checkpoints, load_checkpoint
from glu_study.training.run_dir import read_metrics
from tests.helpers import ROOT, TINY, run_cli

pytestmark = pytest.mark.slow

LONG = ["trainer.max_steps=40", "trainer.checkpoint_every=4", "trainer.eval_every=8", "trainer.log_every=4"]


def _popen_train(run_dir: Path, *overrides) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "glu_study.train", *TINY, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, proc, timeout=180):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["eval/log_perplexity"])
        for r in read_metrics(run_dir)
        if "eval/log_perplexity" in r and "source" not in r
    ]


def assert_same_run(a: Path, b: Path) -> None:
    """Same final figure, same evaluations at the same steps, bitwise the same exported weights."""
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["eval/log_perplexity"] == sb["eval/log_perplexity"]
    assert _evals(a) == _evals(b)
    wa, wb = (load_file(d / "model" / "model.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one is compared with."""
    run_dir = tmp_path_factory.mktemp("straight")
    r = run_cli("glu_study.train", *TINY, *LONG, f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr
    return run_dir


def test_a_signal_to_the_whole_process_group_with_loader_workers_checkpoints_and_resumes_exactly(
    tmp_path, straight
):
    """A cluster signals the job's whole process group: the loader's workers ignore it, the trainer checkpoints at
    the end of its step and exits 0, and the re-run ends bit for bit where an uninterrupted run ends."""
    cmd = [sys.executable, "-m", "glu_study.train", *TINY, *LONG, "trainer.loader_workers=2"]
    proc = subprocess.Popen(
        [*cmd, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a batch job's
    )
    _wait_for(lambda: bool(list_checkpoints(tmp_path)), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGTERM: checkpoint saved at step" in out and "Traceback" not in err
    r = run_cli("glu_study.train", *TINY, *LONG, "trainer.loader_workers=2", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert_same_run(straight, tmp_path)


def test_resume_after_sigkill_is_exact(tmp_path, straight):
    proc = _popen_train(tmp_path, *LONG)
    _wait_for(lambda: list_checkpoints(tmp_path) and list_checkpoints(tmp_path)[-1][0] >= 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "summary.json").exists(), "the run finished before it could be killed"
    r = run_cli("glu_study.train", *TINY, *LONG, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    assert_same_run(straight, tmp_path)


def test_kill_during_checkpoint_writes_never_leaves_a_broken_checkpoint(tmp_path):
    """Kill repeatedly while checkpointing every step; every checkpoint resume can see must load."""
    overrides = ["trainer.max_steps=30", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2"]
    for delay in (0.0, 0.13, 0.31):
        proc = _popen_train(tmp_path, *overrides)
        before = list_checkpoints(tmp_path)[-1][0] if list_checkpoints(tmp_path) else 0
        _wait_for(lambda b=before: list_checkpoints(tmp_path) and list_checkpoints(tmp_path)[-1][0] > b, proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for _, path in list_checkpoints(tmp_path):
            assert load_checkpoint(path)["state"]["step"] >= 1
    # a stale half-written temporary directory is ignored, then cleaned up by the next run
    stale = tmp_path / "checkpoints" / ".tmp-step_999-abc"
    stale.mkdir()
    (stale / "state.pt").write_bytes(b"\x80\x02truncated")
    r = run_cli("glu_study.train", *TINY, *overrides, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 30


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGTERM, 0, "SIGTERM"), (signal.SIGUSR2, 0, "SIGUSR2"), (signal.SIGINT, 130, "Ctrl-C (SIGINT)")],
    ids=["SIGTERM", "SIGUSR2", "SIGINT"],
)
def test_stop_signal_checkpoints_at_the_step_end_and_resumes_exactly(tmp_path, straight, sig, code, said):
    """Pre-emption exits 0; Ctrl-C exits 130 (README: "Stopping a run"). Either way: no traceback, a checkpoint
    at the end of the step, and the same command ends bit for bit where an uninterrupted run ends."""
    proc = _popen_train(tmp_path, *LONG)
    _wait_for(lambda: bool(list_checkpoints(tmp_path)), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"{said}: checkpoint saved at step" in out and "Traceback" not in err
    assert not (tmp_path / "summary.json").exists()
    step = list_checkpoints(tmp_path)[-1][0]
    assert 4 <= step < 40
    r = run_cli("glu_study.train", *TINY, *LONG, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0 and f"from step {step}" in r.stdout
    assert_same_run(straight, tmp_path)


def _submitit_tasks(folder: Path) -> list[int]:
    """The pids of the job processes submitit's local executor started for jobs under `folder`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and any(str(folder).encode() in c for c in cmd):
            pids.append(int(proc.name))
    return pids


def test_a_time_out_under_submitit_checkpoints_requeues_and_resumes_exactly(tmp_path, straight):
    """The Hydra submitit launcher's checkpoint protocol, on submitit's local executor: the SIGUSR2 SLURM sends
    before a time-out reaches the running job; it checkpoints at the step end, submitit requeues it, the new
    attempt resumes from that checkpoint, and the sweep ends as a success."""
    sweep_dir = tmp_path / "sweep"
    driver = subprocess.Popen(
        [sys.executable, "-m", "glu_study.train", "-m", *TINY, *LONG, "hydra/launcher=submitit_local",
         f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=job"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir = sweep_dir / "job"
    _wait_for(lambda: list_checkpoints(run_dir) and list_checkpoints(run_dir)[-1][0] >= 8, driver)
    tasks = _submitit_tasks(sweep_dir)
    assert len(tasks) == 1, tasks
    os.kill(
        tasks[0], signal.SIGUSR2
    )  # what the local executor (like SLURM) sends signal_delay_s before the end
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    logs = "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").rglob("*_log.*")))
    assert "SIGUSR2: checkpoint saved at step" in logs
    assert "Requeued job" in logs and "resuming" in logs
    assert "Job completed successfully" in logs
    assert_same_run(straight, run_dir)


def test_ctrl_c_stops_a_sweep_after_the_current_job(tmp_path):
    """Ctrl-C in a `-m` sweep: the running job checkpoints and the sweep ends there with 130; the next job never
    starts (re-running the sweep resumes the first and then runs the others)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glu_study.train",
            "-m",
            *TINY,
            *LONG,
            "seed=0,1",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = tmp_path / "relu-s0"
    _wait_for(lambda: bool(list_checkpoints(first)), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Ctrl-C (SIGINT): checkpoint saved at step" in out and "Traceback" not in err
    assert not (first / "summary.json").exists() and not (tmp_path / "relu-s1").exists()
