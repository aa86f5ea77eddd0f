"""Token streams written once as fixed-width unsigned integers, then memory-mapped (nanoGPT's `prepare.py` way).

A split (train.jsonl / heldout.jsonl of a corpus) is tokenised in shards of SHARD_DOCUMENTS documents, each
document followed by EOS (our packing; T5's `reduce_concat_tokens` uses no separator), in parallel over
`num_proc` processes. Each shard is written to a temporary file and renamed, with its token counts beside it, so
a killed build resumes at the first missing shard and never reads a partial one. The finished shards are then
joined into `<split>.bin` (uint16 when the vocabulary fits, else uint32) plus `<split>.counts.npy` (how often
each id occurs: the unigram floor needs no pass over the stream at start-up) and `<split>.json`, again through
a temporary name. `<split>.json` records the SHA-256 of the stream and the counts; every process that opens
them checks both first (verify_split), so a file changed since it was built is an error, never a silent run.
Readers get `np.memmap`s: a training process's memory does not grow with the corpus.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from glu_study.data.corpora import verify_corpus
from glu_study.data.spans import EOS_ID
from glu_study.errors import DamagedCacheError
from glu_study.files import TMP_PREFIX, file_digest, process_pool, write_json_atomic

SHARD_DOCUMENTS = 20_000  # the unit of parallel work and of resumption


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def shard_offsets(jsonl: Path) -> list[tuple[int, int]]:
    """(byte offset, documents) of each shard of a JSON-lines file: one sequential pass, no parsing."""
    offsets, start, count, position = [], 0, 0, 0
    with open(jsonl, "rb") as f:
        for line in f:
            count += 1
            position += len(line)
            if count == SHARD_DOCUMENTS:
                offsets.append((start, count))
                start, count = position, 0
    if count:
        offsets.append((start, count))
    return offsets


def _tokenize_shard(args) -> int:
    """Worker: tokenise one shard's documents and write `<shard>.bin` and its counts, each renamed into place."""
    jsonl, offset, documents, model_file, target, dtype, vocab_size = args
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_file)
    with open(jsonl, "rb") as f:
        f.seek(offset)
        texts = [json.loads(f.readline())["text"] for _ in range(documents)]
    ids = np.fromiter((t for doc in sp.encode(texts) for t in (*doc, EOS_ID)), dtype=np.int64).astype(dtype)
    counts = np.bincount(ids, minlength=vocab_size).astype(np.int64)
    target = Path(target)
    for suffix, write in ((".counts.npy", lambda p: np.save(p, counts)), (".bin", ids.tofile)):
        tmp = target.with_name(f"{TMP_PREFIX}{target.name}{suffix}")
        with open(tmp, "wb") as out:
            write(out)
        os.replace(tmp, target.with_name(target.name + suffix))
    return len(ids)


def build_split(
    jsonl: Path, model_file: Path, vocab_size: int, out_dir: Path, split: str, num_proc: int, log=print
) -> None:
    """`<out_dir>/<split>.bin` (+ counts, meta) from a corpus split, reusing the shards a killed build left."""
    final = out_dir / f"{split}.json"
    if final.is_file():
        return
    dtype = token_dtype(vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    offsets = shard_offsets(jsonl)
    targets = [out_dir / f"{split}-{i:05d}" for i in range(len(offsets))]
    todo = [
        (str(jsonl), off, n, str(model_file), str(t), dtype, vocab_size)
        for (off, n), t in zip(offsets, targets, strict=True)
        if not (t.with_name(t.name + ".bin").is_file() and t.with_name(t.name + ".counts.npy").is_file())
    ]
    if todo:
        verify_corpus(jsonl.parent)
        log(f"data: tokenising the {split} split into {out_dir} ({len(todo)} shards, {num_proc} processes)")
        with process_pool(max(1, min(num_proc, len(todo)))) as pool:
            done = pool.map(_tokenize_shard, todo)
            for _ in tqdm(done, total=len(todo), desc=f"tokenizing {split} ({len(offsets)} shards)"):
                pass
    join_shards(targets, out_dir, split, dtype, vocab_size)


STREAM_FILES = (".bin", ".counts.npy")  # what a split's meta file (<split>.json) records the SHA-256 of


def verify_split(out_dir: Path, split: str) -> dict:
    """The split's meta file, once its stream and counts match it: their size and the SHA-256 recorded when they
    were built (any changed byte, a truncated file), else DamagedCacheError naming the file and the rebuild.

    Hashing is ~1 s per GB on one core (the C4 preset's training stream: ~10 GB), so a successful check leaves a
    stamp, <split>.verified, of the files' sizes and modification times: while they are unchanged, later
    processes (array jobs, torchrun ranks) skip the hash. Writing a file changes its modification time, so a
    file changed in place is hashed, and refused, again. An entry built before the digests were recorded gets
    them now (checked for size first)."""
    rebuild = f"remove {out_dir} and run the same command again to rebuild it"
    meta_path = out_dir / f"{split}.json"
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
        tokens = int(meta["tokens"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedCacheError(f"{meta_path} cannot be read ({e}): {rebuild}") from None
    stream = out_dir / f"{split}.bin"
    size = stream.stat().st_size if stream.is_file() else None
    if size != tokens * dtype.itemsize:
        found = "missing" if size is None else f"{size:,} bytes"
        raise DamagedCacheError(
            f"{stream} is damaged ({found}, {tokens * dtype.itemsize:,} expected): {rebuild}"
        )
    names = [f"{split}{suffix}" for suffix in STREAM_FILES]
    for name in names:
        if not (out_dir / name).is_file():
            raise DamagedCacheError(f"{out_dir / name} is missing: {rebuild}")
    stamp_path = out_dir / f"{split}.verified"
    stamp = {n: [(st := (out_dir / n).stat()).st_size, st.st_mtime_ns] for n in names}
    if stamp_path.is_file() and json.loads(stamp_path.read_text() or "null") == stamp:
        return meta
    recorded = meta.get("sha256")
    if recorded is None:  # built before digests were recorded: record them (the same bytes give the same
        meta["sha256"] = {n: file_digest(out_dir / n) for n in names}  # digests, whoever writes them)
        keep_if_writable(meta_path, meta)
    for name, digest in recorded.items() if recorded else ():
        path = out_dir / name
        if not path.is_file() or file_digest(path) != digest:
            raise DamagedCacheError(
                f"{path} is damaged (it does not match the SHA-256 recorded when it was built): {rebuild}"
            )
    keep_if_writable(stamp_path, stamp)
    return meta


def keep_if_writable(path: Path, obj) -> None:
    """Record what saves later work; a cache shared read-only just does not keep it."""
    try:
        write_json_atomic(path, obj)
    except OSError:
        pass


def join_shards(targets: list[Path], out_dir: Path, split: str, dtype: np.dtype, vocab_size: int) -> None:
    """The shards in order as one stream, its counts and its meta file, each renamed into place; meta last."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    tmp = out_dir / f"{TMP_PREFIX}{split}.bin"
    tokens = 0
    with open(tmp, "wb") as out:
        for t in targets:
            data = np.fromfile(t.with_name(t.name + ".bin"), dtype=dtype)
            data.tofile(out)
            tokens += len(data)
            counts += np.load(t.with_name(t.name + ".counts.npy"))
    os.replace(tmp, out_dir / f"{split}.bin")
    np.save(out_dir / f"{TMP_PREFIX}{split}.counts.npy", counts)
    os.replace(out_dir / f"{TMP_PREFIX}{split}.counts.npy", out_dir / f"{split}.counts.npy")
    meta = {"tokens": tokens, "dtype": dtype.name, "shards": len(targets), "vocab_size": vocab_size}
    meta["sha256"] = {
        f"{split}{suffix}": file_digest(out_dir / f"{split}{suffix}") for suffix in STREAM_FILES
    }
    (out_dir / f"{TMP_PREFIX}{split}.json").write_text(json.dumps(meta))
    os.replace(out_dir / f"{TMP_PREFIX}{split}.json", out_dir / f"{split}.json")
    for t in targets:  # the joined stream holds them now
        for suffix in (".bin", ".counts.npy"):
            t.with_name(t.name + suffix).unlink()


def open_split(out_dir: Path, split: str) -> tuple[np.memmap, np.ndarray]:
    """(the split's token stream as a read-only memory map, its token counts), each file first checked against
    the SHA-256 recorded when it was built (verify_split)."""
    meta = verify_split(out_dir, split)
    dtype = np.dtype(meta["dtype"])
    if meta["tokens"] == 0:  # an empty file cannot be mapped
        return np.zeros(0, dtype=dtype), np.load(out_dir / f"{split}.counts.npy")
    stream = np.memmap(out_dir / f"{split}.bin", dtype=dtype, mode="r", shape=(meta["tokens"],))
    return stream, np.load(out_dir / f"{split}.counts.npy")
