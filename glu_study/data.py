"""Span-corruption pretraining data, as in T5 (Raffel et al. 2019) and the GLU-variants paper.

Read top to bottom:
  1. T5's span-corruption arithmetic and noise mask (`compute_input_and_target_lengths`,
     `random_spans_noise_mask`, `span_corrupt`), ported from t5/data/preprocessors.py to numpy.
  2. Corpora: the embedded docstring corpus (default, offline), local text files, and C4 from the hub.
     Each becomes a train / held-out pair of JSON-lines files in the cache.
  3. A SentencePiece unigram tokenizer with T5's ids, trained on the training split.
  4. Tokenisation with `datasets.map` (cached), packing into fixed raw chunks, and `PretrainData`, which turns
     a global example index into an (input_ids, labels) pair deterministically, so a resumed run sees
     exactly the batches and masks an uninterrupted one would have.

Everything written to the cache goes to a temporary path first and is renamed into place, so a killed
process never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
LABEL_PAD = -100  # ignored by T5's cross-entropy
SPM_SEED = 20200212
HARVESTER_VERSION = 1  # bump when the embedded-corpus extraction changes (invalidates caches)


class DataError(ValueError):
    """Bad data settings or input files; raised before any work is done."""


# ---------------------------------------------------------------------------------------------------------
# 1. T5 span corruption
# ---------------------------------------------------------------------------------------------------------


def _lengths_for_raw(raw_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(inputs_length, targets_length) produced by span-corrupting `raw_length` tokens (T5's helper)."""
    num_noise_tokens = int(round(raw_length * noise_density))
    num_nonnoise_tokens = raw_length - num_noise_tokens
    num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
    # inputs: every non-noise token, one sentinel per noise span, EOS; targets: the mirror image.
    return num_nonnoise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1


def validate_span_settings(inputs_length: int, noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise DataError(f"data.noise_density must be in (0, 1), got {noise_density}")
    if not mean_noise_span_length > 0:
        raise DataError(f"data.mean_noise_span_length must be > 0, got {mean_noise_span_length}")
    if inputs_length < 4:
        raise DataError(f"data.inputs_length must be at least 4, got {inputs_length}")
    raw, _ = _search_raw_length(inputs_length, noise_density, mean_noise_span_length)
    noise = int(round(raw * noise_density))
    if noise < 1 or int(round(noise / mean_noise_span_length)) < 1 or noise >= raw:
        raise DataError(
            f"data.inputs_length={inputs_length} is too small for noise_density={noise_density} and "
            f"mean_noise_span_length={mean_noise_span_length}: a {raw}-token chunk gets {noise} noise tokens, "
            "not enough for one noise span"
        )


def _search_raw_length(inputs_length, noise_density, mean_noise_span_length) -> tuple[int, int]:
    tokens_length = inputs_length - 1
    while _lengths_for_raw(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = _lengths_for_raw(tokens_length, noise_density, mean_noise_span_length)
    # T5's "minor hack": at density 0.5, keep targets no longer than inputs.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """T5's `random_spans_helper`: the raw chunk length whose corruption fills `inputs_length` exactly.

    512, 0.15, 3.0 -> (568, 114): 568 raw tokens lose 85 noise tokens in 28 spans, giving 483 + 28 sentinels
    + EOS = 512 inputs and 85 + 28 + EOS = 114 targets.
    """
    validate_span_settings(inputs_length, noise_density, mean_noise_span_length)
    return _search_raw_length(inputs_length, noise_density, mean_noise_span_length)


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Split `num_items` into `num_segments` non-empty segments at random; returns their lengths."""
    first_in_segment = np.arange(num_items - 1) < num_segments - 1
    rng.shuffle(first_in_segment)
    first_in_segment = np.concatenate([[False], first_in_segment])
    segment_id = np.cumsum(first_in_segment)
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """T5's noise mask: alternating non-noise / noise spans, starting with non-noise.

    Exactly round(length * noise_density) noise tokens (at least 1, at most length-1) in
    round(num_noise_tokens / mean_noise_span_length) spans (at least 1). Both the noise and non-noise span
    lengths are random segmentations, so spans vary in length around the mean.
    """
    orig_length = length
    length = max(length, 2)  # T5 avoids degeneracy for length-1 inputs the same way
    num_noise_tokens = int(round(length * noise_density))
    num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
    num_noise_spans = max(int(round(num_noise_tokens / mean_noise_span_length)), 1)
    num_nonnoise_tokens = length - num_noise_tokens

    noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans, rng)
    nonnoise_span_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans, rng)
    interleaved = np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1).reshape(-1)
    span_starts = np.cumsum(interleaved)[:-1]
    span_start_indicator = np.zeros(length, dtype=bool)
    span_start_indicator[span_starts] = True
    span_num = np.cumsum(span_start_indicator)
    return (span_num % 2 == 1)[:orig_length]


def sentinel_id(i: int, vocab_size: int) -> int:
    """<extra_id_i>: T5 counts sentinels down from the top of the vocabulary."""
    return vocab_size - 1 - i


def _replace_spans(tokens: np.ndarray, mask: np.ndarray, vocab_size: int) -> np.ndarray:
    """Replace each run of masked tokens with one sentinel (numbered in order) and append EOS."""
    prev = np.concatenate([[False], mask[:-1]])
    first = mask & ~prev
    out = np.where(first, vocab_size - np.cumsum(first), tokens)  # vocab-1, vocab-2, ... for spans 0, 1, ...
    return np.concatenate([out[~mask | first], [EOS_ID]])


def span_corrupt(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs keep the non-noise tokens with a sentinel per noise span; targets are the reverse. Both end in EOS.

    inputs  = nn_0 <x0> nn_1 <x1> ... nn_k <xk> EOS
    targets = <x0> n_0 <x1> n_1 ... <xk> n_k EOS
    """
    return _replace_spans(tokens, noise_mask, vocab_size), _replace_spans(tokens, ~noise_mask, vocab_size)


def merge_back(inputs: np.ndarray, targets: np.ndarray, vocab_size: int, extra_ids: int = 100) -> np.ndarray:
    """Undo `span_corrupt`: put each target span back in place of its sentinel (used by tests and as a spec)."""

    def is_sentinel(t):
        return vocab_size - extra_ids <= t < vocab_size

    spans: dict[int, list[int]] = {}
    current = None
    for t in targets[:-1]:
        if is_sentinel(t):
            current = int(t)
            spans[current] = []
        else:
            spans[current].append(int(t))
    out: list[int] = []
    for t in inputs[:-1]:
        out.extend(spans[int(t)] if is_sentinel(t) else [int(t)])
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# Cache helpers
# ---------------------------------------------------------------------------------------------------------


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stable_bucket(key: str, buckets: int = 10_000) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % buckets


@contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `final` only if the block finishes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep theirs
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_jsonl(path: Path, texts) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
            n += 1
    return n


# ---------------------------------------------------------------------------------------------------------
# 2. Corpora. Each returns a directory holding train.jsonl and heldout.jsonl ({"text": ...} per line).
# ---------------------------------------------------------------------------------------------------------

_SKIP_DIRS = {"test", "tests", "testing", "__pycache__", "site-packages", "idlelib", "lib2to3", "ensurepip"}


def _source_roots(cfg) -> list[tuple[str, str, str]]:
    """(label, version, directory) of every source of the embedded corpus, in config order."""
    roots = []
    if cfg.include_stdlib:
        roots.append(("stdlib", sys.version.split()[0], sysconfig.get_paths()["stdlib"]))
    for pkg in cfg.packages:
        spec = importlib.util.find_spec(pkg)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"data.packages: {pkg!r} is not an installed package")
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        roots.append((pkg, version, list(spec.submodule_search_locations)[0]))
    if not roots:
        raise DataError("the embedded corpus has no sources: set data.include_stdlib or data.packages")
    return roots


def _python_files(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return out


def _file_paragraphs(path: str, min_chars: int) -> list[str]:
    """Docstring paragraphs of one source file, read with `ast` (the module is never imported)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    paragraphs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            for para in (doc or "").split("\n\n"):
                para = para.strip()
                if len(para) >= min_chars and not para.startswith(">>>"):
                    paragraphs.append(para)
    return paragraphs


def _harvest_root(args) -> list[tuple[str, list[str]]]:
    label, root, min_chars = args
    return [
        (f"{label}/{os.path.relpath(p, root)}", _file_paragraphs(p, min_chars)) for p in _python_files(root)
    ]


def embedded_corpus(cfg) -> Path:
    """Docstrings of the stdlib and the pinned packages: ~25 MB of English prose, offline and deterministic.

    Held-out files are chosen by a stable hash of their path inside the source; every paragraph is
    deduplicated by its whitespace-normalised text, and held-out paragraphs win: a paragraph that occurs in any
    held-out file never appears in training.
    """
    roots = _source_roots(cfg)
    key = fingerprint(
        "embedded",
        HARVESTER_VERSION,
        [(lab, ver) for lab, ver, _ in roots],
        cfg.heldout_percent,
        cfg.min_paragraph_chars,
    )
    final = Path(cfg.cache_dir) / "corpus" / f"embedded-{key}"
    if (final / "stats.json").exists():
        return final
    jobs = [(label, root, cfg.min_paragraph_chars) for label, _, root in roots]
    with ProcessPoolExecutor(max_workers=min(2, len(jobs))) as pool:
        files = [f for part in pool.map(_harvest_root, jobs) for f in part]
    threshold = cfg.heldout_percent * 100  # buckets out of 10,000
    held_files = [(k, ps) for k, ps in files if _stable_bucket(k) < threshold]
    train_files = [(k, ps) for k, ps in files if _stable_bucket(k) >= threshold]

    seen: set[str] = set()

    def unique(file_list):
        for _, paragraphs in file_list:
            for p in paragraphs:
                norm = " ".join(p.split())
                if norm not in seen:
                    seen.add(norm)
                    yield p

    with _atomic_dir(final) as tmp:
        n_held = _write_jsonl(tmp / "heldout.jsonl", unique(held_files))  # first: held-out wins duplicates
        n_train = _write_jsonl(tmp / "train.jsonl", unique(train_files))
        stats = {
            "sources": [{"name": lab, "version": ver} for lab, ver, _ in roots],
            "files": len(files),
            "heldout_files": len(held_files),
            "train_paragraphs": n_train,
            "heldout_paragraphs": n_held,
            "train_bytes": (tmp / "train.jsonl").stat().st_size,
            "heldout_bytes": (tmp / "heldout.jsonl").stat().st_size,
        }
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
    if n_train == 0 or n_held == 0:
        raise DataError(f"the embedded corpus is empty (train {n_train}, held-out {n_held} paragraphs)")
    return final


def _expand_paths(patterns: list[str], what: str) -> list[str]:
    files: list[str] = []
    for pat in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pat), recursive=True))
        if not matches:
            raise DataError(f"{what}: no file matches {pat!r}")
        files.extend(matches)
    for f in files:
        _check_text_file(f)
    return files


_LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _check_text_file(path: str) -> None:
    """Refuse missing, empty, binary or non-UTF-8 files up front, with the file's name in the message."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: not a file")
    if p.suffix not in _LOADERS:
        raise DataError(
            f"{path}: unsupported file type {p.suffix!r}; use one of {', '.join(sorted(_LOADERS))}"
        )
    if p.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    if p.suffix == ".parquet":
        return  # binary by design; pyarrow validates it when datasets loads it
    with open(p, "rb") as f:
        head = f.read(1 << 20)
    if b"\x00" in head:
        raise DataError(f"{path}: looks binary (contains NUL bytes), expected UTF-8 text")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a multi-byte character cut by our 1 MiB read
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _load_local(files: list[str], text_field: str, cache_dir: Path):
    import datasets

    kinds = {_LOADERS[Path(f).suffix] for f in files}
    if len(kinds) > 1:
        raise DataError(f"data.paths mixes file types ({', '.join(sorted(kinds))}); use one type per corpus")
    kind = kinds.pop()
    kwargs = {"sample_by": "paragraph"} if kind == "text" else {}
    ds = datasets.load_dataset(kind, data_files=files, split="train", cache_dir=str(cache_dir), **kwargs)
    field = "text" if kind == "text" else text_field
    if field not in ds.column_names:
        raise DataError(f"{files[0]}: no {field!r} field (columns: {', '.join(ds.column_names)})")
    return ds[field]


def text_files_corpus(cfg) -> Path:
    """Any glob of .txt / .jsonl / .parquet files. Held-out: `data.heldout_paths`, else a stable hash of
    each document's text (so duplicate documents always land on the same side)."""
    if not cfg.paths:
        raise DataError("data=text_files needs data.paths (a list of files or globs)")
    files = _expand_paths(list(cfg.paths), "data.paths")
    held = _expand_paths(list(cfg.heldout_paths), "data.heldout_paths") if cfg.heldout_paths else []
    stamp = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files + held]
    key = fingerprint("text_files", stamp, cfg.text_field, cfg.heldout_percent)
    final = Path(cfg.cache_dir) / "corpus" / f"text_files-{key}"
    if (final / "stats.json").exists():
        return final
    hf_cache = Path(cfg.cache_dir) / "hf"
    docs = [t for t in _load_local(files, cfg.text_field, hf_cache) if t and t.strip()]
    if held:
        held_docs = [t for t in _load_local(held, cfg.text_field, hf_cache) if t and t.strip()]
        held_set = set(held_docs)
        train_docs = [t for t in docs if t not in held_set]
    else:
        threshold = cfg.heldout_percent * 100
        held_docs = [t for t in docs if _stable_bucket(t) < threshold]
        train_docs = [t for t in docs if _stable_bucket(t) >= threshold]
    if not train_docs or not held_docs:
        raise DataError(
            f"data.paths gave {len(train_docs)} training and {len(held_docs)} held-out documents; "
            "both must be non-empty (add text, raise data.heldout_percent, or set data.heldout_paths)"
        )
    return _write_corpus(final, train_docs, held_docs)


def _write_corpus(final: Path, train_docs, held_docs) -> Path:
    with _atomic_dir(final) as tmp:
        n_held = _write_jsonl(tmp / "heldout.jsonl", held_docs)
        n_train = _write_jsonl(tmp / "train.jsonl", train_docs)
        stats = {"train_documents": n_train, "heldout_documents": n_held}
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
    return final


def c4_corpus(cfg) -> Path:
    """C4 from the hub, streamed: the first `max_train_documents` of train and `max_heldout_documents` of
    validation (the held-out set is C4's own validation split, as in the paper).

    `data.dataset_path` / `data.dataset_name` / `data.data_files` go straight to `datasets.load_dataset`, so
    the same code reads a local file with C4's schema ({"text", "timestamp", "url"}) in the tests.
    """
    import datasets

    key = fingerprint(
        "c4",
        cfg.dataset_path,
        cfg.dataset_name,
        cfg.data_files,
        cfg.max_train_documents,
        cfg.max_heldout_documents,
    )
    final = Path(cfg.cache_dir) / "corpus" / f"c4-{key}"
    if (final / "stats.json").exists():
        return final
    data_files = dict(cfg.data_files) if cfg.data_files else None
    stream = datasets.load_dataset(cfg.dataset_path, cfg.dataset_name, data_files=data_files, streaming=True)
    for split in ("train", "validation"):
        if split not in stream:
            raise DataError(f"{cfg.dataset_path}: no {split!r} split (has {', '.join(stream)})")
    if cfg.text_field not in (stream["train"].column_names or [cfg.text_field]):
        raise DataError(f"{cfg.dataset_path}: no {cfg.text_field!r} field")

    def take(split, n):
        return [row[cfg.text_field] for row in stream[split].take(n) if row[cfg.text_field].strip()]

    train_docs, held_docs = (
        take("train", cfg.max_train_documents),
        take("validation", cfg.max_heldout_documents),
    )
    if not train_docs or not held_docs:
        raise DataError(f"{cfg.dataset_path}: empty train or validation split")
    return _write_corpus(final, train_docs, held_docs)


CORPORA = {"embedded": embedded_corpus, "text_files": text_files_corpus, "c4": c4_corpus}


def prepare_corpus(cfg) -> Path:
    if cfg.source not in CORPORA:
        raise DataError(f"unknown data.source {cfg.source!r}; valid: {', '.join(CORPORA)}")
    return CORPORA[cfg.source](cfg)


def _read_texts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


# ---------------------------------------------------------------------------------------------------------
# 3. Tokenizer: SentencePiece unigram with T5's ids
# ---------------------------------------------------------------------------------------------------------


def train_tokenizer(corpus_dir: Path, cfg) -> Path:
    """Train (or reuse) spiece.model on the training split: pad 0, eos 1, unk 2, no BOS, like T5's.

    The 100 sentinels are not pieces of the model: HF's T5Tokenizer adds `<extra_id_0..99>` on top, counting
    down from the top of the vocabulary, so the model's vocab is vocab_size + extra_ids.
    """
    import sentencepiece as spm

    key = fingerprint("spm", corpus_dir.name, cfg.vocab_size, cfg.tokenizer_max_sentences, SPM_SEED)
    final = Path(cfg.cache_dir) / "tokenizer" / f"spm-{key}"
    if (final / "spiece.model").exists():
        return final / "spiece.model"

    def sentences():
        for text in _read_texts(corpus_dir / "train.jsonl"):
            for line in text.split("\n"):
                if line.strip():
                    yield line.strip()

    model = io.BytesIO()
    # SentencePiece samples and shuffles input sentences with a random seed of its own: fix it, so the same
    # corpus and settings always give the same tokenizer (and so the same token stream and eval set).
    spm.set_random_generator_seed(SPM_SEED)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_writer=model,
            model_type="unigram",
            vocab_size=cfg.vocab_size,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            character_coverage=0.9995,
            input_sentence_size=cfg.tokenizer_max_sentences,
            shuffle_input_sentence=True,
            num_threads=cfg.tokenizer_threads,
            minloglevel=2,
        )
    except RuntimeError as e:  # e.g. a vocabulary larger than the corpus supports
        raise DataError(f"SentencePiece training failed for data.vocab_size={cfg.vocab_size}: {e}") from None
    with _atomic_dir(final) as tmp:
        (tmp / "spiece.model").write_bytes(model.getvalue())
    return final / "spiece.model"


def load_hf_tokenizer(spiece_model: str | Path):
    """The tokenizer users load from an export.

    transformers 5 converts a SentencePiece file only in `from_pretrained` (a directory holding
    spiece.model); `T5Tokenizer(vocab_file=...)` there silently builds a 104-token placeholder vocabulary.
    """
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(str(Path(spiece_model).parent), extra_ids=100)


# ---------------------------------------------------------------------------------------------------------
# 4. Tokenised, packed, span-corrupted examples
# ---------------------------------------------------------------------------------------------------------


def _tokenize_split(corpus_dir: Path, split: str, spiece_model: Path, cache_dir: Path) -> np.ndarray:
    """All documents of a split as one token stream, each document followed by EOS (T5's packing)."""
    import datasets

    ds = datasets.load_dataset(
        "json", data_files=str(corpus_dir / f"{split}.jsonl"), split="train", cache_dir=str(cache_dir / "hf")
    )
    map_cache = cache_dir / "tokenized" / f"{corpus_dir.name}-{spiece_model.parent.name}-{split}.arrow"
    map_cache.parent.mkdir(parents=True, exist_ok=True)
    model_path = str(spiece_model)

    def encode(batch):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=model_path)
        return {"ids": [ids + [EOS_ID] for ids in sp.encode(batch["text"])]}

    # datasets writes the map result to a temporary file and renames it: a killed run leaves no partial cache.
    tokenized = ds.map(
        encode,
        batched=True,
        batch_size=2000,
        remove_columns=ds.column_names,
        cache_file_name=str(map_cache),
        desc=f"tokenizing {split}",
    )
    return np.asarray(tokenized.data.column("ids").combine_chunks().flatten(), dtype=np.int32)


@dataclass
class DataInfo:
    vocab_size: int  # model vocabulary: SentencePiece pieces + sentinels
    raw_length: int
    inputs_length: int
    targets_length: int
    train_tokens: int
    heldout_tokens: int
    train_examples: int
    spiece_model: str
    corpus_dir: str


class PretrainData:
    """Span-corrupted examples from a packed token stream, addressable by a global example index.

    Example k of training is chunk perm_e[k mod N] of epoch e = k // N, where perm_e is a permutation drawn
    from (seed, e), and its noise mask is drawn from (seed, e, chunk). A run's position is therefore a
    single integer (the number of examples consumed) and resuming from it replays the same batches.
    The held-out set is the first `eval_examples` chunks of the held-out stream with masks from
    `eval_seed`: identical for every run of an experiment, whatever its `seed`.
    """

    def __init__(self, cfg, *, log=print):
        validate_span_settings(cfg.inputs_length, cfg.noise_density, cfg.mean_noise_span_length)
        self.cfg = cfg
        self.raw_length, self.targets_length = compute_input_and_target_lengths(
            cfg.inputs_length, cfg.noise_density, cfg.mean_noise_span_length
        )
        corpus_dir = prepare_corpus(cfg)
        spiece_model = train_tokenizer(corpus_dir, cfg)
        cache_dir = Path(cfg.cache_dir)
        train = _tokenize_split(corpus_dir, "train", spiece_model, cache_dir)
        held = _tokenize_split(corpus_dir, "heldout", spiece_model, cache_dir)
        import sentencepiece as spm

        pieces = spm.SentencePieceProcessor(model_file=str(spiece_model)).get_piece_size()
        self.vocab_size = pieces + cfg.extra_ids
        n_train, n_held = len(train) // self.raw_length, len(held) // self.raw_length
        if n_held < cfg.eval_examples:
            raise DataError(
                f"the held-out split has {len(held):,} tokens = {n_held} chunks of {self.raw_length}; "
                f"data.eval_examples={cfg.eval_examples} needs more held-out text"
            )
        if n_train < 1:
            raise DataError(
                f"the training split has {len(train):,} tokens, less than one {self.raw_length}-token chunk"
            )
        # The incomplete tail chunk is dropped, so every example has exactly inputs_length / targets_length.
        self.train_chunks = train[: n_train * self.raw_length].reshape(n_train, self.raw_length)
        self.eval_chunks = held[: cfg.eval_examples * self.raw_length].reshape(
            cfg.eval_examples, self.raw_length
        )
        self.info = DataInfo(
            vocab_size=self.vocab_size,
            raw_length=self.raw_length,
            inputs_length=cfg.inputs_length,
            targets_length=self.targets_length,
            train_tokens=len(train),
            heldout_tokens=len(held),
            train_examples=n_train,
            spiece_model=str(spiece_model),
            corpus_dir=str(corpus_dir),
        )
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._eval_pairs: list[tuple[np.ndarray, np.ndarray]] | None = None
        log(
            f"data: {cfg.source} corpus {len(train):,} train / {len(held):,} held-out tokens, vocab "
            f"{self.vocab_size:,}, {self.raw_length} raw -> {cfg.inputs_length}/{self.targets_length} tokens"
        )

    def _example(self, chunk: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        mask = random_spans_noise_mask(
            len(chunk), self.cfg.noise_density, self.cfg.mean_noise_span_length, rng
        )
        return span_corrupt(chunk, mask, self.vocab_size)

    def _collate(self, pairs) -> dict[str, torch.Tensor]:
        """Pad to the fixed lengths (inputs with 0, labels with -100); full chunks need no padding."""
        inputs = np.full((len(pairs), self.cfg.inputs_length), PAD_ID, dtype=np.int64)
        labels = np.full((len(pairs), self.targets_length), LABEL_PAD, dtype=np.int64)
        for i, (x, y) in enumerate(pairs):
            inputs[i, : len(x)] = x
            labels[i, : len(y)] = y
        return {
            "input_ids": torch.from_numpy(inputs),
            "attention_mask": torch.from_numpy(inputs != PAD_ID).long(),
            "labels": torch.from_numpy(labels),
        }

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        if (seed, epoch) not in self._perm_cache:
            self._perm_cache = {
                (seed, epoch): np.random.default_rng([seed, epoch]).permutation(len(self.train_chunks))
            }
        return self._perm_cache[(seed, epoch)]

    def train_example(self, index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, within = divmod(index, len(self.train_chunks))
        chunk = int(self._permutation(seed, epoch)[within])
        return self._example(self.train_chunks[chunk], np.random.default_rng([seed, epoch, chunk]))

    def train_batch(self, start: int, size: int, seed: int) -> dict[str, torch.Tensor]:
        """Examples start .. start+size-1 of the run's example sequence."""
        return self._collate([self.train_example(k, seed) for k in range(start, start + size)])

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        if (
            self._eval_pairs is None
        ):  # the held-out set never changes: corrupt it once, not at every evaluation
            self._eval_pairs = [
                self._example(chunk, np.random.default_rng([self.cfg.eval_seed, i]))
                for i, chunk in enumerate(self.eval_chunks)
            ]
        for i in range(0, len(self._eval_pairs), batch_size):
            yield self._collate(self._eval_pairs[i : i + batch_size])
