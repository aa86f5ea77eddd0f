"""Is the data pipeline fast enough, and does a training process's memory stay flat as the corpus grows?
Measured side by side on this machine; saves the raw figures (seconds, bytes, counts) to
reports/perf/bench_data.json and renders reports/perf.md from the records there (glu_study.reporting.perf).

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
from glu_study.model import build_model
from glu_study.reporting.perf import save_record, write_perf
from glu_study.training.optim import make_optimizer, make_schedule

RECORDS = ROOT / "reports" / "perf"  # bench_data.json goes here; reports/perf.md is rendered from the records
DEVICE_STEP_S = 0.18  # T5-base's step on an H100 at 30% MFU (54.5 TFLOP / 297 TFLOP/s)
# Two corpora ~20x apart in training tokens: the standard library's docstrings alone (a small held-out split, so
# small held-out sets) and the large preset (stdlib + 14 packages).
RSS_CORPORA = {
    "stdlib only": ["data.packages=[]", "data.eval_examples=16", "data.val_examples=16"],
    "embedded_large": ["data=embedded_large"],
}


def preparation(cfg, data: PretrainData) -> dict:
    """Seconds to build the training split's shards again at 1 and 2 processes, its tokens and shards."""
    corpus, seconds, shards, tokens = Path(data.info.corpus_dir), {}, 0, 0
    for procs in (1, 2):
        out = Path(cfg.data.cache_dir) / "bench" / f"tokens-{procs}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        build_split(
            corpus / "train.jsonl", Path(data.info.spiece_model), data.vocab_size, out, "train", procs
        )
        seconds[str(procs)] = time.perf_counter() - start
        tokens = int(open_split(out, "train")[0].size)
        shards = json.loads((out / "train.json").read_text())["shards"]
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "tokens": tokens, "shards": shards}


def pipeline_vs_training(cfg, data: PretrainData, batches: int = 50, train_steps: int = 10) -> dict:
    """Seconds to build `batches` batches and to train `train_steps` steps at the study's shape, and the
    microseconds per noise mask."""
    t, B, raw = cfg.trainer, cfg.trainer.batch_size, data.raw_length
    data.train_batch(0, B, cfg.seed)  # warm the permutation cache
    start = time.perf_counter()
    for i in range(batches):
        data.train_batch((i + 1) * B, B, cfg.seed)
    pipeline_seconds = time.perf_counter() - start
    rng, start = np.random.default_rng(0), time.perf_counter()
    for _ in range(2000):
        random_spans_noise_mask(raw, cfg.data.noise_density, cfg.data.mean_noise_span_length, rng)
    mask_us = (time.perf_counter() - start) / 2000 * 1e6
    model = build_model(cfg.model, check_variant_config(cfg.ffn), data.vocab_size, cfg.seed)
    opt = make_optimizer(model, t)
    sched = make_schedule(opt, t)
    for k, batch in enumerate([data.train_batch(i * B, B, cfg.seed) for i in range(train_steps + 2)]):
        if k == 2:
            start = time.perf_counter()  # after two warm-up steps
        model(**batch).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return {
        "model": cfg.model.name,
        "batch": B,
        "raw_length": raw,
        "batches": batches,
        "pipeline_seconds": pipeline_seconds,
        "train_steps": train_steps,
        "train_seconds": time.perf_counter() - start,
        "mask_us": mask_us,
    }


def loader_at_t5_base_shape(overrides: list[str], steps: int = 12) -> dict:
    """Seconds for `steps` batches at 0 and 2 workers, with no device step and with a simulated DEVICE_STEP_S one."""
    held = ["data.eval_examples=64", "data.val_examples=64"]  # the held-out split has few 568-token chunks
    cfg = compose([*overrides, "data.inputs_length=512", "trainer.batch_size=128", *held])
    data = PretrainData(cfg.data, log=lambda *a: None)
    B = cfg.trainer.batch_size
    out = {"batch": B, "raw_length": data.raw_length, "steps": steps, "device_step_s": DEVICE_STEP_S}
    out["seconds"], out["stepped_seconds"] = {}, {}
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
            figures.append(time.perf_counter() - start)
        out["seconds"][str(workers)], out["stepped_seconds"][str(workers)] = figures
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


def main(argv: list[str]) -> None:
    cfg = compose(argv)
    data = PretrainData(cfg.data)
    record = {
        "command": " ".join(["python scripts/bench_data.py", *argv]),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "preparation": preparation(cfg, data),
        "pipeline": pipeline_vs_training(cfg, data),
        "t5_base_loader": loader_at_t5_base_shape(argv),
        "warm_starts": {name: warm_start(overrides) for name, overrides in RSS_CORPORA.items()},
    }
    save_record(RECORDS / "bench_data.json", record)
    print(write_perf(RECORDS, RECORDS.with_suffix(".md")))


if __name__ == "__main__":
    main(sys.argv[1:])
