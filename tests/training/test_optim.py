"""The optimizer is the paper's Adafactor: our transformers Adafactor settings give the same update as an
independent implementation of the same rule, torch.optim.Adafactor (no momentum, beta2 decay -0.8, update
clipping at RMS 1.0, steps scaled by each parameter's RMS)."""

from __future__ import annotations

import copy

import torch

from glu_study.config import compose
from glu_study.ffn import get_variant
from glu_study.model import build_model
from glu_study.training.optim import make_optimizer


def test_our_adafactor_matches_torch_adafactor_step_for_step():
    cfg = compose(["trainer.lr=0.01"])  # the paper's plateau; our schedule never exceeds 1/sqrt(step)
    ours = build_model(cfg.model, get_variant("swiglu"), 1000, 0)
    reference = copy.deepcopy(ours)
    opt = make_optimizer(ours, cfg.trainer)
    ref = torch.optim.Adafactor(reference.parameters(), lr=0.01, beta2_decay=-0.8, d=1.0, weight_decay=0.0)
    assert type(opt).__module__.startswith("transformers")
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        for p, q in zip(ours.parameters(), reference.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=g) * 10 ** (step - 2)  # tiny to large: clipping engages
            q.grad = p.grad.clone()
        before = [p.detach().clone() for p in ours.parameters()]
        opt.step()
        ref.step()
        for p, q, b in zip(ours.parameters(), reference.parameters(), before, strict=True):
            assert not torch.equal(p, b)  # the step moved every parameter
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
