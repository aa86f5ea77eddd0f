"""The repetition control (experiment=regime_control): does the late fall of the loss follow the step count or
the passes over the data?

At the paper's ratio t5_nano passes over the default embedded corpus ~2.1 times, and its training loss falls
sharply late in training (the held-out figure follows it). The control trains the same recipe for the same steps
on a larger corpus (data=embedded_large), which those steps pass over fewer times. If the fall is the model
re-reading its data, it comes later in steps there, at the same number of passes; if it belongs to the
optimisation (the step count, the schedule), at the same step.

The fall of a run is read by glu_study.reporting.falls (its rule and constants were fixed on the reference
study's default-corpus runs before any control run existed).

Each (variant, seed) pairs its reference run (the default corpus) with its control run; the two corpora differ,
so their figures are never pooled — only where each run's loss falls is compared.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glu_study.errors import DataError
from glu_study.ffn import get_variant
from glu_study.reporting.falls import FALL_DROP, FALL_WINDOW, decay_start, fall_step
from glu_study.reporting.figures import finish, pyplot
from glu_study.reporting.records import RunRecord, check_one_corpus, unigram_floor
from glu_study.reporting.table1 import ALPHA, regime_line

MIN_PASSES_RATIO = 1.2  # corpora closer in size than this cannot tell the two explanations apart


@dataclass
class Pair:
    ffn: str
    seed: int
    reference: RunRecord
    control: RunRecord
    ref_fall: int | None
    ctrl_fall: int | None

    def passes_at(self, run: RunRecord, step: int | None) -> float | None:
        return None if step is None or run.data_epochs is None else run.data_epochs * step / run.steps

    @property
    def passes_ratio(self) -> float:
        """How many times later in steps the control reaches a given number of passes."""
        return self.reference.data_epochs / self.control.data_epochs

    @property
    def follows(self) -> str | None:
        """'steps', 'passes', 'neither', or None where the pair says nothing (no fall on the default corpus
        before the decay: neither explanation predicts where the control's would be)."""
        if self.ref_fall is None:
            return None if self.ctrl_fall is None else "neither"
        expected_passes = self.ref_fall * self.passes_ratio
        if self.ctrl_fall is None:  # no fall before the decay: what the passes predict if theirs lies beyond
            return "passes" if expected_passes >= decay_start(self.control) else "neither"
        log_r = math.log(self.ctrl_fall / self.ref_fall)
        return "steps" if abs(log_r) < abs(log_r - math.log(self.passes_ratio)) else "passes"


def pairs(reference: list[RunRecord], control: list[RunRecord]) -> list[Pair]:
    ref = {(r.ffn, r.seed): r for r in reference}
    out = []
    for c in sorted(control, key=lambda r: (get_variant(r.ffn).paper_name, r.seed)):
        r = ref.get((c.ffn, c.seed))
        if r is None:
            raise DataError(f"control run {c.name} has no reference run of the same variant and seed")
        if (r.steps, r.model, r.decay_fraction) != (c.steps, c.model, c.decay_fraction):
            raise DataError(
                f"{c.name}: the control must train the reference's model with its steps and schedule"
            )
        if r.data_epochs is None or c.data_epochs is None:
            raise DataError(f"{c.name}: the records predate data_epochs (passes over the data)")
        falls = (fall_step(r.train_curve, decay_start(r)), fall_step(c.train_curve, decay_start(c)))
        out.append(Pair(c.ffn, c.seed, r, c, *falls))
    return out


def split_reference(
    records: list[RunRecord], reference_group: str
) -> tuple[list[RunRecord], list[RunRecord]]:
    """The reference study's runs and the control's, each on one corpus, the two corpora different."""
    reference = [r for r in records if r.group == reference_group]
    control = [r for r in records if r.group != reference_group]
    if not reference or not control:
        groups = ", ".join(sorted({r.group for r in records}))
        raise DataError(
            f"--reference {reference_group}: need runs of that group and of another (found: {groups})"
        )
    check_one_corpus(reference)
    check_one_corpus(control)
    if reference[0].corpus_fingerprint == control[0].corpus_fingerprint:
        raise DataError("the control and its reference saw the same corpus: nothing is controlled")
    return reference, control


def _f(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def verdict(ps: list[Pair]) -> str:
    ratio = min(abs(math.log(p.passes_ratio)) for p in ps)
    if ratio < math.log(MIN_PASSES_RATIO):
        return (
            f"**not resolved**: the control's corpus changes the passes by only {math.exp(ratio):.2f}x, too little "
            f"to tell the step count from the passes (>= {MIN_PASSES_RATIO}x needed)."
        )
    said = [p.follows for p in ps if p.follows is not None]
    counts = {k: said.count(k) for k in ("steps", "passes", "neither")}
    tally = ", ".join(f"{k} {n}" for k, n in counts.items())
    if len(said) < 2:
        return f"**not resolved**: {len(said)} informative pair(s) ({tally}); at least 2 are needed."
    if counts["steps"] == len(said):
        return f"**the fall follows the step count** in every informative pair ({tally})."
    if counts["passes"] == len(said):
        return f"**the fall follows the passes over the data** in every informative pair ({tally})."
    return f"**not resolved**: the informative pairs disagree ({tally})."


def ratio_line(ps: list[Pair]) -> str | None:
    """A test over the pairs with a fall on both corpora (added once the control had run): the log of each
    control fall's step over its reference fall's, one-sample t-tests against the two predictions — 0 (the step
    count) and log(passes ratio) (the passes; per pair, so the test is on log ratio − log passes ratio). Seed
    noise moves both falls, which is what the t interval carries."""
    from scipy import stats as st

    both = [p for p in ps if p.ref_fall is not None and p.ctrl_fall is not None]
    if len(both) < 2:
        return None
    r = np.array([math.log(p.ctrl_fall / p.ref_fall) for p in both])
    lp = np.array([math.log(p.passes_ratio) for p in both])
    steps = st.ttest_1samp(r, 0.0)
    low, high = steps.confidence_interval(0.95)
    p_steps, p_passes = float(steps.pvalue), float(st.ttest_1samp(r - lp, 0.0).pvalue)
    said = {
        (False, True): "**rejects the passes** and is consistent with the step count",
        (True, False): "**rejects the step count** and is consistent with the passes",
        (True, True): "**rejects both**",
        (False, False): "**rejects neither**",
    }[(p_steps < ALPHA, p_passes < ALPHA)]
    return (
        f"- Over the {len(r)} pairs with a fall on both corpora, the control's fall comes at "
        f"{math.exp(r.mean()):.2f}x the reference's step (geometric mean; 95% CI [{math.exp(low):.2f}, "
        f"{math.exp(high):.2f}]x, t over pairs). The step count predicts 1x (two-sided p {p_steps:.2g}), "
        f"the passes {math.exp(lp.mean()):.2f}x (p {p_passes:.2g}): the test {said} (alpha {ALPHA}; added after the "
        "control ran, beside the pair rule fixed before it)."
    )


def floor_line(ps: list[Pair], side: str) -> str:
    """Each corpus's regime line (Table 1's): its own held-out set, its own unigram floor, FFN_ReLU's margin."""
    runs = [getattr(p, side) for p in ps]
    return regime_line(runs, unigram_floor(runs), label=f"Regime, the {side}'s corpus ({runs[0].group})")


def threads_line(ps: list[Pair]) -> str:
    """Whether each pair's two runs used one CPU thread count: the count changes a run's floating-point bits,
    and the step of its fall with them (table1_regime_lr and table1_regime ran one cell both ways)."""
    differ = [p for p in ps if p.reference.num_threads != p.control.num_threads]
    if not differ:
        return "- CPU threads: both runs of every pair used the same count (trainer.num_threads)."
    said = ", ".join(
        f"{get_variant(p.ffn).paper_name} seed {p.seed} ({p.reference.num_threads} / {p.control.num_threads})"
        for p in differ
    )
    return (
        f"- CPU threads: **{said} ran reference and control with different counts** (trainer.num_threads, 0 = "
        "torch's default): the count changes the bits, so those pairs' falls differ by that noise too."
    )


def control_markdown(ps: list[Pair], control_group: str, reference_group: str) -> str:
    out = io.StringIO()
    w = out.write
    steps, ratio = ps[0].control.steps, float(np.mean([p.passes_ratio for p in ps]))
    w(f"# Repetition control: {control_group} against {reference_group}\n\n")
    w(
        f"Where the training loss falls late in training, on the reference's corpus and on the control's, same "
        f"variant, seed, model ({ps[0].control.model}), recipe and {steps} steps. The reference passes over its "
        f"training chunks {ps[0].reference.data_epochs:.2f} times, the control {ps[0].control.data_epochs:.2f}: "
        f"a fall that follows the passes comes {ratio:.2f}x later in steps on the control's corpus, one that "
        f"follows the step count at the same step. Fall: the first logged step whose {FALL_WINDOW}-step mean "
        f"training loss is >= {FALL_DROP} nats under the previous {FALL_WINDOW} steps' and >= 2x that window's "
        f"drop, before the decay (step {decay_start(ps[0].control):.0f}); – = none before it. The corpora "
        "differ, so the held-out levels are not compared.\n\n"
    )
    w("| variant | seed | fall (reference) | passes there | fall (control) | passes there | follows |\n")
    w("|---|---:|---:|---:|---:|---:|---|\n")
    for p in ps:
        w(
            f"| {get_variant(p.ffn).paper_name} | {p.seed} | {_f(p.ref_fall, 'd')} | "
            f"{_f(p.passes_at(p.reference, p.ref_fall), '.2f')} | {_f(p.ctrl_fall, 'd')} | "
            f"{_f(p.passes_at(p.control, p.ctrl_fall), '.2f')} | {p.follows or 'no fall in the reference'} |\n"
        )
    w(
        "\n## Reading\n\n"
        f"- {verdict(ps)} A pair with no fall on either corpus before the decay says nothing; one that falls on the "
        "control's corpus only follows neither (both explanations put that fall at or past the decay's start); one "
        "whose control shows no fall counts for the passes only if the passes put its fall past the decay's start. The "
        "step of a fall varies from seed to seed on one corpus too, so a pair is weak evidence alone.\n"
        + (f"{line}\n" if (line := ratio_line(ps)) else "")
        + f"{threads_line(ps)}\n"
        + "".join(f"{floor_line(ps, side)}\n" for side in ("reference", "control"))
    )
    return out.getvalue()


def plot_control(ps: list[Pair], path: Path) -> None:
    """Training loss against the step and against the passes over the data, both corpora."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for p in ps:
        for run, style, corpus in ((p.reference, "-", "reference"), (p.control, "--", "control")):
            steps = np.array([a for a, _ in run.train_curve], dtype=float)
            loss = [b for _, b in run.train_curve]
            label = f"{get_variant(p.ffn).paper_name} s{p.seed} {corpus}"
            axes[0].plot(steps, loss, style, lw=1, label=label)
            axes[1].plot(steps * run.data_epochs / run.steps, loss, style, lw=1, label=label)
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("training loss")
    axes[0].grid(alpha=0.3)
    finish(
        fig,
        axes[1],
        path,
        xlabel="passes over the training chunks",
        ylabel="training loss",
        title="solid: the reference's corpus; dashed: the control's",
    )


def write_control(ps: list[Pair], out_dir: Path, reference_group: str) -> None:
    """regime_control.md and regime_control.png of these pairs (glu_study.report --reference)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "regime_control.md").write_text(control_markdown(ps, ps[0].control.group, reference_group))
    plot_control(ps, out_dir / "regime_control.png")
