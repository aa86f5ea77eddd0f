"""Examples-proportional mixing, and batches as a pure function of (seed, step)."""

from __future__ import annotations

import pytest

from glu_study.finetuning.mixture import mixture_rates, sample_batch


def test_mixture_is_examples_proportional_and_batches_are_a_function_of_step():
    assert mixture_rates([100, 300, 10_000], limit=1000) == pytest.approx(
        [0.071428, 0.214286, 0.714286], rel=1e-4
    )
    import datasets

    sets = [
        datasets.Dataset.from_dict({"input_ids": [[t]] * n, "labels": [[t + 1]] * n})
        for t, n in ((1, 3), (3, 9))
    ]
    rates = mixture_rates([3, 9], 100)
    a, b = sample_batch(sets, rates, 64, 0, 5), sample_batch(sets, rates, 64, 0, 5)
    assert a == b and a != sample_batch(sets, rates, 64, 0, 6)
    share = sum(x == [3] for x, _ in a) / 64
    assert 0.55 < share < 0.95  # task 2 has 3/4 of the examples
