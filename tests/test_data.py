"""Issue 3: T5-faithful span corruption, corpora, tokenizer, the packed pipeline, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glu_study.config import compose
from glu_study.data import (
    EOS_ID,
    LABEL_PAD,
    PAD_ID,
    DataError,
    PretrainData,
    compute_input_and_target_lengths,
    load_hf_tokenizer,
    merge_back,
    prepare_corpus,
    random_spans_noise_mask,
    span_corrupt,
    train_tokenizer,
    validate_span_settings,
)

from .conftest import TINY, run_cli


def random_docs(n: int, words_per_doc: int = 150, seed: int = 0) -> list[str]:
    """Varied synthetic documents (enough distinct substrings for a small SentencePiece vocabulary)."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(400)]
    return [f"Document {i}. " + " ".join(rng.choice(words, words_per_doc)) + "." for i in range(n)]


def t5_reference_lengths(inputs_length, noise_density, mean_span):
    """An independent transcription of t5.data.preprocessors.random_spans_helper, for cross-checking."""

    def to_lengths(tokens_length):
        num_noise = int(round(tokens_length * noise_density))
        num_nonnoise = tokens_length - num_noise
        spans = int(round(num_noise / mean_span))
        return num_nonnoise + spans + 1, num_noise + spans + 1

    tokens_length = inputs_length - 1
    while to_lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    inputs, targets = to_lengths(tokens_length)
    if noise_density == 0.5 and targets > inputs:
        tokens_length -= 1
        targets -= 1
    return tokens_length, targets


def test_paper_lengths():
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)
    assert compute_input_and_target_lengths(128, 0.15, 3.0) == (141, 29)


@pytest.mark.parametrize("inputs_length", [16, 64, 100, 256, 512, 1024])
@pytest.mark.parametrize("density,span", [(0.15, 3.0), (0.3, 8.0), (0.5, 3.0), (0.15, 1.0)])
def test_lengths_agree_with_t5_arithmetic(inputs_length, density, span):
    raw, targets = compute_input_and_target_lengths(inputs_length, density, span)
    assert (raw, targets) == t5_reference_lengths(inputs_length, density, span)
    # and corrupting a raw chunk really produces those lengths
    rng = np.random.default_rng(0)
    x, y = span_corrupt(np.arange(10, 10 + raw), random_spans_noise_mask(raw, density, span, rng), 32100)
    assert len(x) <= inputs_length and len(y) == targets


def _span_lengths(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(edges[1::2] - edges[::2])


def test_mask_counts_first_span_and_randomness():
    length, density, span = 568, 0.15, 3.0
    masks = [random_spans_noise_mask(length, density, span, np.random.default_rng(s)) for s in range(20)]
    for m in masks:
        assert m.sum() == 85  # round(568 * 0.15)
        assert len(_span_lengths(m)) == 28  # round(85 / 3) noise spans
        assert not m[0]  # the first span is non-noise
    lengths = _span_lengths(masks[0])
    assert len(set(lengths)) > 1 and np.mean(lengths) == pytest.approx(85 / 28)  # random, mean as set
    assert not all(np.array_equal(masks[0], mm) for mm in masks[1:])


def test_mask_reproducible_for_seed():
    a = random_spans_noise_mask(200, 0.15, 3.0, np.random.default_rng(7))
    b = random_spans_noise_mask(200, 0.15, 3.0, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_span_corrupt_sentinels_eos_and_merge_back():
    vocab = 1100
    tokens = np.arange(3, 3 + 141)
    mask = random_spans_noise_mask(141, 0.15, 3.0, np.random.default_rng(1))
    inputs, targets = span_corrupt(tokens, mask, vocab)
    assert len(inputs) == 128 and len(targets) == 29
    assert inputs[-1] == EOS_ID and targets[-1] == EOS_ID
    assert EOS_ID not in inputs[:-1] and EOS_ID not in targets[:-1]
    sentinels_in = [t for t in inputs if t >= vocab - 100]
    sentinels_tg = [t for t in targets if t >= vocab - 100]
    # <extra_id_0> is the top id, then counting down, in order of appearance
    assert sentinels_in == list(range(vocab - 1, vocab - 1 - len(sentinels_in), -1))
    assert sentinels_tg == sentinels_in
    assert targets[0] == vocab - 1  # targets open with <extra_id_0>
    assert np.array_equal(merge_back(inputs, targets, vocab), tokens)


def test_merge_back_many_seeds():
    for seed in range(50):
        n = 20 + seed * 7
        tokens = np.random.default_rng(seed).integers(3, 900, n)
        mask = random_spans_noise_mask(n, 0.15, 3.0, np.random.default_rng(seed))
        assert np.array_equal(merge_back(*span_corrupt(tokens, mask, 1000), 1000), tokens)


def test_batches_pad_only_where_t5_pads(tiny_data):
    batch = tiny_data.train_batch(0, 4, seed=0)
    x, y = batch["input_ids"].numpy(), batch["labels"].numpy()
    assert x.shape == (4, 64) and y.shape[0] == 4
    # full chunks fill both lengths exactly: no padding at all
    assert (x != PAD_ID).all() and (y != LABEL_PAD).all()
    assert (x[:, -1] == EOS_ID).all() and (y[:, -1] == EOS_ID).all()
    # a short (final) chunk is padded at the end only: inputs with 0, labels with -100
    short = tiny_data._collate(
        [
            span_corrupt(
                np.arange(3, 33),
                random_spans_noise_mask(30, 0.15, 3.0, np.random.default_rng(0)),
                tiny_data.vocab_size,
            )
        ]
    )
    xs, ys = short["input_ids"][0].numpy(), short["labels"][0].numpy()
    n_in, n_tg = int((xs != PAD_ID).sum()), int((ys != LABEL_PAD).sum())
    assert (xs[n_in:] == PAD_ID).all() and xs[n_in - 1] == EOS_ID
    assert (ys[n_tg:] == LABEL_PAD).all() and ys[n_tg - 1] == EOS_ID
    assert (short["attention_mask"][0].numpy() == (xs != PAD_ID)).all()


def test_batches_deterministic_by_position_and_seed(tiny_data):
    a = tiny_data.train_batch(10, 4, seed=0)
    b = tiny_data.train_batch(10, 4, seed=0)
    c = tiny_data.train_batch(10, 4, seed=1)
    # resuming at example 12 gives what an uninterrupted run saw at positions 12, 13
    d = tiny_data.train_batch(12, 2, seed=0)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["input_ids"] == c["input_ids"]).all()
    assert (a["input_ids"][2:] == d["input_ids"]).all()


def test_eval_set_fixed_independent_of_run_seed(tiny_data):
    first = [b["labels"] for b in tiny_data.eval_batches(8)]
    again = [b["labels"] for b in tiny_data.eval_batches(5)]
    assert (np.concatenate(first) == np.concatenate(again)).all()
    assert sum(len(b) for b in first) == 16


def test_heldout_and_train_share_no_paragraph(tiny_data):
    corpus = Path(tiny_data.info.corpus_dir)

    def paragraphs(split):
        with open(corpus / f"{split}.jsonl") as f:
            return {" ".join(json.loads(line)["text"].split()) for line in f}

    train, held = paragraphs("train"), paragraphs("heldout")
    assert len(train) > 1000 and len(held) > 50
    assert not train & held
    stats = json.loads((corpus / "stats.json").read_text())
    assert 0 < stats["heldout_files"] < stats["files"]


def test_tokenizer_t5_ids_roundtrip_and_transformers(tiny_data):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tiny_data.info.spiece_model)
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    tok = load_hf_tokenizer(tiny_data.info.spiece_model)
    assert len(tok) == tiny_data.vocab_size
    assert tok.convert_tokens_to_ids("<extra_id_0>") == tiny_data.vocab_size - 1
    assert tok.convert_tokens_to_ids("<extra_id_99>") == tiny_data.vocab_size - 100
    text = "Return the number of items in a container."
    ids = tok(text).input_ids
    assert ids[-1] == EOS_ID
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert sp.decode(sp.encode(text)) == text


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


def test_c4_loader_on_local_file_with_c4_schema(tmp_path):
    rows = [
        {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.com/{i}"}
        for i, text in enumerate(random_docs(60))
    ]
    for split, chunk in (("train", rows[:50]), ("validation", rows[50:])):
        with open(tmp_path / f"c4-{split}.json", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in chunk)
    cfg = compose(
        [
            "data=c4",
            "data.dataset_path=json",
            "data.dataset_name=null",
            "data.vocab_size=200",
            "data.inputs_length=64",
            "data.eval_examples=4",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"+data.data_files.train={tmp_path / 'c4-train.json'}",
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
            "data.heldout_percent=10",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    ).data
    data = PretrainData(cfg, log=lambda *a: None)
    corpus = Path(data.info.corpus_dir)
    n = sum(1 for _ in open(corpus / "train.jsonl")) + sum(1 for _ in open(corpus / "heldout.jsonl"))
    assert n == 200 and data.info.train_examples > 0


@pytest.mark.parametrize(
    "density,span,length,match",
    [
        (0.0, 3.0, 64, "noise_density"),
        (1.0, 3.0, 64, "noise_density"),
        (-0.1, 3.0, 64, "noise_density"),
        (0.15, 0.0, 64, "mean_noise_span_length"),
        (0.15, -2.0, 64, "mean_noise_span_length"),
        (0.15, 3.0, 2, "inputs_length"),
        (0.01, 3.0, 16, "too small"),
    ],
)
def test_impossible_span_settings(density, span, length, match):
    with pytest.raises(DataError, match=match):
        validate_span_settings(length, density, span)


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


def test_tokenizer_vocab_too_large_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"short text number {i} here" for i in range(40)))
    cfg = compose(
        [
            "data=text_files",
            f"data.paths=[{tmp_path}/a.txt]",
            "data.vocab_size=50000",
            "data.heldout_percent=30",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    ).data
    with pytest.raises(DataError, match="vocab_size"):
        train_tokenizer(prepare_corpus(cfg), cfg)
    assert not (tmp_path / "cache" / "tokenizer").exists() or not any(
        (tmp_path / "cache" / "tokenizer").glob("spm-*")
    )


@pytest.mark.parametrize(
    "override,match",
    [
        (["data.noise_density=1.5"], "noise_density"),
        (["data.mean_noise_span_length=0"], "mean_noise_span_length"),
        (["data.inputs_length=2"], "inputs_length"),
        (["data=text_files", "data.paths=[/nonexistent/corpus/*.txt]"], "no file matches"),
    ],
)
def test_bad_data_cli_exits_nonzero_before_work(tmp_path, override, match):
    run_dir = tmp_path / "run"
    r = run_cli("glu_study.train", *override, "logger=disabled", f"hydra.run.dir={run_dir}")
    assert r.returncode == 2, r.stderr
    assert match in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error:")
    assert not run_dir.exists()


def test_tokenizer_training_is_deterministic(tmp_path, tiny_data):
    """Same corpus and settings -> byte-identical spiece.model (SentencePiece's sampling seed is fixed)."""
    import shutil

    cfg = compose([*TINY, "data.tokenizer_max_sentences=5000"]).data
    corpus = Path(tiny_data.info.corpus_dir)
    first = train_tokenizer(corpus, cfg).read_bytes()
    shutil.rmtree(train_tokenizer(corpus, cfg).parent)
    assert train_tokenizer(corpus, cfg).read_bytes() == first
