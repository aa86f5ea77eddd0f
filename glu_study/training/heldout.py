"""The paper's metric: held-out log-perplexity, the mean cross-entropy in nats per target token."""

from __future__ import annotations

import torch

from glu_study.data import LABEL_PAD, PretrainData

TEST_METRIC = "eval/log_perplexity"  # the reported figure (the contract's name)
VAL_METRIC = "val/log_perplexity"  # the validation set's: every choice is made on it, never on the test set


def heldout_figures(model, data: PretrainData, device, precision: str, batch_size: int) -> dict[str, float]:
    """Both held-out figures of one evaluation, under their metric names."""
    return {
        metric: heldout_log_perplexity(model, data, device, precision, batch_size, split)
        for metric, split in ((TEST_METRIC, "test"), (VAL_METRIC, "val"))
    }


@torch.no_grad()
def heldout_log_perplexity(
    model, data: PretrainData, device, precision: str, batch_size: int, split: str = "test"
) -> float:
    """Over one of the run's fixed held-out sets (`split`: test, the reported figure, or val); sentinels and EOS
    count, padding does not."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in data.eval_batches(batch_size, split):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(**batch).logits
        labels = batch["labels"]
        total += torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=LABEL_PAD, reduction="sum"
        ).item()
        count += int((labels != LABEL_PAD).sum())
    model.train(was_training)
    return total / count
