"""What tests share besides fixtures: the repository root, the tiny-but-real settings, running a command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# Small-but-real settings every training test starts from (the real conf tree, a few overrides).
TINY = [
    "data.packages=[]",
    "data.vocab_size=1000",
    "data.eval_examples=16",
    "data.val_examples=16",
    "data.inputs_length=64",
    "trainer.batch_size=8",
    "trainer.max_steps=6",
    "trainer.eval_every=3",
    "trainer.checkpoint_every=3",
    "trainer.log_every=1",
    "trainer.warmup_steps=10",
    "logger=disabled",
]


def final_records(finals: dict[str, list[float]], group: str) -> list:
    """Synthetic run records for the statistics: each variant's final figure per seed (seed = list index)."""
    from glu_study.reporting.records import RunRecord

    return [
        RunRecord(f"{v}-s{k}", v, k, "t5_tiny", group, 1, 1, 1, 900, 9, f, None, None)
        for v, fs in finals.items()
        for k, f in enumerate(fs)
    ]


def run_cli(*args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ...` in a child process (from the repository root unless cwd= says), capturing output."""
    kwargs.setdefault("cwd", ROOT)
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def preset_sweep(experiment: str) -> dict[str, list[str]]:
    """The preset's sweep (hydra.sweeper.params): what `-m experiment=<name>` expands to."""
    from glu_study.config import compose

    full = compose([f"experiment={experiment}"], with_hydra=True)
    return {k: str(v).split(",") for k, v in full.hydra.sweeper.params.items()}


def sweep(directory: Path, *overrides: str) -> Path:
    """A real `-m` sweep of the trainer on the tiny settings into `directory` (the report tests' fixtures)."""
    r = run_cli("glu_study.train", "-m", *TINY, *overrides, f"hydra.sweep.dir={directory}")
    assert r.returncode == 0, r.stderr
    return directory


def cells(table: str, *first: str) -> list[str]:
    """The cells of the markdown table row whose first cells are `first`."""
    prefix = "| " + " | ".join(first) + " |"
    line = next(ln for ln in table.splitlines() if ln.startswith(prefix))
    return [c.strip() for c in line.strip("|").split("|")]


def numbers(cell: str) -> list[float]:
    """The signed decimal numbers in a table cell or a sentence, in order."""
    return [float(x) for x in re.findall(r"[+-]?\d+\.\d+(?:e-?\d+)?", cell)]


# Trainer settings added after a committed study was run; they do not change the maths (the resume comparison
# ignores them too), so the study's records predate them and the preset's default stands for them.
ADDED_SINCE = {"dist_timeout_min", "loader_workers", "eval_dense_from", "eval_dense_every"}


def assert_trained_by(recorded: dict, preset: dict) -> None:
    """A committed run's trainer settings are the preset's (except settings added since, at their defaults, and
    those a resume may change: how often it logs, evaluates, checkpoints, and its CPU threads)."""
    from glu_study.training.run_dir import RESUMABLE_CHANGES

    assert set(preset) - set(recorded) <= ADDED_SINCE, set(preset) - set(recorded)
    assert {k: v for k, v in recorded.items() if k not in RESUMABLE_CHANGES} == {
        k: v for k, v in preset.items() if k in recorded and k not in RESUMABLE_CHANGES
    }
