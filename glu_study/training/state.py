"""The loop's resumable state, typed: what a checkpoint keeps besides the model, optimizer, schedule and RNGs.

`RunState` is what the shared loop (glu_study.training.loop) steps and times; each command extends it with what
it alone tracks. `state_dict()` / `load_state_dict()` are what checkpoints store and restore, as for torch's own
objects; a checkpoint written before a field existed restores that field's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class RunState:
    step: int = 0  # optimizer steps taken
    wall_s: float = 0.0  # seconds spent stepping (evaluations included), summed over every resumption
    tokens_per_s: float | None = None  # the last logging window's throughput
    wandb_id: str | None = None  # kept, so that a resumed job continues the same W&B run

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, saved: dict) -> None:
        for f in fields(self):
            default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
            setattr(self, f.name, saved.get(f.name, default))


@dataclass
class PretrainState(RunState):
    data_position: int = 0  # examples consumed: the data order resumes from this one integer
    last_eval: float | None = None  # eval/log_perplexity (test) of the latest evaluation
    best_eval: float | None = None
    last_val: float | None = None  # val/log_perplexity of the latest evaluation
    # every figure of the latest evaluation (glu_study.training.heldout: both sets, copyable and novel tokens)
    last_figures: dict = field(default_factory=dict)

    def record_eval(self, figures: dict[str, float]) -> None:
        """One evaluation's figures (heldout_figures), the paper's metric of the test set and the validation set's
        among them."""
        test, val = figures["eval/log_perplexity"], figures["val/log_perplexity"]
        self.last_eval, self.last_val, self.last_figures = test, val, dict(figures)
        self.best_eval = test if self.best_eval is None else min(self.best_eval, test)


@dataclass
class FinetuneState(RunState):
    best: dict = field(default_factory=dict)  # task -> its best dev scores and their step (T5's protocol)
    final: dict = field(default_factory=dict)  # task -> the latest dev scores
