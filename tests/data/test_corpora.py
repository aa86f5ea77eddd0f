"""Corpora: the embedded docstring corpus, text files, C4's loader on a local file, and bad input files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glu_study.config import compose
from glu_study.data import (
    PretrainData,
)
from glu_study.data.corpora import prepare_corpus
from glu_study.errors import DataError
from tests.helpers import TINY, run_cli


def random_docs(n: int, words_per_doc: int = 150, seed: int = 0) -> list[str]:
    """Varied synthetic documents (enough distinct substrings for a small SentencePiece vocabulary)."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(400)]
    return [f"Document {i}. " + " ".join(rng.choice(words, words_per_doc)) + "." for i in range(n)]


@pytest.mark.slow
def test_embedded_corpus_is_deterministic(session_cache):
    """Building the corpus twice gives the same bytes (checked on stdlib only; the >= 20 MB default is `slow`)."""
    cfg = compose([]).data
    assert "torch" in cfg.packages and cfg.include_stdlib
    small = compose(TINY).data
    d1 = prepare_corpus(small)
    import shutil

    text1 = (d1 / "train.jsonl").read_bytes()
    shutil.rmtree(d1)
    assert (prepare_corpus(small) / "train.jsonl").read_bytes() == text1


@pytest.mark.slow
def test_default_embedded_corpus_is_at_least_20mb():
    d = prepare_corpus(compose([]).data)
    stats = json.loads((d / "stats.json").read_text())
    assert stats["train_bytes"] + stats["heldout_bytes"] >= 20e6


@pytest.mark.parametrize("train_files", ["one file", "a list of shards"])
def test_c4_loader_on_local_file_with_c4_schema(tmp_path, train_files):
    rows = [
        {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.com/{i}"}
        for i, text in enumerate(random_docs(60))
    ]
    for split, chunk in (("train", rows[:50]), ("validation", rows[50:])):
        with open(tmp_path / f"c4-{split}.json", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in chunk)
    train = str(tmp_path / "c4-train.json")
    if train_files == "a list of shards":  # as C4's own layout: c4-train.00000-of-01024.json.gz, ...
        for i, chunk in enumerate((rows[:25], rows[25:50])):
            with open(tmp_path / f"c4-train.{i:05d}.json", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in chunk)
        train = f"[{tmp_path / 'c4-train.00000.json'},{tmp_path / 'c4-train.00001.json'}]"
    cfg = compose(
        [
            "data=c4",
            "data.dataset_path=json",
            "data.dataset_name=null",
            "data.vocab_size=200",
            "data.inputs_length=64",
            "data.eval_examples=4",
            "data.val_examples=4",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"+data.data_files.train={train}",
            f"+data.data_files.validation={tmp_path / 'c4-validation.json'}",
        ]
    ).data
    data = PretrainData(cfg, log=lambda *a: None)
    assert data.info.train_examples > 10
    assert data.train_batch(0, 2, seed=0)["input_ids"].shape == (2, 64)
    held = Path(data.info.corpus_dir) / "heldout.jsonl"
    assert sum(1 for _ in open(held)) == 10  # C4's validation split is the held-out set


@pytest.mark.parametrize("suffix", ["parquet", "jsonl", "txt"])
def test_text_files_formats(tmp_path, suffix):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = random_docs(200, words_per_doc=40)
    if suffix == "parquet":
        pq.write_table(pa.table({"content": docs}), tmp_path / "a.parquet")
    elif suffix == "jsonl":
        (tmp_path / "a.jsonl").write_text("".join(json.dumps({"content": d}) + "\n" for d in docs))
    else:
        (tmp_path / "a.txt").write_text("\n\n".join(docs))  # one document per paragraph
    cfg = compose(
        [
            "data=text_files",
            f"data.paths=[{tmp_path}/*.{suffix}]",
            "data.text_field=content",
            "data.vocab_size=150",
            "data.inputs_length=32",
            "data.eval_examples=2",
            "data.val_examples=2",
            "data.heldout_percent=10",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    ).data
    data = PretrainData(cfg, log=lambda *a: None)
    corpus = Path(data.info.corpus_dir)
    n = sum(1 for _ in open(corpus / "train.jsonl")) + sum(1 for _ in open(corpus / "heldout.jsonl"))
    assert n == 200 and data.info.train_examples > 0


def _text_files_cfg(tmp_path, paths):
    return compose(["data=text_files", f"data.paths={paths}", f"data.cache_dir={tmp_path / 'cache'}"]).data


def test_bad_files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait, tr\xe8s bien ".encode("latin-1") * 20)
    (tmp_path / "doc.pdf").write_text("not really")
    cases = {
        "missing": ([str(tmp_path / "nope/*.txt")], "no file matches"),
        "empty": ([str(tmp_path / "empty.txt")], "empty file"),
        "binary": ([str(tmp_path / "binary.txt")], "binary"),
        "latin1": ([str(tmp_path / "latin1.txt")], "not UTF-8"),
        "type": ([str(tmp_path / "doc.pdf")], "unsupported file type"),
    }
    for paths, match in cases.values():
        with pytest.raises(DataError, match=match):
            prepare_corpus(_text_files_cfg(tmp_path, paths))
    with pytest.raises(DataError, match="needs data.paths"):
        prepare_corpus(_text_files_cfg(tmp_path, []))
    assert not (tmp_path / "cache" / "corpus").exists() or not any((tmp_path / "cache" / "corpus").iterdir())


@pytest.mark.parametrize(
    "override,match",
    [
        (["data.noise_density=1.5"], "noise_density"),
        # the same value checks as noise_density's; in the slow tier (each case is a fresh CLI process, ~7 s)
        pytest.param(["data.mean_noise_span_length=0"], "mean_noise_span_length", marks=pytest.mark.slow),
        pytest.param(["data.inputs_length=2"], "inputs_length", marks=pytest.mark.slow),
        (["data=text_files", "data.paths=[/nonexistent/corpus/*.txt]"], "no file matches"),
    ],
)
def test_bad_data_cli_exits_nonzero_before_work(tmp_path, override, match):
    run_dir = tmp_path / "run"
    r = run_cli("glu_study.train", *override, "logger=disabled", f"hydra.run.dir={run_dir}")
    assert r.returncode == 2, r.stderr
    assert match in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error:")
    assert not run_dir.exists()


def test_the_first_preparation_says_what_it_builds_and_a_second_is_quiet(tmp_path):
    """Through the CLI: one line per phase that builds (corpus, tokenizer, each split's tokens), each before it
    starts; a second prepare of the same entry builds nothing and says nothing of it."""
    (tmp_path / "a.txt").write_text("\n\n".join(random_docs(200, words_per_doc=40)))
    args = [
        "data=text_files",
        f"data.paths=[{tmp_path}/a.txt]",
        "data.vocab_size=150",
        "data.heldout_percent=10",
        "data.inputs_length=32",
        "data.eval_examples=4",
        "data.val_examples=4",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    first = run_cli("glu_study.prepare", *args)
    assert first.returncode == 0, first.stderr
    said = [ln for ln in first.stderr.splitlines() if ln.startswith("data: ")]
    assert [ln.split(" (")[0].split(" into ")[0] for ln in said] == [
        "data: reading 1 text files",
        "data: training the SentencePiece tokenizer",
        "data: tokenising the train split",
        "data: tokenising the heldout split",
    ]
    assert "first run only" in said[0] and "first run only" in said[1]
    again = run_cli("glu_study.prepare", *args)
    assert again.returncode == 0 and not [ln for ln in again.stderr.splitlines() if ln.startswith("data: ")]
    assert again.stdout == first.stdout  # the same prepared entry, and the test set's overlap from the cache
    assert "test-set overlap 0." in first.stdout
