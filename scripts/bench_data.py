"""Is the data pipeline fast enough, and does a training process's memory stay flat as the corpus grows?
Measured side by side on this machine; writes its section of reports/perf.md (between the
`<!-- bench_data:begin -->` / `<!-- bench_data:end -->` markers; scripts/benchmark.py keeps it).

    python scripts/bench_data.py [hydra overrides for the main measurement, e.g. trainer.batch_size=64]

1. Preparation (one-time, cached): the training split's token shards built again at 1 and 2 processes.
2. Per step, at the CPU study's shape: span corruption + collation against t5_tiny's training consumption, both in
   raw corpus tokens per second (target >= 10x).
3. At T5-base's shape (128 x 512 inputs / 114 targets): the loader's examples/s against what T5-base on one H100
   at 30% MFU consumes, and the step time with a simulated 0.18 s device step (a sleep, which frees the CPU as a
   GPU step does) with batches built in the step (0 workers: the sum) or ahead (2 workers: ideally the max).
4. Peak RSS and wall time of a warm-cache training process (build the data, 3 training steps) on two corpora of
   different sizes, each in a fresh process: memory-mapped token streams keep it flat.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from glu_study.config import ROOT, compose
from glu_study.data import PretrainData, random_spans_noise_mask
from glu_study.data.loader import StepBatches, step_loader
from glu_study.data.shards import build_split, open_split
from glu_study.ffn import check_variant_config
from glu_study.model import build_model, training_flops_per_step
from glu_study.reporting.readme import update_readme
from glu_study.training.optim import make_optimizer, make_schedule

H100_BF16_DENSE_TFLOPS, MFU = 989.0, 0.30
DEVICE_STEP_S = 0.18  # T5-base's step on an H100 at 30% MFU (54.5 TFLOP / 297 TFLOP/s)
# Two corpora ~20x apart in training tokens: the standard library's docstrings alone (a small held-out split, so
# small held-out sets) and the large preset (stdlib + 14 packages).
RSS_CORPORA = {
    "stdlib only": ["data.packages=[]", "data.eval_examples=16", "data.val_examples=16"],
    "embedded_large": ["data=embedded_large"],
}


def preparation_rates(cfg, data: PretrainData) -> tuple[dict[int, float], int]:
    """Tokens/s of building the training split's shards again at 1 and 2 processes, and its number of shards."""
    corpus, rates, shards = Path(data.info.corpus_dir), {}, 0
    for procs in (1, 2):
        out = Path(cfg.data.cache_dir) / "bench" / f"tokens-{procs}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        build_split(
            corpus / "train.jsonl", Path(data.info.spiece_model), data.vocab_size, out, "train", procs
        )
        rates[procs] = open_split(out, "train")[0].size / (time.perf_counter() - start)
        shards = json.loads((out / "train.json").read_text())["shards"]
        shutil.rmtree(out, ignore_errors=True)
    return rates, shards


def pipeline_vs_training(cfg, data: PretrainData) -> tuple[float, float, float]:
    """(pipeline raw tokens/s, t5_tiny training raw tokens/s, microseconds per noise mask)."""
    t, B, raw = cfg.trainer, cfg.trainer.batch_size, data.raw_length
    data.train_batch(0, B, cfg.seed)  # warm the permutation cache
    start = time.perf_counter()
    for i in range(50):
        data.train_batch((i + 1) * B, B, cfg.seed)
    pipe_s = 50 * B * raw / (time.perf_counter() - start)
    rng, start = np.random.default_rng(0), time.perf_counter()
    for _ in range(2000):
        random_spans_noise_mask(raw, cfg.data.noise_density, cfg.data.mean_noise_span_length, rng)
    mask_us = (time.perf_counter() - start) / 2000 * 1e6
    model = build_model(cfg.model, check_variant_config(cfg.ffn), data.vocab_size, cfg.seed)
    opt = make_optimizer(model, t)
    sched = make_schedule(opt, t)
    batches = [data.train_batch(i * B, B, cfg.seed) for i in range(12)]
    for k, batch in enumerate(batches):
        if k == 2:
            start = time.perf_counter()  # after two warm-up steps
        model(**batch).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    train_s = 10 * B * raw / (time.perf_counter() - start)
    return pipe_s, train_s, mask_us


def t5_base_consumption() -> float:
    """Examples/s T5-base (table1_paper's step) consumes on one H100 at 30% MFU."""
    cfg = compose(["experiment=table1_paper"])
    return MFU * H100_BF16_DENSE_TFLOPS * 1e12 / training_flops_per_step(cfg) * cfg.trainer.batch_size


def loader_at_t5_base_shape(overrides: list[str], steps: int = 12) -> dict[int, tuple[float, float]]:
    """{workers: (examples/s with no device step, seconds per step with a simulated DEVICE_STEP_S step)}."""
    held = ["data.eval_examples=64", "data.val_examples=64"]  # the held-out split has few 568-token chunks
    cfg = compose([*overrides, "data.inputs_length=512", "trainer.batch_size=128", *held])
    data = PretrainData(cfg.data, log=lambda *a: None)
    B = cfg.trainer.batch_size
    out = {}
    for workers in (0, 2):
        batches = StepBatches(data, cfg.seed, B, 1)
        figures = []
        for device_s in (0.0, DEVICE_STEP_S):
            loader = iter(step_loader(batches, 0, steps + 2, B, workers=workers, pin_memory=False))
            next(loader), next(loader)  # workers started, first batches in flight
            start = time.perf_counter()
            for _ in range(steps):
                next(loader)
                time.sleep(device_s)
            figures.append((time.perf_counter() - start) / steps)
        out[workers] = (B / figures[0], figures[1])
    return out


def warm_start(overrides: list[str]) -> dict:
    """A fresh process that builds the data (warm cache: run once before) and takes 3 training steps."""
    code = (
        "import json, resource, sys, time; t0 = time.perf_counter()\n"
        "from glu_study.config import compose; from glu_study.data import PretrainData\n"
        "from glu_study.ffn import check_variant_config; from glu_study.model import build_model\n"
        "from glu_study.training.optim import make_optimizer\n"
        "cfg = compose(sys.argv[1:]); data = PretrainData(cfg.data, log=lambda *a: None)\n"
        "model = build_model(cfg.model, check_variant_config(cfg.ffn), data.vocab_size, 0)\n"
        "opt = make_optimizer(model, cfg.trainer)\n"
        "for k in range(3):\n"
        "    model(**data.train_batch(k * 32, 32, 0)).loss.backward(); opt.step(); opt.zero_grad()\n"
        "print(json.dumps({'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,\n"
        "    'wall_s': time.perf_counter() - t0, 'train_tokens': data.info.train_tokens}))\n"
    )
    command = [sys.executable, "-c", code, *overrides]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)  # builds the cache if it is cold
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def section(cfg, data, prep, pipe, base, starts) -> str:
    rates, shards = prep
    pipe_s, train_s, mask_us = pipe
    need = t5_base_consumption()
    lines = [
        "## Data pipeline",
        "",
        f"Generated by `python scripts/bench_data.py`; {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}.",
        "",
        f"- preparation (one-time, cached), the training split's {shards} shards: {rates[1]:,.0f} tokens/s at 1 "
        f"process, {rates[2]:,.0f} at 2 ({rates[2] / rates[1]:.2f}x)",
        f"- per step at the CPU study's shape ({cfg.model.name}, batch {cfg.trainer.batch_size}, {data.raw_length} "
        f"raw tokens): span corruption + collation {pipe_s:,.0f} raw tokens/s ({mask_us:.1f} us per noise mask) "
        f"against {train_s:,.0f} consumed by training: **{pipe_s / train_s:.1f}x** (target >= 10x)",
        f"- at T5-base's shape (128 x 568 raw tokens): the loader builds {base[0][0]:,.0f} examples/s in one "
        f"process, {base[2][0]:,.0f} with 2 workers; T5-base on one H100 at {MFU:.0%} MFU consumes {need:,.0f}: "
        f"**{base[2][0] / need:.2f}x** with 2 workers (trainer=gpu uses 4, on a GPU node's cores)",
        f"- with a simulated {DEVICE_STEP_S} s device step: {base[0][1]:.3f} s per step with batches built in the "
        f"step, {base[2][1]:.3f} s with 2 workers building ahead",
        "",
        "| corpus (warm cache, fresh process) | training tokens | peak RSS (MiB) | wall time to 3 steps (s) |",
        "|---|---:|---:|---:|",
        *[
            f"| {n} | {r['train_tokens']:,} | {r['rss_mb']:,.0f} | {r['wall_s']:.1f} |"
            for n, r in starts.items()
        ],
        "",
    ]
    sizes = [r["train_tokens"] for r in starts.values()]
    rss = [r["rss_mb"] for r in starts.values()]
    lines.append(
        f"The corpora are {max(sizes) / min(sizes):.1f}x apart in training tokens; peak RSS differs by "
        f"{max(rss) - min(rss):,.0f} MiB (the token streams are memory-mapped, not loaded)."
    )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    cfg = compose(argv)
    data = PretrainData(cfg.data)
    prep = preparation_rates(cfg, data)
    pipe = pipeline_vs_training(cfg, data)
    base = loader_at_t5_base_shape(argv)
    starts = {name: warm_start(overrides) for name, overrides in RSS_CORPORA.items()}
    text = section(cfg, data, prep, pipe, base, starts)
    update_readme(ROOT / "reports" / "perf.md", "bench_data", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
