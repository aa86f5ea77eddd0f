"""Training throughput of the study configuration against the loop users usually copy, side by side in one process.

    python scripts/benchmark.py t5_tiny t5_mini [--experiment table1_cpu] [--ours trainer.precision=fp32 ...]

(a) study: exactly what `experiment=table1_cpu` composes to (optimizer, schedule, precision, batch, lengths) at
    the given model size, through the trainer's own `optimizer_step` on `PretrainData` batches; --ours adds overrides;
(b) baseline: the nanoT5 / HF `run_t5_mlm_flax` recipe — HF T5, a per-batch numpy span-corruption collator,
    AdamW, fp32, `loss.item()` every step — on the same model shape, batch and lengths.
The two alternate in rounds so drift in the machine's speed hits both. Saves the raw figures (seconds, peak bytes,
this machine's measured fp32 and bf16 matmul peaks, the shapes) to reports/perf/benchmark.json and renders
reports/perf.md from the records there (glu_study.reporting.perf: tokens/s, their ratio, GFLOP/s, % of peak).
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch
from transformers import T5ForConditionalGeneration

from glu_study.config import ROOT, compose
from glu_study.data import EOS_ID, PretrainData
from glu_study.ffn import check_variant_config
from glu_study.model import (
    build_model,
    param_counts,
    t5_config,
    training_flops_per_example,
)
from glu_study.reporting.perf import H100_BF16_DENSE_TFLOPS, save_record, write_perf
from glu_study.training.loop import device_kind, setup_device
from glu_study.training.optim import make_optimizer, make_schedule, optimizer_step

# --- the baseline, as users write it (after HF's examples/flax/language-modeling/run_t5_mlm_flax.py) -------


class BaselineCollator:
    """Per-batch numpy span corruption, the DataCollatorForT5MLM pattern."""

    def __init__(self, vocab_size, noise_density, mean_noise_span_length, seed=0):
        self.vocab_size, self.noise_density, self.mean = vocab_size, noise_density, mean_noise_span_length
        self.rng = np.random.default_rng(seed)

    def __call__(self, raw: np.ndarray) -> dict[str, torch.Tensor]:
        mask = np.asarray([self.random_spans_noise_mask(raw.shape[1]) for _ in range(raw.shape[0])])
        inputs = self.filter_input_ids(raw, self.create_sentinel_ids(mask.astype(np.int8)))
        labels = self.filter_input_ids(raw, self.create_sentinel_ids((~mask).astype(np.int8)))
        return {"input_ids": torch.tensor(inputs), "labels": torch.tensor(labels)}

    def create_sentinel_ids(self, mask_indices):
        start_indices = mask_indices - np.roll(mask_indices, 1, axis=-1) * mask_indices
        start_indices[:, 0] = mask_indices[:, 0]
        sentinel_ids = np.where(start_indices != 0, np.cumsum(start_indices, axis=-1), start_indices)
        sentinel_ids = np.where(sentinel_ids != 0, (self.vocab_size - sentinel_ids), 0)
        sentinel_ids -= mask_indices - start_indices
        return sentinel_ids

    def filter_input_ids(self, input_ids, sentinel_ids):
        batch_size = input_ids.shape[0]
        input_ids_full = np.where(sentinel_ids != 0, sentinel_ids, input_ids)
        input_ids = input_ids_full[input_ids_full >= 0].reshape((batch_size, -1))
        return np.concatenate([input_ids, np.full((batch_size, 1), EOS_ID, dtype=np.int32)], axis=-1)

    def random_spans_noise_mask(self, length):
        num_noise_tokens = int(np.round(length * self.noise_density))
        num_nonnoise_tokens = length - num_noise_tokens
        num_noise_spans = int(np.round(num_noise_tokens / self.mean))

        def _random_segmentation(num_items, num_segments):
            mask_indices = np.arange(num_items - 1) < (num_segments - 1)
            self.rng.shuffle(mask_indices)
            first_in_segment = np.pad(mask_indices, [[1, 0]])
            segment_id = np.cumsum(first_in_segment)
            _, segment_length = np.unique(segment_id, return_counts=True)
            return segment_length

        noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans)
        nonnoise_span_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans)
        interleaved = np.reshape(
            np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1), [num_noise_spans * 2]
        )
        span_starts = np.cumsum(interleaved)[:-1]
        span_start_indicator = np.zeros((length,), dtype=np.int8)
        span_start_indicator[span_starts] = True
        span_num = np.cumsum(span_start_indicator)
        return np.equal(span_num % 2, 1)[:length]


# --- measurement helpers ----------------------------------------------------------------------------------


def matmul_peak(dtype: torch.dtype, device: torch.device) -> float:
    """Best GFLOP/s of a large square matmul: this machine's practical peak for the dtype."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        reps = 10 if device.type == "cuda" else 2
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class PeakRSS:
    """Peak resident memory during a block (sampled), or peak allocated CUDA memory."""

    def __init__(self, device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return self
        self._stop = threading.Event()

        def sample():
            page = 4096
            while not self._stop.is_set():
                with open("/proc/self/statm") as f:
                    self.peak = max(self.peak, int(f.read().split()[1]) * page)
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated())
        else:
            self._stop.set()
            self._thread.join()


def machine_description(device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    desc = f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if device.type == "cuda":
        desc += f", GPU {torch.cuda.get_device_name()}"
    return desc


DEFAULT_STEPS = {"t5_tiny": 10, "t5_mini": 5, "t5_small": 3, "t5_base": 2}


def study_config(model_name: str, args):
    """What the study runs: `experiment=<args.experiment>` at this model size, plus any --ours overrides."""
    return compose([f"experiment={args.experiment}", f"model={model_name}", f"ffn={args.ffn}", *args.ours])


def ours_loop(cfg, data: PretrainData, device, timing: dict):
    """The study's own training step (glu_study.training.optim.optimizer_step on PretrainData batches);
    `timing["data"]` collects the seconds spent building batches."""
    t = cfg.trainer
    model = build_model(cfg.model, check_variant_config(cfg.ffn), data.vocab_size, cfg.seed).to(device)
    optimizer = make_optimizer(model, t)
    schedule = make_schedule(optimizer, t)
    fwd = torch.compile(model) if t.compile else model
    position = 0

    def run(n):
        nonlocal position
        total = torch.zeros((), device=device)
        for _ in range(n):
            t0 = time.perf_counter()
            batch = data.train_batch(position, t.batch_size, cfg.seed)
            timing["data"] += time.perf_counter() - t0
            total += optimizer_step(fwd, model, optimizer, schedule, [batch], t, device)
            position += t.batch_size
        return float(total)  # one sync per round, as the trainer does per log interval

    return run


def baseline_loop(cfg, data: PretrainData, device):
    """The loop users copy: same model shape, batch and lengths; AdamW fp32, numpy collator, loss.item()."""
    torch.manual_seed(cfg.seed)
    model = T5ForConditionalGeneration(t5_config(cfg.model, check_variant_config(cfg.ffn), data.vocab_size))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    collator = BaselineCollator(data.vocab_size, cfg.data.noise_density, cfg.data.mean_noise_span_length)
    chunks, size = data.train_chunks, cfg.trainer.batch_size
    position = 0

    def run(n):
        nonlocal position
        losses = []
        for _ in range(n):
            idx = np.arange(position, position + size) % len(chunks)
            batch = {k: v.to(device) for k, v in collator(chunks[idx]).items()}
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            position += size
        return losses[-1]

    return run


def time_rounds(loops: dict, steps: int, rounds: int, device) -> tuple[dict, dict]:
    """Seconds and peak memory of each loop, the loops interleaved round by round."""
    seconds, peaks = dict.fromkeys(loops, 0.0), dict.fromkeys(loops, 0)
    for _ in range(rounds):
        for name, fn in loops.items():
            with PeakRSS(device) as mem:
                _sync(device)
                t0 = time.perf_counter()
                fn(steps)
                _sync(device)
                seconds[name] += time.perf_counter() - t0
            peaks[name] = max(peaks[name], mem.peak)
    return seconds, peaks


def bench_model(model_name: str, args, device: torch.device) -> dict:
    """One model's raw figures: both loops' seconds and peak bytes over the same examples, and the shapes."""
    cfg = study_config(model_name, args)
    t = cfg.trainer
    data = PretrainData(cfg.data)
    variant = check_variant_config(cfg.ffn)
    inputs_length, steps = cfg.data.inputs_length, args.steps or DEFAULT_STEPS[model_name]
    shapes = param_counts(cfg.model, variant, data.vocab_size, inputs_length, data.targets_length)
    timing = {"data": 0.0}
    loops = {"baseline": baseline_loop(cfg, data, device), "study": ours_loop(cfg, data, device, timing)}
    for fn in loops.values():
        fn(6 if t.compile else 2)  # warm-up (and compilation)
    timing["data"] = 0.0
    seconds, peaks = time_rounds(loops, steps, args.rounds, device)
    return {
        "model": model_name,
        "study": f"experiment={args.experiment} model={model_name} ffn={args.ffn}"
        + "".join(f" {o}" for o in args.ours),
        "optimizer": t.optimizer,
        "schedule": t.schedule,
        "precision": t.precision,
        "compile": bool(t.compile),
        "batch": t.batch_size,
        "inputs_length": inputs_length,
        "targets_length": data.targets_length,
        "raw_length": data.raw_length,
        "params": shapes["params"],
        "train_flops_per_example": training_flops_per_example(shapes, inputs_length, data.targets_length),
        "rounds": args.rounds,
        "steps": steps,
        "seconds": seconds,
        "peak_bytes": peaks,
        "data_seconds": timing["data"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", choices=sorted(DEFAULT_STEPS))
    p.add_argument("--experiment", default="table1_cpu", help="the study preset whose configuration is timed")
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps per round for each loop (default by size)"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ffn", default="relu")
    p.add_argument("--ours", nargs="*", default=[], help="extra Hydra overrides for the study configuration")
    p.add_argument(
        "--records",
        type=Path,
        default=ROOT / "reports" / "perf",
        help="where benchmark.json goes; <records>.md is rendered from it (default reports/perf, reports/perf.md)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=H100_BF16_DENSE_TFLOPS,
        help="the GPU's nominal dense bf16 TFLOP/s, for the MFU column on CUDA (default: H100 SXM)",
    )
    args = p.parse_args()

    device = torch.device(args.device)
    trainer = compose([f"experiment={args.experiment}", *args.ours]).trainer
    setup_device(device_kind(trainer), trainer)
    record = {
        "command": " ".join([*args.models, *(["--ours", *args.ours] if args.ours else [])]),
        "rounds": args.rounds,
        "device": device.type,
        "machine": machine_description(device),
        "peak_gflops": {
            "fp32": matmul_peak(torch.float32, device),
            "bf16": matmul_peak(torch.bfloat16, device),
        },
        "peak_tflops": args.peak_tflops,
        "models": [bench_model(m, args, device) for m in args.models],
    }
    save_record(args.records / "benchmark.json", record)
    print(write_perf(args.records, args.records.with_suffix(".md")))


if __name__ == "__main__":
    main()
