"""Writing files so that nobody ever reads half of one, and naming cached things by their inputs.

A killed process (SIGKILL, a full disk, a pre-empted node) must never leave a file or directory that a later
run would trust. Everything the project writes for keeps — checkpoints, exports, caches, records — is written
to a temporary sibling and renamed into place, which POSIX makes atomic within one file system.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"  # what a killed writer leaves behind; safe to delete when no writer is running


@contextmanager
def atomic_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a new temporary sibling of `final`; once the block finishes, rename it to `final`.

    `replace=True` replaces an existing `final` (a checkpoint saved again, a new export); otherwise an existing
    one is kept (another process built the same cache entry first). If the block raises, nothing is renamed.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700: give the result the usual permissions
    try:
        yield tmp
        # Some writers make private temporary files and rename them (safetensors: 0600): the usual permissions
        # for every file, as for the directory.
        for path in tmp.rglob("*"):
            if path.is_file() and not path.is_symlink():
                os.chmod(path, 0o666 & ~current_umask())
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a hidden sibling and rename: a reader (or a killed writer) never sees half a file. The sibling's
    name is unique, so that two processes writing the same file (torchrun ranks, array jobs) never share one."""
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def fsync_write(path: Path, write) -> None:
    """Open `path` for binary writing, call `write(file)`, and make sure the bytes reached the disk."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def fingerprint(*parts) -> str:
    """A short, stable key for a cache entry: the hash of everything the entry was computed from."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stable_bucket(key: str, buckets: int = 10_000) -> int:
    """A string's bucket in [0, buckets), the same on every machine and Python (unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % buckets


@contextmanager
def build_lock(path: Path, what: str, log=print) -> Iterator[None]:
    """One builder of a cache entry at a time, across processes and machines sharing the file system: an
    exclusive lock on `path` for the block. A second caller says whom it waits for (the holder writes its host
    and pid into the file), waits, and then finds the entry built. The OS releases the lock when its holder
    exits or is killed, so a dead builder never blocks the next one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            log(f"waiting for {holder} to finish building {what} ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def process_pool(workers: int):
    """A process pool whose workers are *spawned*, not forked. A forked worker inherits every open descriptor,
    the cache's build lock (build_lock) included, so a worker orphaned by a killed builder would go on holding
    the lock and the next builder would wait for it forever; a spawned one starts clean. Each worker also exits
    when its builder dies and ignores Ctrl-C (exit_with_parent): the terminal sends SIGINT to the whole process
    group, and the builder alone decides — on any exception, Ctrl-C included, the work not yet started is
    cancelled, the pieces being built finish (each is renamed into place whole), and the exception goes on."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=exit_with_parent
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def exit_with_parent() -> None:
    """Pool-worker initializer: exit as soon as the process that started this one is gone (a SIGKILL, an
    out-of-memory kill). The pool's task queue keeps a pipe's write end open in every worker, so an orphan never
    sees end-of-file: it would wait for its next task forever, holding its memory. Ctrl-C is the builder's to
    handle (process_pool), so a worker ignores SIGINT."""
    import multiprocessing
    import signal
    import threading
    from multiprocessing.connection import wait

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing: nothing to watch
        return

    def watch() -> None:
        wait([parent.sentinel])  # readable once the parent has exited
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
