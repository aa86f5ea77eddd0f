"""The packed pipeline: batches, the fixed held-out set, the tokenizer with T5's ids."""

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
    PretrainData,
    load_hf_tokenizer,
    random_spans_noise_mask,
    span_corrupt,
)
from glu_study.data.corpora import prepare_corpus
from glu_study.data.tokenizer import train_tokenizer
from glu_study.errors import DataError
from tests.helpers import TINY


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


TRAIN_ONE = """
import sys
from pathlib import Path
from glu_study.config import compose
from glu_study.data.tokenizer import train_tokenizer
print(train_tokenizer(Path(sys.argv[1]), compose(sys.argv[2:]).data))
"""  # a fresh process trains one tokenizer: python -c TRAIN_ONE <corpus dir> <overrides>


def test_tokenizer_training_is_deterministic_across_processes(tmp_path, tiny_data):
    """Same corpus and settings -> byte-identical spiece.model, in fresh processes (as on a fresh machine) and
    with the sentence cap below the corpus size, so the sample is drawn. SentencePiece's own sampling and
    shuffling gave a different model in every process whatever its seed (its seed is thread-local), so the
    tokenizer draws the sample itself; the thread count is part of the tokenizer (it changes the EM's sums)."""
    import subprocess
    import sys

    corpus = Path(tiny_data.info.corpus_dir)
    settings = [*TINY, "data.tokenizer_max_sentences=3000"]
    models = []
    for i in range(2):
        r = subprocess.run(
            [sys.executable, "-c", TRAIN_ONE, str(corpus), *settings, f"data.cache_dir={tmp_path / f'c{i}'}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        models.append(Path(r.stdout.strip().splitlines()[-1]))
    assert models[0] != models[1] and models[0].read_bytes() == models[1].read_bytes()
    one_thread = compose([*settings, "data.tokenizer_threads=1", f"data.cache_dir={tmp_path / 'one'}"]).data
    assert train_tokenizer(corpus, one_thread).parent.name != models[0].parent.name  # threads name the entry


def test_the_tokenizer_sample_is_fixed_uniform_and_in_corpus_order(tmp_path):
    from glu_study.data.tokenizer import sample_sentences

    lines = [f"line {i}" for i in range(1000)]
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": "\n".join(lines[k : k + 10]) + "\n\n"}) + "\n" for k in range(0, 1000, 10)
        )
    )
    assert sample_sentences(path, 5000) == lines  # under the cap: every line, in order
    sample = sample_sentences(path, 100)
    assert sample == sample_sentences(path, 100) and len(set(sample)) == 100
    assert sample == sorted(sample, key=lines.index)  # corpus order
    first_half = sum(lines.index(x) < 500 for x in sample)
    assert (
        30 <= first_half <= 70
    )  # drawn over the whole split, not its head (binomial(100, 0.5): p < 1e-4 out)


def test_validation_set_is_disjoint_from_the_unchanged_test_set(tiny_data):
    """The test set is the chunks it always was (evenly spread over the held-out stream), the validation set
    comes from the chunks it leaves, and both are fixed by data.eval_seed: not by the run's seed."""
    from glu_study.data.pretrain import heldout_indices

    cfg, n_held = tiny_data.cfg, tiny_data.n_heldout_chunks
    test_idx, val_idx = heldout_indices(n_held, cfg.eval_examples, cfg.val_examples)
    assert list(test_idx) == list(np.linspace(0, n_held - 1, cfg.eval_examples).round().astype(int))
    assert not set(test_idx) & set(val_idx) and len(val_idx) == cfg.val_examples
    test, val = tiny_data.eval_pairs("test"), tiny_data.eval_pairs("val")
    assert not {x.tobytes() for x, _ in test} & {x.tobytes() for x, _ in val}
    with pytest.raises(DataError, match="data.val_examples"):
        heldout_indices(n_held, cfg.eval_examples, n_held - cfg.eval_examples + 1)


def test_records_name_the_corpus_by_its_content(tiny_data):
    import hashlib

    from glu_study.data.corpora import SPLIT_FILES

    digest = hashlib.sha256()
    for name in SPLIT_FILES:
        digest.update((Path(tiny_data.info.corpus_dir) / name).read_bytes())
    assert tiny_data.info.corpus_fingerprint == digest.hexdigest()[:16]
    names = [s["name"] for s in tiny_data.info.corpus_sources]
    assert names[0] == "stdlib" and names[-1] == "python"


def test_ngram_overlap_against_brute_force(tiny_data):
    """The share of held-out n-token windows found in training, against a set of tuples built by hand; the run
    records it for its test set (and reads it from the cache the second time)."""
    from glu_study.data.pretrain import OVERLAP_N, ngram_overlap

    rng = np.random.default_rng(0)
    train = rng.integers(0, 5, size=2000).astype(np.int32)
    held = np.stack([train[100:130], rng.integers(0, 5, size=30).astype(np.int32)])
    for n in (3, 8):
        seen = {tuple(train[i : i + n]) for i in range(len(train) - n + 1)}
        windows = [tuple(c[i : i + n]) for c in held for i in range(len(c) - n + 1)]
        assert ngram_overlap(train, held, n) == pytest.approx(np.mean([w in seen for w in windows]))
        for block in (1, 7, 64):  # the stream in blocks: every window across a block's edge still counts
            assert ngram_overlap(train, held, n, block=block) == ngram_overlap(train, held, n)
    first = tiny_data.test_overlap()
    assert 0 <= first <= 1 and tiny_data.test_overlap() == first
    assert first == pytest.approx(
        ngram_overlap(tiny_data.train_chunks, tiny_data.heldout_chunks["test"], OVERLAP_N)
    )


def test_an_existing_sentencepiece_model_is_used_as_is(tiny_data, tmp_path):
    """data.tokenizer_path (e.g. T5's published spiece.model): no training, the same examples as the model it
    is a copy of, and the export's spiece.model is that file byte for byte; a bad file is refused up front."""
    import shutil

    from glu_study.train import train

    own = tmp_path / "t5" / "spiece.model"
    own.parent.mkdir()
    shutil.copyfile(tiny_data.info.spiece_model, own)
    data = PretrainData(compose([*TINY, f"data.tokenizer_path={own}"]).data, log=lambda *a: None)
    assert data.info.spiece_model == str(own.resolve()) and data.vocab_size == tiny_data.vocab_size
    assert np.array_equal(data.train_chunks, tiny_data.train_chunks)
    summary = train(compose([*TINY, f"data.tokenizer_path={own}"]), tmp_path / "run")
    assert (tmp_path / "run" / "model" / "spiece.model").read_bytes() == own.read_bytes()
    assert summary["steps"] == 6
    (tmp_path / "bad.model").write_bytes(b"not a model")
    for path, fragment in (
        (tmp_path / "none.model", "no such file"),
        (tmp_path / "bad.model", "not a SentencePiece"),
    ):
        with pytest.raises(DataError, match=fragment):
            PretrainData(compose([*TINY, f"data.tokenizer_path={path}"]).data, log=lambda *a: None)


def test_packed_batches_carry_no_attention_mask_and_train_as_masked_ones_do(tiny_data):
    """Packed chunks fill every input: no `attention_mask` (HF's T5 then keeps its bias (1, heads, L, L)), and the
    loss and gradients equal those of the same batch with an all-ones mask, bit for bit on CPU."""
    import torch

    from glu_study.config import compose
    from glu_study.ffn import check_variant_config
    from glu_study.model import build_model
    from tests.helpers import TINY

    cfg = compose(TINY)
    batch = tiny_data.train_batch(0, 4, seed=0)
    assert "attention_mask" not in batch and "attention_mask" not in next(tiny_data.eval_batches(4))
    model = build_model(cfg.model, check_variant_config(cfg.ffn), tiny_data.vocab_size, 0)
    masked = {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}
    grads = []
    for b in (batch, masked):
        model.zero_grad()
        loss = model(**b).loss
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1], strict=True))
