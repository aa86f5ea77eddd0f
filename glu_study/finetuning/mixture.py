"""Fine-tuning data: text-to-text pairs tokenised once (datasets caches the map), mixed across tasks as T5 does
(examples-proportional), and sampled as a pure function of (seed, step), so a resumed fine-tune needs no data state.
"""

from __future__ import annotations

import numpy as np
import torch

from glu_study.data import LABEL_PAD, PAD_ID
from glu_study.errors import DataError
from glu_study.files import fingerprint
from glu_study.finetuning.tasks import Task, text_to_text


def _rows(batch: dict) -> list[dict]:
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


# Part of the cache key of tokenised training sets: bump it whenever text_to_text's output changes.
CASTING_VERSION = 1


def encode_train(task: Task, ds, tok, s, tokenizer_id: str):
    """A dataset of (input_ids, labels), one row per training pair (ReCoRD: one per answer).

    `datasets` caches the map beside the source data. Its automatic key hashes the function with the tokenizer
    inside, which is not stable across processes, so the key is given: the source's fingerprint, the task, the
    tokenizer file's hash, the lengths and CASTING_VERSION.
    """

    def encode(batch):
        pairs = [p for row in _rows(batch) for p in text_to_text(task, row, for_training=True)]
        return {
            "input_ids": tok([p[0] for p in pairs], max_length=s.inputs_length, truncation=True)["input_ids"],
            "labels": tok([p[1] for p in pairs], max_length=s.targets_length, truncation=True)["input_ids"],
        }

    if s.max_train_examples and len(ds) > s.max_train_examples:
        ds = ds.shuffle(seed=0).select(range(s.max_train_examples))  # a fixed subset, the same for every run
    key = fingerprint(
        "text-to-text",
        CASTING_VERSION,
        ds._fingerprint,
        task.name,
        tokenizer_id,
        s.inputs_length,
        s.targets_length,
    )
    out = ds.map(
        encode,
        batched=True,
        remove_columns=ds.column_names,
        new_fingerprint=key,
        desc=f"{task.name}: tokenise",
    )
    if len(out) == 0:
        raise DataError(f"{task.name}: no training examples")
    return out


def encode_eval(task: Task, ds, tok, s) -> tuple[list[dict], list[list[int]], int]:
    """The dev rows scored (what the metrics need), their tokenised inputs, and the split's full size."""
    total = len(ds)
    if s.eval_examples:
        ds = ds.select(range(min(s.eval_examples, total)))
    rows = list(ds)
    inputs = [text_to_text(task, r, for_training=False)[0][0] for r in rows]
    return rows, tok(inputs, max_length=s.inputs_length, truncation=True)["input_ids"], total


def mixture_rates(sizes: list[int], limit: int) -> np.ndarray:
    """T5's examples-proportional mixing: each task's rate is proportional to min(its size, limit)."""
    r = np.minimum(np.asarray(sizes, dtype=np.float64), limit)
    return r / r.sum()


def sample_batch(train_sets: list, rates: np.ndarray, size: int, seed: int, step: int) -> list[tuple]:
    """The examples of one step: a pure function of (seed, step), so resuming needs no data state."""
    rng = np.random.default_rng([seed, step])
    which = rng.choice(len(train_sets), size=size, p=rates)
    pairs = []
    for t in np.unique(which):
        idx = rng.integers(0, len(train_sets[t]), size=int((which == t).sum()))
        got = train_sets[t][idx.tolist()]
        pairs.extend(zip(got["input_ids"], got["labels"], strict=True))
    order = rng.permutation(len(pairs))  # tasks mixed within the batch, not grouped
    return [pairs[i] for i in order]


def collate(pairs: list[tuple]) -> dict[str, torch.Tensor]:
    """Pad to the longest example of the batch (fine-tuning inputs vary a lot in length)."""
    n_in, n_out = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs)
    input_ids = torch.full((len(pairs), n_in), PAD_ID, dtype=torch.long)
    labels = torch.full((len(pairs), n_out), LABEL_PAD, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        input_ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
    return {"input_ids": input_ids, "attention_mask": (input_ids != PAD_ID).long(), "labels": labels}
