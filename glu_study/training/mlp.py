"""The MLP comparison's model and loop: input projection -> one T5 feed-forward layer (HF's `T5LayerFF`: RMS
norm, the variant's FFN, residual — the block pretraining uses, built from the registry, gated d_ff = 2/3 of the
base) -> linear head, trained with Adam on one image set (glu_study.data.images)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5LayerFF

from glu_study.data.images import Split
from glu_study.ffn import Variant, get_variant
from glu_study.ffn.custom import install_blocks


class FFNClassifier(nn.Module):
    def __init__(self, d_in: int, n_classes: int, variant: Variant, d_model: int = 64, d_ff: int = 256):
        super().__init__()
        self.proj = nn.Linear(d_in, d_model)
        cfg = T5Config(
            d_model=d_model,
            d_ff=variant.d_ff(d_ff),
            feed_forward_proj=variant.build_proj,
            dropout_rate=0.0,
        )
        self.ffn = T5LayerFF(cfg)  # the T5 block itself: norm, FFN variant, residual
        if variant.module:  # a structural variant (Maxout): its block in place of HF's, same weights
            install_blocks(self, variant.module, variant.num_matrices)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x):
        return self.head(self.ffn(self.proj(x)))


@dataclass
class MLPResult:
    variant: str
    seed: int
    test_accuracy: float
    final_loss: float
    losses: list[float]  # mean training loss per epoch
    params: int


def train_one(split: Split, variant: str, seed: int, epochs: int, batch_size: int, lr: float) -> MLPResult:
    torch.manual_seed(seed)
    model = FFNClassifier(split.x_train.shape[1], split.n_classes, get_variant(variant))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(split.x_train)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(split.x_train[idx]), split.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
    with torch.no_grad():
        acc = float((model(split.x_test).argmax(-1) == split.y_test).float().mean())
    return MLPResult(variant, seed, acc, losses[-1], losses, sum(p.numel() for p in model.parameters()))
