"""Is the data pipeline fast enough? Prints its tokens/s beside t5_tiny's training consumption, measured
side by side in one process on this machine.

    python scripts/bench_data.py [hydra overrides, e.g. trainer.batch_size=64]

Both figures are in *raw* corpus tokens per second (a training example consumes `raw_length` tokens of
the stream), so their ratio says how many trainers one pipeline could feed. Target: >= 10x.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from glu_study.config import compose
from glu_study.data import PretrainData, random_spans_noise_mask
from glu_study.data.shards import build_split, open_split
from glu_study.ffn import check_variant_config
from glu_study.model import build_model
from glu_study.training.optim import make_optimizer, make_schedule


def main(argv: list[str]) -> None:
    cfg = compose(argv)
    t = cfg.trainer
    data = PretrainData(cfg.data)
    B, raw = t.batch_size, data.raw_length

    # 1. preparation (one-time, cached): the held-out split's token shards built again, at 1 and 2 processes
    import shutil
    from pathlib import Path

    corpus = Path(data.info.corpus_dir)
    tok_s = {}
    for procs in (1, 2):
        out = Path(cfg.data.cache_dir) / "bench" / f"tokens-{procs}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        build_split(
            corpus / "heldout.jsonl", Path(data.info.spiece_model), data.vocab_size, out, "heldout", procs
        )
        tok_s[procs] = open_split(out, "heldout")[0].size / (time.perf_counter() - start)
        shutil.rmtree(out, ignore_errors=True)

    # 2. per-step work: noise masks + sentinel replacement + collation of training batches
    data.train_batch(0, B, cfg.seed)  # warm the permutation cache
    n_batches = 50
    start = time.perf_counter()
    for i in range(n_batches):
        data.train_batch((i + 1) * B, B, cfg.seed)
    pipe_s = n_batches * B * raw / (time.perf_counter() - start)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for _ in range(2000):
        random_spans_noise_mask(raw, cfg.data.noise_density, cfg.data.mean_noise_span_length, rng)
    mask_us = (time.perf_counter() - start) / 2000 * 1e6

    # 3. training consumption: the trainer's own model/optimizer/schedule, steps on real batches
    model = build_model(cfg.model, check_variant_config(cfg.ffn), data.vocab_size, cfg.seed)
    opt = make_optimizer(model, t)
    sched = make_schedule(opt, t)
    batches = [data.train_batch(i * B, B, cfg.seed) for i in range(12)]

    def step(batch):
        model(**batch).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:2]:
        step(b)  # warm-up
    start = time.perf_counter()
    for b in batches[2:]:
        step(b)
    train_s = len(batches[2:]) * B * raw / (time.perf_counter() - start)

    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(
        f"config: {cfg.model.name} / {cfg.ffn.name}, batch {B}, {raw} raw -> "
        f"{cfg.data.inputs_length}/{data.targets_length} tokens, vocab {data.vocab_size}"
    )
    for procs, rate in tok_s.items():
        print(f"token shards (SentencePiece, one-time), {procs} process(es): {rate:>12,.0f} tokens/s")
    print(
        f"span corruption + collation (per step):               {pipe_s:>12,.0f} raw tokens/s "
        f"({mask_us:.1f} us per noise mask)"
    )
    print(f"t5_tiny training consumption:                         {train_s:>12,.0f} raw tokens/s")
    print(f"pipeline / training: {pipe_s / train_s:.1f}x  (target >= 10x)")


if __name__ == "__main__":
    main(sys.argv[1:])
