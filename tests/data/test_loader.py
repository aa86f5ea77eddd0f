"""The DataLoader that builds batches ahead: the same batches as PretrainData.train_batch, in and out of worker
processes, for every rank and micro-batch, and from any position (what a resumed run starts at)."""

from __future__ import annotations

import itertools

import pytest
import torch

from glu_study.data.loader import StepBatches, step_loader

BATCH, ACCUM, RANKS = 8, 2, 2  # 2 examples per micro-batch per rank


def expected(data, position: int, rank: int, seed: int = 0) -> list[dict]:
    per_rank = BATCH // (ACCUM * RANKS)
    return [data.train_batch(position + (m * RANKS + rank) * per_rank, per_rank, seed) for m in range(ACCUM)]


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_gives_train_batch_s_batches_for_each_rank_from_any_position(tiny_data, workers):
    for rank, start_step in itertools.product(range(RANKS), (0, 5)):
        batches = StepBatches(tiny_data, 0, BATCH // (ACCUM * RANKS), ACCUM, RANKS, rank)
        loader = step_loader(batches, start_step * BATCH, 4, BATCH, workers=workers, pin_memory=False)
        items = list(loader)
        assert [p for p, _ in items] == [(start_step + k) * BATCH for k in range(4)]
        for position, micro in items:
            assert_same(micro, expected(tiny_data, position, rank))


def test_a_loader_started_where_a_run_stopped_continues_its_sequence(tiny_data):
    batches = StepBatches(tiny_data, 3, BATCH // ACCUM, ACCUM)
    whole = list(step_loader(batches, 0, 6, BATCH, workers=0, pin_memory=False))
    resumed = list(step_loader(batches, 2 * BATCH, 4, BATCH, workers=2, pin_memory=False))
    for (p, a), (q, b) in zip(whole[2:], resumed, strict=True):
        assert p == q
        assert_same(a, b)
