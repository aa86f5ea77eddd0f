"""What tests share besides fixtures: the repository root, the tiny-but-real settings, running a command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# Small-but-real settings every training test starts from (the real conf tree, a few overrides).
TINY = [
    "data.packages=[]",
    "data.vocab_size=1000",
    "data.eval_examples=16",
    "data.inputs_length=64",
    "trainer.batch_size=8",
    "trainer.max_steps=6",
    "trainer.eval_every=3",
    "trainer.checkpoint_every=3",
    "trainer.log_every=1",
    "trainer.warmup_steps=10",
    "logger=disabled",
]


def run_cli(*args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ...` in a child process (from the repository root unless cwd= says), capturing output."""
    kwargs.setdefault("cwd", ROOT)
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
