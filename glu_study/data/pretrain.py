"""Packed, span-corrupted pretraining examples, addressable by a global example index (see PretrainData)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glu_study.data.corpora import corpus_identity
from glu_study.data.prepared import prepare_data
from glu_study.data.shards import open_split
from glu_study.data.spans import (
    EOS_ID,
    LABEL_PAD,
    PAD_ID,
    compute_input_and_target_lengths,
    random_spans_noise_mask,
    span_corrupt,
    validate_span_settings,
)
from glu_study.data.tokenizer import tokenizer_fingerprint, tokenizer_id
from glu_study.errors import DataError
from glu_study.files import build_lock, fingerprint, write_json_atomic


def spread(total: int, n: int) -> np.ndarray:
    """`n` indices in [0, total), evenly spaced from the first to the last."""
    return np.linspace(0, total - 1, n).round().astype(np.int64)


def heldout_indices(total: int, test: int, val: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, validation) chunk indices of a held-out stream of `total` chunks, disjoint.

    The test set is `test` chunks spread over the whole stream, exactly as it was before a validation set
    existed (so earlier figures stay comparable); the validation set is `val` chunks spread over the chunks the
    test set leaves."""
    test_idx = spread(total, test)
    rest = np.setdiff1d(np.arange(total), test_idx)
    if val > len(rest):
        raise DataError(
            f"the held-out split has {total} chunks: data.eval_examples={test} leaves {len(rest)} for the "
            f"validation set, data.val_examples={val} needs more held-out text"
        )
    return test_idx, rest[spread(len(rest), val)] if val else rest[:0]


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of every n-token window along the last axis (polynomial, wrapping: collisions among a few
    million windows are improbable enough for a share measured to three digits)."""
    windows = np.lib.stride_tricks.sliding_window_view(tokens, n, axis=-1).astype(np.uint64)
    h = np.zeros(windows.shape[:-1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            h = h * np.uint64(1_000_003) + windows[..., i] + np.uint64(1)
    return h.ravel()


OVERLAP_BLOCK = 1 << 22  # training tokens hashed at a time: ~32 MB of hashes, whatever the corpus's size


def ngram_overlap(train: np.ndarray, held: np.ndarray, n: int, block: int = OVERLAP_BLOCK) -> float:
    """The share of `held`'s n-token windows (within each of its chunks) that occur anywhere in `train` (its
    windows run across chunk boundaries, as the flat stream does): how much of a held-out set the training split
    has already shown, near-copies across files included.

    Memory is bounded by the held-out set, not the training split: the held-out windows' hashes are sorted once,
    and the training stream (a memory map: read, never loaded) goes past them in blocks that overlap by n - 1
    tokens, so every training window is looked up exactly once (binary search, no sort of the stream)."""
    wanted = np.unique(ngram_hashes(held, n))
    found = np.zeros(len(wanted), dtype=bool)
    flat = train.reshape(-1)
    for start in range(0, max(len(flat) - n + 1, 0), block):
        hashes = ngram_hashes(np.asarray(flat[start : start + block + n - 1]), n)
        at = np.searchsorted(wanted, hashes).clip(max=len(wanted) - 1)
        found[at[wanted[at] == hashes]] = True
    return float(found[np.searchsorted(wanted, ngram_hashes(held, n))].mean())


OVERLAP_N = 8  # tokens: long enough that a shared window is a shared phrase, not a common word pair


# Held-out sets and the stream id their masks are drawn with (rng([eval_seed, *stream, i])): the test set's
# masks are what they always were.
HELDOUT_SPLITS = {"test": (), "val": (1,)}


@dataclass
class DataInfo:
    vocab_size: int  # model vocabulary: SentencePiece pieces + sentinels
    raw_length: int
    inputs_length: int
    targets_length: int
    train_tokens: int
    train_examples: int
    spiece_model: str
    corpus_dir: str
    corpus_fingerprint: str  # the first 16 hex digits of the corpus files' SHA-256
    corpus_sources: list  # [{"name", "version"}, ...] the corpus was built from, and the Python that read it
    tokenizer_fingerprint: str  # the first 16 hex digits of spiece.model's SHA-256


class PretrainData:
    """Span-corrupted examples from a packed token stream, addressable by a global example index.

    Example k of training is chunk perm_e[k mod N] of epoch e = k // N, where perm_e is a permutation drawn
    from (seed, e), and its noise mask is drawn from (seed, e, chunk). A run's position is therefore a
    single integer (the number of examples consumed) and resuming from it replays the same batches.
    The held-out split gives two fixed sets, with masks from `eval_seed`, identical for every run of an
    experiment whatever its `seed`: the test set (`eval_examples` chunks spread evenly over the whole held-out
    stream, the reported figure) and, disjoint from it, the validation set (`val_examples` chunks spread over
    the rest), on which every choice (learning rate, steps) is made.
    """

    def __init__(self, cfg, *, log=print):
        validate_span_settings(cfg.inputs_length, cfg.noise_density, cfg.mean_noise_span_length)
        self.cfg = cfg
        self.raw_length, self.targets_length = compute_input_and_target_lengths(
            cfg.inputs_length, cfg.noise_density, cfg.mean_noise_span_length
        )
        prepared = prepare_data(cfg, log=log)
        corpus_dir, spiece_model = prepared.corpus_dir, prepared.spiece_model
        train, train_counts = open_split(prepared.tokens_dir, "train")  # memory maps: nothing read yet
        held, _ = open_split(prepared.tokens_dir, "heldout")
        self.vocab_size = prepared.pieces + cfg.extra_ids
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
        # The training chunks' token counts: the split's, less its dropped tail (a few tokens read, not the stream).
        tail = np.bincount(train[n_train * self.raw_length :], minlength=len(train_counts))
        self.train_counts = train_counts - tail
        self.n_heldout_chunks = n_held
        held_chunks = held[: n_held * self.raw_length].reshape(n_held, self.raw_length)
        test_idx, val_idx = heldout_indices(n_held, cfg.eval_examples, cfg.val_examples)
        self.heldout_chunks = {
            k: held_chunks[i].astype(np.int32) for k, i in (("test", test_idx), ("val", val_idx))
        }
        self.info = DataInfo(
            vocab_size=self.vocab_size,
            raw_length=self.raw_length,
            inputs_length=cfg.inputs_length,
            targets_length=self.targets_length,
            train_tokens=len(train),
            train_examples=n_train,
            spiece_model=str(spiece_model),
            corpus_dir=str(corpus_dir),
            **corpus_identity(corpus_dir, cfg.source),
            tokenizer_fingerprint=tokenizer_fingerprint(spiece_model),
        )
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._eval_pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        log(
            f"data: {cfg.source} corpus {len(train):,} train / {len(held):,} held-out tokens, vocab "
            f"{self.vocab_size:,}, {self.raw_length} raw -> {cfg.inputs_length}/{self.targets_length} tokens, "
            f"corpus {self.info.corpus_fingerprint}, tokenizer {self.info.tokenizer_fingerprint}"
        )

    def _example(self, chunk: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        mask = random_spans_noise_mask(
            len(chunk), self.cfg.noise_density, self.cfg.mean_noise_span_length, rng
        )
        return span_corrupt(chunk, mask, self.vocab_size)

    def _collate(self, pairs) -> dict[str, torch.Tensor]:
        """Pad to the fixed lengths (inputs with 0, labels with -100). Packed chunks fill every input, so there
        is no padding and no `attention_mask`: HF's T5 then adds only its (1, heads, L, L) position bias instead
        of a per-example mask (under torch.compile it cannot tell an all-ones mask from a real one, and builds a
        (batch, heads, L, L) bias that needs grad). The loss and gradients are the same bit for bit on CPU."""
        inputs = np.full((len(pairs), self.cfg.inputs_length), PAD_ID, dtype=np.int64)
        labels = np.full((len(pairs), self.targets_length), LABEL_PAD, dtype=np.int64)
        for i, (x, y) in enumerate(pairs):
            inputs[i, : len(x)] = x
            labels[i, : len(y)] = y
        batch = {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}
        if any(len(x) < self.cfg.inputs_length for x, _ in pairs):
            batch["attention_mask"] = torch.from_numpy(inputs != PAD_ID).long()
        return batch

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        if (seed, epoch) not in self._perm_cache:
            self._perm_cache = {
                (seed, epoch): np.random.default_rng([seed, epoch]).permutation(len(self.train_chunks))
            }
        return self._perm_cache[(seed, epoch)]

    def train_example(self, index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, within = divmod(index, len(self.train_chunks))
        chunk = int(self._permutation(seed, epoch)[within])
        tokens = self.train_chunks[chunk].astype(
            np.int32
        )  # from the map; sentinel arithmetic needs signed ids
        return self._example(tokens, np.random.default_rng([seed, epoch, chunk]))

    def documents_for(self, factor: float) -> int:
        """How many training documents `factor` times this corpus's training text holds (its stats.json)."""
        stats = json.loads((Path(self.info.corpus_dir) / "stats.json").read_text())
        docs = stats.get("train_documents", stats.get("train_paragraphs", 0))
        return int(round(docs * factor, -3 if docs * factor > 10_000 else 0))

    def data_epochs(self, examples: int) -> float:
        """Passes over the training chunks that `examples` consumed examples make."""
        return examples / len(self.train_chunks)

    def test_overlap(self) -> float:
        """The share of the test set's OVERLAP_N-token windows that occur in the training split; measured once per
        corpus, tokenizer and test set (a few seconds for the embedded corpus) and cached beside them."""
        info = self.info
        tokenizer = tokenizer_id(Path(info.spiece_model))
        key = fingerprint(info.corpus_fingerprint, tokenizer, self.raw_length, self.cfg.eval_examples)
        path = Path(self.cfg.cache_dir) / "overlap" / f"{key}-n{OVERLAP_N}.json"
        if path.is_file():
            return float(json.loads(path.read_text())["share"])
        # one builder (array jobs and torchrun ranks wait for it, then read its figure)
        with build_lock(Path(self.cfg.cache_dir) / "locks" / f"overlap-{key}.lock", "the test-set overlap"):
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                share = ngram_overlap(self.train_chunks, self.heldout_chunks["test"], OVERLAP_N)
                write_json_atomic(path, {"share": share, "n": OVERLAP_N})
        return float(json.loads(path.read_text())["share"])

    def unigram_floor(self) -> float:
        """The held-out figure of a model that knows only the training split's token frequencies.

        Each corrupted-text target token costs -log p(token) under the training split's unigram distribution
        (add-one smoothed); sentinels and EOS, whose positions follow from the inputs, cost nothing. The mean is
        over every target token, as `eval/log_perplexity` is, so a model that has not beaten this figure has not
        yet learned more than token frequencies.
        """
        counts = np.zeros(self.vocab_size, dtype=np.float64)
        counts[: len(self.train_counts)] = self.train_counts
        counts += 1.0
        nll = -np.log(counts / counts.sum())
        text_ids = self.vocab_size - self.cfg.extra_ids  # sentinels are the top extra_ids ids
        total, count = 0.0, 0
        for _, labels in self.eval_pairs():
            text = labels[(labels < text_ids) & (labels != EOS_ID)]
            total += float(nll[text].sum())
            count += len(labels)
        return total / count

    def train_batch(self, start: int, size: int, seed: int) -> dict[str, torch.Tensor]:
        """Examples start .. start+size-1 of the run's example sequence."""
        return self._collate([self.train_example(k, seed) for k in range(start, start + size)])

    def eval_pairs(self, split: str = "test") -> list[tuple[np.ndarray, np.ndarray]]:
        """A held-out set's (inputs, targets) pairs (`split`: test or val); a set never changes, so it is
        corrupted once per run."""
        if split not in self._eval_pairs:
            stream = HELDOUT_SPLITS[split]
            self._eval_pairs[split] = [
                self._example(chunk, np.random.default_rng([self.cfg.eval_seed, *stream, i]))
                for i, chunk in enumerate(self.heldout_chunks[split])
            ]
        return self._eval_pairs[split]

    def eval_batches(self, batch_size: int, split: str = "test") -> Iterator[dict[str, torch.Tensor]]:
        pairs = self.eval_pairs(split)
        for i in range(0, len(pairs), batch_size):
            yield self._collate(pairs[i : i + batch_size])
