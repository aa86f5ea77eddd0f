"""Scoring a model on the dev splits: greedy decoding of the answer text, then each task's metric."""

from __future__ import annotations

import numpy as np
import torch

from glu_study.finetuning.metrics import score_splits
from glu_study.finetuning.mixture import collate
from glu_study.finetuning.tasks import TASKS


@torch.no_grad()
def generate(model, tok, inputs: list[list[int]], s, device) -> list[str]:
    """Greedy answers, batched by input length (sorted, so little padding), returned in input order."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in inputs], kind="stable")
    out: list[str] = [""] * len(inputs)
    for start in range(0, len(order), s.eval_batch_size):
        chunk = order[start : start + s.eval_batch_size]
        batch = collate([(inputs[i], [0]) for i in chunk])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
            ids = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=s.targets_length,
                do_sample=False,
                num_beams=1,
                use_cache=True,
            )
        for i, text in zip(chunk, tok.batch_decode(ids, skip_special_tokens=True), strict=True):
            out[i] = text.strip()
    model.train(was_training)
    return out


def evaluate_tasks(model, tok, eval_sets: dict, s, device) -> dict[str, dict[str, float]]:
    """{task: {metric: value, ..., "score": mean}} over every dev split of every task."""
    scores = {}
    for name, splits in eval_sets.items():
        per_split = {
            split: (generate(model, tok, inputs, s, device), rows)
            for split, (rows, inputs, _) in splits.items()
        }
        scores[name] = score_splits(TASKS[name], per_split)
    return scores
