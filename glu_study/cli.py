"""The command line's contract where Hydra runs the show: exit 0 (finished, or pre-empted after a checkpoint),
2 (bad input: one `error:` line, nothing written), 3 (non-finite loss), 4 (a fault of the machine: cache, disk),
130 (Ctrl-C), as glu_study.errors says.

`check_overrides()` composes the config from the command line as Hydra is about to, so a mistake Hydra would
report in its own way (an empty `ffn=`, `seed=abc`, a mistyped key) is one `error:` line and exit 2 instead.
`guarded()` runs a command's body under glu_study.errors.cli_exit_codes. In a `-m` sweep a failed job (exit 2 or 3)
must not end the sweep, so there it returns a `JobFailure` instead of exiting (any other exit, such as submitit's
requeue after a time-out, stays an exit); `SweepReport` (a Hydra callback, conf/config.yaml)
counts them and makes the sweep's exit status the number of failed jobs. `RunDirCheck` refuses a run directory that
is a file or cannot be written before Hydra creates it (Hydra makes the directory before any of our code runs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from glu_study.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_NONFINITE, cli_exit_codes


@dataclass
class JobFailure:
    """What a failed job of a sweep returns (its `error:` line has been printed)."""

    code: int


def check_overrides(config_name: str, argv: list[str]) -> None:
    """One error line and exit 2 if the overrides do not compose (a sweep, --help or --cfg: left to Hydra)."""
    if any(a.startswith("-") for a in argv):
        return
    from glu_study.config import compose

    try:
        compose(argv, config_name=config_name)
    except Exception as e:  # Hydra's and OmegaConf's composition errors share no base class
        cause = e.__cause__ or e.__context__
        detail = f": {str(cause).splitlines()[0]}" if cause is not None and str(cause) else ""
        message = " ".join(str(e).split()).split(" Config search path:")[0]  # Hydra appends its search path
        print(f"error: {message}{detail}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def guarded(body: Callable[[], Any], cleanup: Callable[[], None] = lambda: None) -> Any:
    """`body()` under the exit-code contract; in a sweep, a failure becomes a JobFailure and the sweep goes on."""
    try:
        with cli_exit_codes(cleanup):
            return body()
    except SystemExit as e:
        if e.code not in (EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_ENVIRONMENT) or not in_sweep():
            # Not a failure of ours: pre-emption (exit 0) stops a whole local sweep, whose jobs resume when it
            # is run again; under submitit a requeue exits with submitit's own status, and must stay an exit.
            raise
        return JobFailure(int(e.code))


def run_dir_problem(path: Path) -> str | None:
    """Why `path` cannot be a run directory (None if it can): it is a file, or it cannot be created or written."""
    if path.exists() and not path.is_dir():
        return f"run directory {path} exists and is not a directory"
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return f"run directory {path} cannot be written ({existing} is not writable)"
    return None


class RunDirCheck(Callback):
    """Refuse a bad `hydra.run.dir` / `hydra.sweep.dir` with one error line, before Hydra writes anything."""

    def on_run_start(self, config, **kwargs) -> None:
        self._check(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(Path(str(config.hydra.sweep.dir)))

    def _check(self, path: Path) -> None:
        if problem := run_dir_problem(path.absolute()):
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT)


class SweepReport(Callback):
    """Counts a sweep's failed jobs; the sweep exits with their number (0 when every job finished)."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.jobs = 0

    def on_job_end(self, config, job_return, **kwargs) -> None:
        self.jobs += 1
        failed = job_return.status == JobStatus.FAILED or isinstance(job_return.return_value, JobFailure)
        if failed:
            self.failed.append(" ".join(job_return.overrides or []) or str(job_return.task_name))

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.failed:
            listed = "; ".join(self.failed)
            print(f"error: {len(self.failed)} of {self.jobs} jobs failed: {listed}", file=sys.stderr)
            raise SystemExit(min(len(self.failed), 255))
