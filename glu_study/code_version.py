"""Which code made a record: the git commit of the checkout a run ran from, and whether its tree was clean.

A study is only comparable across its runs if they all ran the same code (one numeric setting per study), so
every run writes this into summary.json and W&B (the `derived` config). W&B's own git capture is off
(glu_study.training.tracking), because offline runs and sweeps from a frozen `git worktree` must record it too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]  # the repository the package is installed from (editable)


def code_version(checkout: Path = CHECKOUT) -> dict:
    """{"code_commit": 40 hex digits, "code_clean": no tracked change and no untracked file outside .gitignore};
    both None where the package does not run from a git checkout (or git is missing)."""
    try:
        commit = git(checkout, "rev-parse", "HEAD")
        changes = git(checkout, "status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return {"code_commit": None, "code_clean": None}
    return {"code_commit": commit, "code_clean": changes == ""}


def git(checkout: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()
