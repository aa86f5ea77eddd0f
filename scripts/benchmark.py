"""Training throughput of the study configuration against the loop users usually copy, side by side in one process.

    python scripts/benchmark.py t5_tiny t5_mini [--experiment table1_cpu] [--ours trainer.precision=fp32 ...]

(a) study: exactly what `experiment=table1_cpu` composes to (optimizer, schedule, precision, batch, lengths) at
    the given model size, through the trainer's own `optimizer_step` on `PretrainData` batches; --ours adds overrides;
(b) baseline: the nanoT5 / HF `run_t5_mlm_flax` recipe — HF T5, a per-batch numpy span-corruption collator,
    AdamW, fp32, `loss.item()` every step — on the same model shape, batch and lengths.
The two alternate in rounds so drift in the machine's speed hits both. Prints tokens/s, their ratio, achieved
GFLOP/s against this machine's measured fp32 and bf16 matmul peaks, and peak memory; writes reports/perf.md.
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
    training_flops_per_step,
)
from glu_study.reporting.readme import marked_block
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


def table_rows(rows, device, peak_tflops: float) -> list[str]:
    """The loops' table; on CUDA with an MFU column against the GPU's nominal dense bf16 peak (--peak-tflops)."""
    mfu = device.type == "cuda"
    head = "| loop | tokens/s | GFLOP/s | % fp32 peak | % bf16 peak | peak memory (MiB) |" + (
        " MFU |" if mfu else ""
    )
    out = [head, "|---|---:|---:|---:|---:|---:|" + ("---:|" if mfu else "")]
    for n, tok, g, p32, p16, mem in rows:
        cell = f" {100 * g / (peak_tflops * 1e3):.1f}% |" if mfu else ""
        out.append(f"| {n} | {tok:,.0f} | {g:,.1f} | {p32:.1f}% | {p16:.1f}% | {mem:,.0f} |{cell}")
    return out


def bench_model(model_name: str, args, device: torch.device, peak32: float, peak16: float) -> list[str]:
    cfg = study_config(model_name, args)
    t = cfg.trainer
    data = PretrainData(cfg.data)
    variant = check_variant_config(cfg.ffn)
    B, inputs_length, steps = t.batch_size, cfg.data.inputs_length, args.steps or DEFAULT_STEPS[model_name]
    shapes = param_counts(cfg.model, variant, data.vocab_size, inputs_length, data.targets_length)
    train_flops_per_example = training_flops_per_example(shapes, inputs_length, data.targets_length)
    timing = {"data": 0.0}
    loops = {"baseline": baseline_loop(cfg, data, device), "study": ours_loop(cfg, data, device, timing)}
    for fn in loops.values():
        fn(6 if t.compile else 2)  # warm-up (and compilation)
    timing["data"] = 0.0
    seconds, peaks = time_rounds(loops, steps, args.rounds, device)

    n_examples = args.rounds * steps * B
    rows = []
    for name in loops:
        ex_s = n_examples / seconds[name]
        gflops = ex_s * train_flops_per_example / 1e9
        tok_s = ex_s * (inputs_length + data.targets_length)
        rows.append((name, tok_s, gflops, 100 * gflops / peak32, 100 * gflops / peak16, peaks[name] / 2**20))
    ratio = rows[1][1] / rows[0][1]
    return [
        f"## {model_name}",
        "",
        f"- study configuration: `experiment={args.experiment} model={model_name} ffn={args.ffn}"
        + "".join(f" {o}" for o in args.ours)
        + f"`: {t.optimizer}, {t.schedule} schedule, {t.precision}, compile={t.compile}, batch {B}, "
        f"{inputs_length} input + {data.targets_length} target tokens ({data.raw_length} raw)",
        f"- model: {shapes['params']:,} parameters; {train_flops_per_example / 1e9:.3f} training GFLOP per example "
        f"(3 x forward); {args.rounds} rounds x {steps} timed steps per loop, interleaved",
        "- baseline: HF T5 of the same shape, per-batch numpy span collator, AdamW, fp32, loss.item() every step",
        "",
        *table_rows(rows, device, args.peak_tflops),
        "",
        f"Speed-up of the study configuration over the baseline on {model_name}: **{ratio:.2f}x**. "
        f"The data pipeline (span corruption + collation of each batch) takes "
        f"**{100 * timing['data'] / seconds['study']:.1f}%** of the study's step time.",
        "",
    ]


# --- the GPU budget on paper: FLOPs from the shapes, step time at an assumed MFU -----------------------------

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's H100 SXM figure for dense bf16 tensor-core math (no sparsity)
BUDGET_MFU = (0.15, 0.30, 0.40)


def preset_runs(experiment: str) -> tuple[object, list[str], int]:
    """A preset's config, its sweep's FFN variants and the number of seeds each runs."""
    cfg = compose([f"experiment={experiment}"], with_hydra=True)
    params = cfg.hydra.sweeper.params
    return cfg, str(params.ffn).split(","), len(str(params.seed).split(","))


def gpu_budget(experiments=("table1_paper", "table1_paper_long")) -> list[str]:
    """Step time and GPU hours of the paper presets on one H100 at 15, 30 and 40% MFU (nothing measured)."""
    lines = [
        "## GPU budget on paper",
        "",
        f"FLOPs from the model's shapes (glu_study.model.param_counts: 2 per multiply-add, training = 3 x forward), "
        f"at an assumed share (MFU) of one H100's {H100_BF16_DENSE_TFLOPS:,.0f} TFLOP/s dense bf16; evaluation, "
        "checkpoints and start-up are not counted. Examples per second is what the data loader must supply.",
        "",
        "| preset | runs | steps | TFLOP per step (ReLU) | MFU | s per step | examples/s | GPU hours per run | GPU hours, all runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    longest = 0.0  # hours of the longest single run
    for experiment in experiments:
        cfg, ffns, seeds = preset_runs(experiment)
        steps, batch = cfg.trainer.max_steps, cfg.trainer.batch_size
        flops = {f: training_flops_per_step(cfg, f) for f in ffns}
        for mfu in BUDGET_MFU:
            rate = mfu * H100_BF16_DENSE_TFLOPS * 1e12
            per_run = [steps * flops[f] / rate / 3600 for f in ffns]
            step_s = flops["relu"] / rate
            longest = max(longest, *per_run)
            lines.append(
                f"| `{experiment}` | {len(ffns) * seeds} | {steps:,} | {flops['relu'] / 1e12:.1f} | {mfu:.0%} | "
                f"{step_s:.3f} | {batch / step_s:,.0f} | {per_run[0]:,.1f} | {seeds * sum(per_run):,.0f} |"
            )
    timeout_h = compose(["hydra/launcher=slurm"], with_hydra=True).hydra.launcher.timeout_min / 60
    lines += [
        "",
        f"The SLURM preset's jobs run {timeout_h:g} h (conf/hydra/launcher/slurm.yaml); the longest run above takes "
        f"{longest:,.1f} h"
        + (
            ", so it relies on the time-out requeue (checkpoint at SIGUSR2, resume)."
            if longest > timeout_h
            else "."
        ),
        "",
        "Measure the real MFU before a sweep: `python scripts/benchmark.py t5_base --experiment table1_paper "
        "--device cuda` prints it (MFU column) for the preset's own step.",
        "",
    ]
    return lines


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
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "perf.md")
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
    peak32 = matmul_peak(torch.float32, device)
    peak16 = matmul_peak(torch.bfloat16, device)
    command = " ".join([*args.models, *(["--ours", *args.ours] if args.ours else [])])
    lines = [
        "# Training throughput: the study configuration vs the usual plain loop",
        "",
        f"Generated by `python scripts/benchmark.py {command}` (--rounds {args.rounds}, device {device.type}).",
        "",
        f"- machine: {machine_description(device)}",
        f"- measured matmul peak (best of 2048^2 / 8192^2 square matmuls): fp32 {peak32:,.0f} GFLOP/s, "
        f"bf16 {peak16:,.0f} GFLOP/s",
        "",
    ]
    for model_name in args.models:
        lines += bench_model(model_name, args, device, peak32, peak16)
    lines += [
        "Both loops run in one process, so process-wide settings (threads, the allocator) apply to both. Peak memory "
        "is the process's resident set sampled during each loop on CPU (it includes the other loop's weights), and "
        "allocated device memory on CUDA. % fp32 peak can exceed 100% when a loop runs in bf16.",
    ]
    if device.type != "cuda":
        lines += [
            "",
            "GPU figures (bf16 MFU at t5_base shape): not measured — no GPU was available to this run.",
        ]
    lines += ["", *gpu_budget()]
    # scripts/bench_data.py's section (the data pipeline) is its own, regenerated by it: kept as it is.
    lines += ["", marked_block(args.out, "bench_data")]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
