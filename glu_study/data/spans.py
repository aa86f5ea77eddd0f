"""T5's span-corruption arithmetic, ported from t5/data/preprocessors.py to numpy.

`compute_input_and_target_lengths` is T5's `random_spans_helper` (how many raw tokens fill `inputs_length` after
corruption), `random_spans_noise_mask` its noise mask, and `span_corrupt` replaces each noise span with a sentinel
in the inputs and keeps exactly the noise spans in the targets. Sentinels `<extra_id_0>`, `<extra_id_1>`, ...
count down from the top of the vocabulary, as in T5.
"""

from __future__ import annotations

import numpy as np

from glu_study.errors import DataError

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # T5's ids (SentencePiece is trained to use them, no BOS)
LABEL_PAD = -100  # ignored by T5's cross-entropy


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
