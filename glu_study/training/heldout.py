"""The paper's metric: held-out log-perplexity, the mean cross-entropy in nats per target token."""

from __future__ import annotations

import torch

from glu_study.data import LABEL_PAD, PretrainData


@torch.no_grad()
def heldout_log_perplexity(model, data: PretrainData, device, precision: str, batch_size: int) -> float:
    """Over the run's fixed held-out set; sentinels and EOS count, padding does not."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in data.eval_batches(batch_size):
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
