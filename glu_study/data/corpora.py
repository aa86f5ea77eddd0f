"""Corpora for pretraining. Each becomes a directory in the cache holding train.jsonl and heldout.jsonl
({"text": ...} per line), keyed by a fingerprint of everything it was built from:

- `embedded` (default, offline): docstrings of the stdlib and of pinned packages, read with `ast`;
- `text_files`: local .txt / .jsonl / .parquet files, loaded with `datasets`;
- `c4`: C4 streamed from the hub with `datasets` (the tests read a local file with C4's schema through it).
"""

from __future__ import annotations

import ast
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from omegaconf import OmegaConf

from glu_study.errors import DamagedCacheError, DataError
from glu_study.files import atomic_dir, fingerprint, process_pool, stable_bucket

HARVESTER_VERSION = 1  # bump when the embedded-corpus extraction changes (invalidates caches)


def _write_jsonl(path: Path, texts) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
            n += 1
    return n


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
        version = _version(pkg)
        roots.append((pkg, version, list(spec.submodule_search_locations)[0]))
    if not roots:
        raise DataError("the embedded corpus has no sources: set data.include_stdlib or data.packages")
    return roots


def _version(package: str) -> str:
    """The installed version of an import name (sklearn's distribution is scikit-learn)."""
    names = [package, *importlib.metadata.packages_distributions().get(package, [])]
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


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


def embedded_corpus(cfg, log=print) -> Path:
    """Docstrings of the stdlib and the pinned packages: ~23 MB of English prose, offline and deterministic.

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
    log(
        f"data: building the embedded corpus (docstrings of {', '.join(label for label, _, _ in roots)}) into "
        f"{final}: first run only, about a minute on 2 cores"
    )
    jobs = [(label, root, cfg.min_paragraph_chars) for label, _, root in roots]
    with process_pool(min(2, len(jobs))) as pool:
        files = [f for part in pool.map(_harvest_root, jobs) for f in part]
    threshold = cfg.heldout_percent * 100  # buckets out of 10,000
    held_files = [(k, ps) for k, ps in files if stable_bucket(k) < threshold]
    train_files = [(k, ps) for k, ps in files if stable_bucket(k) >= threshold]

    seen: set[str] = set()

    def unique(file_list):
        for _, paragraphs in file_list:
            for p in paragraphs:
                norm = " ".join(p.split())
                if norm not in seen:
                    seen.add(norm)
                    yield p

    with atomic_dir(final) as tmp:
        n_held = _write_jsonl(tmp / "heldout.jsonl", unique(held_files))  # first: held-out wins duplicates
        n_train = _write_jsonl(tmp / "train.jsonl", unique(train_files))
        stats = {
            "sources": [{"name": lab, "version": ver} for lab, ver, _ in roots],
            CONTENT_KEY: content_hash(tmp),
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


def text_files_corpus(cfg, log=print) -> Path:
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
    size = sum(s for _, s, _ in stamp)
    log(
        f"data: reading {len(stamp)} text files ({size / 1e6:,.1f} MB) into the corpus {final}: first run only"
    )
    hf_cache = Path(cfg.cache_dir) / "hf"
    docs = [t for t in _load_local(files, cfg.text_field, hf_cache) if t and t.strip()]
    if held:
        held_docs = [t for t in _load_local(held, cfg.text_field, hf_cache) if t and t.strip()]
        held_set = set(held_docs)
        train_docs = [t for t in docs if t not in held_set]
    else:
        threshold = cfg.heldout_percent * 100
        held_docs = [t for t in docs if stable_bucket(t) < threshold]
        train_docs = [t for t in docs if stable_bucket(t) >= threshold]
    if not train_docs or not held_docs:
        raise DataError(
            f"data.paths gave {len(train_docs)} training and {len(held_docs)} held-out documents; "
            "both must be non-empty (add text, raise data.heldout_percent, or set data.heldout_paths)"
        )
    return _write_corpus(final, train_docs, held_docs, [{"name": "text_files", "files": files + held}])


def _write_corpus(final: Path, train_docs, held_docs, sources: list[dict]) -> Path:
    with atomic_dir(final) as tmp:
        n_held = _write_jsonl(tmp / "heldout.jsonl", held_docs)
        n_train = _write_jsonl(tmp / "train.jsonl", train_docs)
        stats = {
            "sources": sources,
            "train_documents": n_train,
            "heldout_documents": n_held,
            CONTENT_KEY: content_hash(tmp),
        }
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
    return final


def c4_corpus(cfg, log=print) -> Path:
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
        cfg.data_files,  # as it always was keyed (its str): existing cache entries keep their names
        cfg.max_train_documents,
        cfg.max_heldout_documents,
    )
    final = Path(cfg.cache_dir) / "corpus" / f"c4-{key}"
    if (final / "stats.json").exists():
        return final
    log(
        f"data: streaming up to {cfg.max_train_documents:,} training documents of {cfg.dataset_path} into {final}: "
        "first run only, as long as the download takes (prepare once, `python -m glu_study.prepare`, before a sweep)"
    )
    # what datasets.load_dataset takes, per split: a path, a glob, or a list of either (plain containers: an
    # OmegaConf list is not a list to `datasets`)
    data_files = OmegaConf.to_container(cfg.data_files, resolve=True) if cfg.data_files else None
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
    sources = [{"name": cfg.dataset_path, "config": cfg.dataset_name, "datasets": datasets.__version__}]
    return _write_corpus(final, train_docs, held_docs, sources)


CORPORA = {"embedded": embedded_corpus, "text_files": text_files_corpus, "c4": c4_corpus}


def prepare_corpus(cfg, log=print) -> Path:
    """The corpus's cache entry, built first if it is not there (saying so, with how long it takes)."""
    if cfg.source not in CORPORA:
        raise DataError(f"unknown data.source {cfg.source!r}; valid: {', '.join(CORPORA)}")
    return CORPORA[cfg.source](cfg, log=log)


CONTENT_KEY = "content_sha256"
SPLIT_FILES = ("train.jsonl", "heldout.jsonl")


def content_hash(corpus_dir: Path) -> str:
    """SHA-256 of the corpus's two split files: what a run actually read, whatever the cache key says.

    The embedded corpus's cache key names its sources and versions, but the text depends on more (the stdlib's
    docstrings change between Python patch releases, a package may be built differently), so records name the
    content itself."""
    h = hashlib.sha256()
    for name in SPLIT_FILES:
        with open(corpus_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def verify_corpus(corpus_dir: Path) -> None:
    """Before a corpus is read to build a tokenizer or token streams: its split files still match the SHA-256
    recorded when it was built (stats.json), else DamagedCacheError naming it. Only then, so that a run whose
    streams are built does not hash the corpus (C4's is tens of GB)."""
    rebuild = f"remove {corpus_dir} and run the same command again to rebuild it"
    if not (
        corpus_dir / "stats.json"
    ).is_file():  # not a corpus of the cache (a file given directly): no record
        return
    try:
        recorded = json.loads((corpus_dir / "stats.json").read_text()).get(CONTENT_KEY)
        actual = content_hash(corpus_dir) if recorded else None
    except (OSError, ValueError) as e:
        raise DamagedCacheError(f"{corpus_dir} cannot be read ({e}): {rebuild}") from None
    if recorded and actual != recorded:
        raise DamagedCacheError(
            f"{corpus_dir} is damaged (its {' and '.join(SPLIT_FILES)} do not match the SHA-256 recorded when it "
            f"was built): {rebuild}"
        )


def corpus_identity(corpus_dir: Path, source: str) -> dict:
    """{"corpus_fingerprint": the first 16 hex digits of the content hash, "corpus_sources": [...]}.

    The hash is computed once, when the corpus is built (stats.json); an entry built before it was recorded is
    hashed on reading (~0.1 s for the embedded corpus) and left as it is."""
    stats = json.loads((corpus_dir / "stats.json").read_text())
    digest = stats.get(CONTENT_KEY) or content_hash(corpus_dir)
    sources = stats.get("sources") or [{"name": source}]
    python = {"name": "python", "version": sys.version.split()[0]}
    return {"corpus_fingerprint": digest[:16], "corpus_sources": [*sources, python]}


def read_texts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]
