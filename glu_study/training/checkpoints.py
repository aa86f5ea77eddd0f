"""Checkpoints: everything an exact resume needs, written so that `step_<N>` always means complete.

A checkpoint is `<dir>/checkpoints/<name>/state.pt` holding the model, optimizer and schedule state, every RNG
and the loop's own state (step, data position, W&B id, ...), plus the resolved config it was trained with, and
`state.sha256`, the file's checksum. It is written into a temporary directory, fsync'd, and renamed
(glu_study.files.atomic_dir), so a kill at any moment leaves either the previous checkpoints or the new one.
What a rename cannot prevent — a disk that filled or a file damaged later — the checksum detects: resuming takes
the newest checkpoint that verifies and loads, and moves a damaged one aside (never deletes it).
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from glu_study.errors import DataError, EnvironmentFault
from glu_study.files import TMP_PREFIX, atomic_dir, file_digest, fsync_write
from glu_study.training.run_dir import refuse_different
from glu_study.training.state import RunState

_STEP_DIR = re.compile(r"^step_(\d+)$")


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete periodic checkpoints under `directory`, oldest first."""
    ckpt_dir = directory / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(x for x in found if (x[1] / "state.pt").is_file())


class DamagedCheckpointError(RuntimeError):
    pass


def write_failure(e: BaseException) -> str:
    """The OS's reason for a failed write, from an OSError anywhere in the exception's chain (torch wraps it in
    a RuntimeError), else the exception's first line."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, after checking them against its checksum (DamagedCheckpointError if not)."""
    state, digest = path / "state.pt", path / "state.sha256"
    if digest.is_file() and file_digest(state) != digest.read_text().strip():
        raise DamagedCheckpointError(f"{state} does not match its checksum")
    try:
        return torch.load(state, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or overwritten file fails inside torch's unpickler in many ways
        raise DamagedCheckpointError(f"{state} cannot be loaded ({type(e).__name__}: {e})") from None


def set_aside(path: Path) -> Path:
    """Move a damaged checkpoint out of the way (kept for inspection): checkpoints/damaged-<name>[-<k>]."""
    target = path.with_name(f"damaged-{path.name}")
    k = 1
    while target.exists():
        target, k = path.with_name(f"damaged-{path.name}-{k}"), k + 1
    path.rename(target)
    return target


def newest_loadable(directory: Path, log=print, *, move: bool = True) -> tuple[int, Path, dict] | None:
    """(step, path, contents) of the newest checkpoint that verifies and loads. Damaged ones are skipped and, with
    `move` (the one writer of the directory), set aside."""
    for step, path in reversed(list_checkpoints(directory)):
        try:
            return step, path, load_checkpoint(path)
        except DamagedCheckpointError as e:
            where = f"moved it to {set_aside(path)}" if move else "skipped it"
            log(f"warning: {e}; {where}, trying an older checkpoint")
    return None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def refuse_other_data(directory: Path, saved: dict | None, now: dict | None) -> None:
    """A DataError when the checkpoint was trained on other data than this process reads (the same config on a
    machine with another Python builds another corpus). Checkpoints from before the data was recorded pass."""
    if saved and now and saved != now:
        diffs = ", ".join(
            f"{k} {saved.get(k)} -> {now.get(k)}" for k in sorted(now) if saved.get(k) != now.get(k)
        )
        raise DataError(
            f"{directory} was trained on other data than this machine builds ({diffs}): resume it where the same "
            "corpus and tokenizer are built (the same Python and pinned packages), or start another run directory"
        )


class Checkpointer:
    """Saves and restores one run's complete state under `<directory>/checkpoints/`.

    It holds the objects a checkpoint is made of — model, optimizer, schedule and the loop's typed `state`
    (glu_study.training.state, restored in place on resume) — and the resolved config, so that a resume can
    refuse a directory trained differently; and `data`, what the run reads (its corpus's and tokenizer's
    fingerprints), so that a resume on a machine that builds other data is refused rather than continued on it.
    `enabled=False` (DDP ranks other than 0) makes saving a no-op.
    """

    def __init__(
        self,
        directory: Path,
        model,
        optimizer,
        schedule,
        state: RunState,
        config: dict,
        *,
        data: dict | None = None,
        enabled=True,
    ):
        self.directory, self.model, self.optimizer, self.schedule = directory, model, optimizer, schedule
        self.state, self.config, self.data, self.enabled = state, config, data, enabled

    def save(self, name: str, keep: int | None = None) -> Path | None:
        """Write checkpoints/<name>; then keep only the newest `keep` periodic ones (None: delete nothing)."""
        if not self.enabled:
            return None
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": rng_state(),
            "state": self.state.state_dict(),
            "config": self.config,
            "data": self.data,
        }
        final = self.directory / "checkpoints" / name
        try:
            with atomic_dir(final, replace=True) as tmp:  # replace: SIGTERM right after a periodic save
                fsync_write(tmp / "state.pt", lambda f: torch.save(payload, f))
                (tmp / "state.sha256").write_text(file_digest(tmp / "state.pt") + "\n")
        except (OSError, RuntimeError) as e:  # a full disk: torch's writer says "unexpected pos", chained
            raise EnvironmentFault(
                f"could not write checkpoint {final} ({write_failure(e)}); the checkpoints before it are intact: "
                "free space (or fix the file system) and run the same command to resume"
            ) from None
        if keep is not None:
            for _, old in list_checkpoints(self.directory)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def resume(self, hint: str, log=print) -> bool:
        """Restore the newest checkpoint that loads, in place; False when there is none.

        A checkpoint whose config differs from this run's (glu_study.training.run_dir.refuse_different) is a
        ConfigError naming the keys, ending in `hint`. Leftovers of saves killed half-way are removed first (by
        rank 0).
        """
        if self.enabled:
            for stale in (self.directory / "checkpoints").glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)
        found = newest_loadable(self.directory, log, move=self.enabled)
        if found is None:
            return False
        ckpt = found[2]
        refuse_different(self.directory, ckpt["config"], self.config, hint)
        refuse_other_data(self.directory, ckpt.get("data"), self.data)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        set_rng_state(ckpt["rng"])
        self.state.load_state_dict(ckpt["state"])
        return True
