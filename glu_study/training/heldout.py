"""The paper's metric: held-out log-perplexity, the mean cross-entropy in nats per target token, and the same
figure split into the target tokens a model could copy from its input and the ones it could not.

Why the split: at the paper's training length on CPU the loss falls late and abruptly (reports/table1_regime).
If that fall is the decoder learning to read the encoder around each sentinel, it sits on target tokens whose id
also occurs in the example's visible input. So every evaluation reports, beside the paper's metric:
  <set>/copyable_log_perplexity  over target tokens whose id occurs in the visible (uncorrupted) input,
  <set>/novel_log_perplexity     over the others,
  <set>/copyable_share           the copyable tokens' share of all target tokens.
The classes partition the tokens the paper's metric counts (sentinels and EOS included, padding excluded), so
share x copyable + (1 - share) x novel is the paper's metric. Sentinels and EOS occur in every input (a sentinel
marks each dropped span, EOS ends the input), so by this rule they are copyable; an example's novel tokens are
text tokens only.
"""

from __future__ import annotations

import torch

from glu_study.data import LABEL_PAD, PretrainData

TEST_METRIC = "eval/log_perplexity"  # the reported figure (the contract's name)
VAL_METRIC = "val/log_perplexity"  # the validation set's: every choice is made on it, never on the test set
SPLIT_PREFIX = {"test": "eval", "val": "val"}  # the held-out sets and their metric names' prefixes
COPYABLE, NOVEL, COPYABLE_SHARE = "copyable_log_perplexity", "novel_log_perplexity", "copyable_share"


def heldout_figures(model, data: PretrainData, device, precision: str, batch_size: int) -> dict[str, float]:
    """Every held-out figure of one evaluation (both sets, the paper's metric and its two classes) under their
    metric names."""
    figures = {}
    for split, prefix in SPLIT_PREFIX.items():
        for key, value in split_figures(model, data, device, precision, batch_size, split).items():
            figures[f"{prefix}/{key}"] = value
    return figures


def heldout_log_perplexity(
    model, data: PretrainData, device, precision: str, batch_size: int, split: str = "test"
) -> float:
    """The paper's metric over one of the run's fixed held-out sets (`split`: test, the reported figure, or val)."""
    return split_figures(model, data, device, precision, batch_size, split)["log_perplexity"]


@torch.no_grad()
def split_figures(model, data: PretrainData, device, precision: str, batch_size: int, split: str) -> dict:
    """One held-out set's figures (module docstring): log_perplexity and its copyable / novel classes."""
    was_training = model.training
    model.eval()
    # float64 sums, so that the two classes add up to the whole to ~1e-12, not float32's ~1e-6
    nll = {"all": 0.0, "copyable": 0.0}
    count = {"all": 0, "copyable": 0}
    for batch in data.eval_batches(batch_size, split):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(**batch).logits
        labels = batch["labels"]
        token_nll = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), labels, ignore_index=LABEL_PAD, reduction="none"
        ).double()  # (batch, targets); 0 at padding
        scored = labels != LABEL_PAD
        visible = batch["input_ids"]
        if "attention_mask" in batch:  # padding (where there is any) matches nothing
            visible = visible.masked_fill(batch["attention_mask"] == 0, LABEL_PAD)
        copyable = (labels.unsqueeze(-1) == visible.unsqueeze(1)).any(-1) & scored
        nll["all"] += token_nll.sum().item()
        nll["copyable"] += token_nll[copyable].sum().item()
        count["all"] += int(scored.sum())
        count["copyable"] += int(copyable.sum())
    model.train(was_training)
    novel = count["all"] - count["copyable"]
    return {
        "log_perplexity": nll["all"] / count["all"],
        COPYABLE: nll["copyable"] / count["copyable"] if count["copyable"] else float("nan"),
        NOVEL: (nll["all"] - nll["copyable"]) / novel if novel else float("nan"),
        COPYABLE_SHARE: count["copyable"] / count["all"],
    }
