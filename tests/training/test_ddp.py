"""Data-parallel training through torchrun (gloo on CPU), and the SLURM launcher config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glu_study.config import compose
from glu_study.training.run_dir import read_metrics
from tests.helpers import ROOT, TINY, run_cli

STEPS = ["trainer.max_steps=8", "trainer.eval_every=4", "trainer.checkpoint_every=4", "trainer.log_every=2"]


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["eval/log_perplexity"]) for r in read_metrics(run_dir) if "eval/log_perplexity" in r
    ]


@pytest.mark.slow
def test_torchrun_two_ranks_matches_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    r = run_cli("glu_study.train", *TINY, *STEPS, f"hydra.run.dir={single}")
    assert r.returncode == 0, r.stderr
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "glu_study.train",
            *TINY,
            *STEPS,
            "logger=offline",
            f"hydra.run.dir={ddp}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (single, ddp))
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert (a["steps"], a["tokens_seen"]) == (b["steps"], b["tokens_seen"])  # same global batch
    ea, eb = _evals(single), _evals(ddp)
    assert [s for s, _ in ea] == [s for s, _ in eb] == [0, 4, 8]
    for (_, x), (_, y) in zip(ea, eb, strict=True):
        assert y == pytest.approx(x, abs=2e-4)
    # rank 0 alone writes: one metrics stream (no duplicated events), one W&B run, no stray run directories
    steps = [rec["step"] for rec in read_metrics(ddp) if "train/loss" in rec]
    assert steps == [2, 4, 6, 8]
    assert len(list((ddp / "wandb").glob("offline-run-*"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]


def test_slurm_launcher_config_composes():
    cfg = compose(["hydra/launcher=slurm", "experiment=table1_paper"], with_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.timeout_min > 0 and cfg.hydra.sweeper.params.ffn.count(",") == 7
    # the time-out protocol is explicit: SIGUSR2 120 s before the end, requeues allowed (StopSignals hands over)
    assert launcher.signal_delay_s == 120 and launcher.max_num_timeout >= 1
    assert cfg.trainer.optimizer == "adafactor_device" and cfg.trainer.compile  # the GPU preset's, kept
