"""Faults of the machine at the data's and the run directory's edges, through the CLI: each is one `error:` line
naming the file and what to do, exit 4 (glu_study.errors.EXIT_ENVIRONMENT), and no run directory left when it
comes before training. A cached file changed by a single byte since it was built is refused, never used."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers import TINY, run_cli


def train(run_dir: Path, cache: Path, *overrides: str, **kwargs):
    env = {**os.environ, "GLU_STUDY_CACHE": str(cache)}
    return run_cli("glu_study.train", *TINY, *overrides, f"hydra.run.dir={run_dir}", env=env, **kwargs)


def assert_fault(result, *fragments: str) -> str:
    """Exit 4, one `error:` line with the fragments, no traceback (a progress bar may come before it)."""
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert result.returncode == 4, result.stderr
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def cache(tmp_path, tiny_data, session_cache) -> Path:
    """A private copy of the session's built cache (corpus, tokenizer, token streams), to damage."""
    copy = tmp_path / "cache"
    shutil.copytree(session_cache, copy, ignore=shutil.ignore_patterns("locks"))
    return copy


def token_file(cache: Path, name: str) -> Path:
    found = sorted(cache.glob(f"tokens/*/{name}"))
    assert found, name
    return found[0]


def test_a_token_stream_changed_in_place_is_refused(tmp_path, cache):
    stream = token_file(cache, "train.bin")
    data = bytearray(stream.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte, same size: nothing but a checksum can tell
    stream.write_bytes(bytes(data))
    line = assert_fault(train(tmp_path / "run", cache), str(stream), "does not match the SHA-256")
    assert f"remove {stream.parent} and run the same command again" in line
    assert not (tmp_path / "run").exists()


def test_a_full_disk_during_a_checkpoint_is_one_error_line(tmp_path, cache):
    """The file-size limit makes the checkpoint's write fail as a full disk does (the OS refuses the write)."""

    def limit_file_size():
        signal.signal(
            signal.SIGXFSZ, signal.SIG_IGN
        )  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = train(tmp_path / "run", cache, preexec_fn=limit_file_size)
    assert_fault(
        result, f"could not write checkpoint {tmp_path / 'run' / 'checkpoints' / 'step_3'}", "File too large"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_truncated_token_stream_is_refused(tmp_path, cache):
    stream = token_file(cache, "heldout.bin")
    with open(stream, "r+b") as f:
        f.truncate(stream.stat().st_size // 2)
    assert_fault(train(tmp_path / "run", cache), str(stream), "is damaged", "expected")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_damaged_tokenizer_is_refused(tmp_path, cache):
    (model,) = cache.glob("tokenizer/*/spiece.model")
    model.write_bytes(model.read_bytes()[:100])
    assert_fault(train(tmp_path / "run", cache), str(model), "is damaged")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_cache_path_under_a_file_is_one_error_line(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache's parent should be\n")
    line = assert_fault(train(tmp_path / "run", blocker / "cache"), "the data cache cannot be used at")
    assert str(blocker) in line and "not a directory" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_damaged_corpus_is_refused_before_it_is_tokenised(tmp_path, cache):
    """The token streams are rebuilt from the corpus (removed, as the error lines say to); a corpus changed since
    it was built is refused first, naming it."""
    (corpus,) = {p.parent for p in cache.glob("corpus/*/train.jsonl")} & {
        p.parent for p in cache.glob("corpus/*/stats.json")
    }
    for tokens in cache.glob("tokens/*"):
        shutil.rmtree(tokens)
    with open(corpus / "train.jsonl", "a") as f:
        f.write('{"text": "a line the corpus was not built with"}\n')
    assert_fault(train(tmp_path / "run", cache), str(corpus), "is damaged", "train.jsonl")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (errno.EROFS, "Read-only file system"),
        (errno.EACCES, "Permission denied"),
        (errno.ENOSPC, "no space left on the device"),
    ],
)
def test_cache_faults_root_cannot_provoke_say_the_file_and_what_to_do(tmp_path, code, said):
    """A read-only or unwritable cache cannot be provoked as root (the tests' user in CI), and a full disk not
    safely: the same mapping as the not-a-directory case above, from the OS error it would raise."""
    from glu_study.data.prepared import CACHE_ERRNOS, cache_fault

    path = tmp_path / "cache" / "locks" / "data-x.lock"
    assert code in CACHE_ERRNOS
    message = cache_fault(OSError(code, os.strerror(code), str(path)), tmp_path / "cache")
    assert str(path) in message and said in message
    assert "GLU_STUDY_CACHE" in message
