"""Preparation: token shards written once and memory-mapped, the same examples as before, a killed build that
resumes to the same bytes, one builder per cache entry, and the `prepare` command on C4's on-disk layout."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from glu_study.config import compose
from glu_study.data import PretrainData
from glu_study.data import shards as shards_module
from glu_study.data.shards import build_split, open_split
from glu_study.files import TMP_PREFIX
from tests.helpers import ROOT, TINY, run_cli

# The first batches of TINY's data (both seeds, an epoch boundary) and its test set, hashed with the code before
# the token shards existed (datasets.map into int64 Arrow): the shards must give exactly these examples.
FIRST_BATCHES = {"c049b527cb6ced43": "496f6e48fdcabc4d"}  # corpus fingerprint -> batches' hash


def batches_hash(data: PretrainData) -> str:
    h = hashlib.sha256()
    for seed in (0, 1):
        for start in (0, 32, data.info.train_examples - 5):
            b = data.train_batch(start, 8, seed)
            for k in ("input_ids", "labels"):
                h.update(b[k].numpy().tobytes())
    for b in data.eval_batches(64):
        h.update(b["labels"].numpy().tobytes())
    return h.hexdigest()[:16]


def test_the_token_stream_is_a_memory_map_with_the_same_examples_as_before(tiny_data):
    assert isinstance(tiny_data.train_chunks, np.memmap) and not tiny_data.train_chunks.flags.writeable
    expected = FIRST_BATCHES.get(tiny_data.info.corpus_fingerprint)
    if expected is None:
        pytest.skip(
            "another corpus (another Python release): the recorded hash is of corpus c049b527cb6ced43"
        )
    assert batches_hash(tiny_data) == expected


def docs_file(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "tensor", "module", "return", "value", "the", "of"]
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words, 20))}) + "\n" for _ in range(n)))
    return path


def test_a_killed_build_resumes_at_its_first_missing_shard_to_the_same_bytes(
    tiny_data, tmp_path, monkeypatch
):
    monkeypatch.setattr(shards_module, "SHARD_DOCUMENTS", 40)
    jsonl = docs_file(tmp_path / "docs.jsonl", 300)  # 8 shards
    model = Path(tiny_data.info.spiece_model)
    build_split(jsonl, model, 1000, tmp_path / "whole", "train", num_proc=2)
    whole, whole_counts = open_split(tmp_path / "whole", "train")
    # what a kill leaves: three finished shards, one half-written temporary, no joined stream
    part = tmp_path / "part"
    part.mkdir()
    offsets = shards_module.shard_offsets(jsonl)
    for i in range(3):
        target = part / f"train-{i:05d}"
        shards_module._tokenize_shard(
            (str(jsonl), *offsets[i], str(model), str(target), np.dtype(np.uint16), 1000)
        )
    (part / f"{TMP_PREFIX}train-00003.bin").write_bytes(b"\x01\x02")
    before = {p.name: p.stat().st_mtime_ns for p in part.glob("train-0000[0-2].bin")}
    build_split(jsonl, model, 1000, part, "train", num_proc=1)
    resumed, resumed_counts = open_split(part, "train")
    assert np.array_equal(resumed, whole) and np.array_equal(resumed_counts, whole_counts)
    assert (part / "train.bin").read_bytes() == (tmp_path / "whole" / "train.bin").read_bytes()
    assert whole.dtype == np.uint16 and int(whole_counts.sum()) == len(whole)
    assert before  # the finished shards were used, not rebuilt (they are joined, then removed)


def write_c4_layout(root: Path, n_train: int = 400, n_val: int = 60) -> Path:
    """A synthetic corpus in C4's on-disk layout and schema: en/c4-<split>.0000N-of-0000M.json.gz."""
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(3000)]
    en = root / "en"
    en.mkdir(parents=True)
    for split, n, files in (("train", n_train, 2), ("validation", n_val, 1)):
        for f in range(files):
            with gzip.open(en / f"c4-{split}.{f:05d}-of-{files:05d}.json.gz", "wt") as out:
                for i in range(n // files):
                    text = " ".join(rng.choice(words, 60))
                    out.write(
                        json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"u{i}"}) + "\n"
                    )
    return en


def c4_overrides(en: Path, cache: Path) -> list[str]:
    return [
        "data=c4",
        "data.dataset_path=json",
        "data.dataset_name=null",
        f"+data.data_files.train={en}/c4-train.*.json.gz",
        f"+data.data_files.validation={en}/c4-validation.*.json.gz",
        "data.vocab_size=150",
        "data.inputs_length=64",
        "data.eval_examples=4",
        "data.val_examples=4",
        f"data.cache_dir={cache}",
    ]


@pytest.mark.slow
def test_two_prepares_started_together_build_once_and_both_succeed(tmp_path):
    en = write_c4_layout(tmp_path / "c4")
    args = [sys.executable, "-m", "glu_study.prepare", *c4_overrides(en, tmp_path / "cache")]
    env = {**os.environ, "GLU_STUDY_CACHE": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ]
    time.sleep(0.3)
    procs.append(
        subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-500:] for r in results]
    lasts = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(lasts) == 1 and (Path(lasts.pop()) / "train.bin").is_file()
    assert sum("waiting for" in err for _, err in results) == 1  # one built, the other waited
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 1


@pytest.mark.slow
def test_a_run_trains_from_the_prepared_c4_shards(tmp_path):
    en = write_c4_layout(tmp_path / "c4")
    cfg = compose([*TINY[1:], *c4_overrides(en, tmp_path / "cache")])
    data = PretrainData(cfg.data, log=lambda *a: None)
    assert isinstance(data.train_chunks, np.memmap) and data.train_batch(0, 2, 0)["input_ids"].shape == (
        2,
        64,
    )
    assert sum(1 for _ in open(Path(data.info.corpus_dir) / "heldout.jsonl")) == 60  # C4's validation split


def test_prepare_bad_input_is_one_error_line(tmp_path):
    r = run_cli("glu_study.prepare", "data.vocab_size=0", f"data.cache_dir={tmp_path / 'cache'}")
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "data.vocab_size must be >= 1" in r.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone while we looked
        if ppid == pid:
            out.append(int(stat.parent.name))
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The processes of `pids` still alive (not zombies) after up to `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
            except OSError:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.1)


@pytest.mark.slow  # a kill/poll loop and three prepare processes (~30 s)
def test_a_prepare_killed_mid_way_and_run_again_gives_the_same_shards(tmp_path):
    """A real SIGKILL of `prepare` while it tokenises (small shards, one process), then the same command."""
    en = write_c4_layout(tmp_path / "c4", n_train=4000, n_val=60)
    code = (
        "import sys; import glu_study.data.shards as s; s.SHARD_DOCUMENTS = 50; "
        "from glu_study.prepare import main; sys.exit(main(sys.argv[1:]))"
    )
    args = [sys.executable, "-c", code, *c4_overrides(en, tmp_path / "cache"), "data.num_proc=1"]
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tokens = tmp_path / "cache" / "tokens"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tokens.glob("*/train-*.bin"))) < 5:
        time.sleep(0.05)
    workers = children(p.pid)  # the tokenising pool's worker (and multiprocessing's resource tracker)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not list(tokens.glob("*/train.json"))  # killed before it finished
    assert workers and wait_gone(workers, 30) == []  # no orphan left waiting for work, holding its memory
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    whole = subprocess.run(
        [*args[:3], *c4_overrides(en, tmp_path / "fresh"), "data.num_proc=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert whole.returncode == 0, whole.stderr
    a, b = Path(again.stdout.strip().splitlines()[-1]), Path(whole.stdout.strip().splitlines()[-1])
    assert (a / "train.bin").read_bytes() == (b / "train.bin").read_bytes()


def test_a_verified_stream_is_not_hashed_again_until_it_changes(tiny_data, tmp_path):
    """The stamp (README: "spares later processes the hash while the files are unchanged"): a check leaves
    <split>.verified; with sizes and modification times as stamped the hash is skipped — shown by a byte changed
    behind the stamp's back (its modification time put back) going unseen — and a normal write, which moves the
    modification time, is hashed and refused."""
    from glu_study.data.shards import verify_split
    from glu_study.errors import DamagedCacheError

    out = tmp_path / "tokens"
    build_split(
        docs_file(tmp_path / "docs.jsonl", 100), Path(tiny_data.info.spiece_model), 1000, out, "train", 1
    )
    verify_split(out, "train")
    assert (out / "train.verified").is_file()
    stream = out / "train.bin"
    stat = stream.stat()
    data = bytearray(stream.read_bytes())
    data[0] ^= 0xFF
    stream.write_bytes(bytes(data))
    os.utime(stream, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify_split(out, "train")  # unchanged as far as the stamp can tell: not hashed
    stream.write_bytes(bytes(data))  # a write moves the modification time
    with pytest.raises(DamagedCacheError, match="does not match the SHA-256"):
        verify_split(out, "train")
