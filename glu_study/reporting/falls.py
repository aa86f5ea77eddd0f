"""Where a run's training loss falls late in training: the rule the repetition control (regime_control) and the
Table 1 reading (each variant's fall step) share.

The fall of a run is read off its training loss (logged every `trainer.log_every` steps; the held-out figure is
evaluated too rarely to place it): the first logged step at which the mean loss over the last FALL_WINDOW steps
is at least FALL_DROP nats under the mean over the FALL_WINDOW steps before, and at least twice the previous
window's drop (an acceleration, which the early, slowing descent never is), before the learning-rate decay
begins (trainer.decay_fraction: the last 10% of training, where the decay itself lowers the loss). The rule and
its constants were fixed on the reference study's default-corpus runs before any control run existed.
"""

from __future__ import annotations

import math

import numpy as np

from glu_study.reporting.records import RunRecord

FALL_WINDOW = 100  # steps
FALL_DROP = 0.1  # nats of training loss between consecutive windows


def decay_start(run: RunRecord) -> float:
    """The step where the schedule's final linear decay begins (trainer.decay_fraction)."""
    return (1 - run.decay_fraction) * run.steps


def fall_step(curve: list[tuple[int, float]], before: float) -> int | None:
    """The first logged step of the late fall (the module's docstring) before step `before` (the decay's
    start), or None."""
    s = np.array([a for a, _ in curve], dtype=float)
    loss = np.array([b for _, b in curve], dtype=float)
    w = FALL_WINDOW

    def mean(lo: float, hi: float) -> float:
        inside = loss[(s > lo) & (s <= hi)]
        return float(inside.mean()) if inside.size else math.nan

    for step in s:
        if step < 3 * w or step >= before:
            continue
        drop = mean(step - 2 * w, step - w) - mean(step - w, step)
        previous = mean(step - 3 * w, step - 2 * w) - mean(step - 2 * w, step - w)
        if drop >= FALL_DROP and drop >= 2 * previous:
            return int(step)
    return None
