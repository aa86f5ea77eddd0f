"""T5's span arithmetic: lengths, noise masks, sentinels, and impossible settings."""

from __future__ import annotations

import numpy as np
import pytest

from glu_study.data import (
    EOS_ID,
    compute_input_and_target_lengths,
    random_spans_noise_mask,
    span_corrupt,
)
from glu_study.data.spans import merge_back, validate_span_settings
from glu_study.errors import DataError


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
