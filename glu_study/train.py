"""Pretrain one T5 with a chosen FFN variant on span corruption: `python -m glu_study.train ffn=swiglu`.

The loop is plain PyTorch, read top to bottom in `train()`:
  build data and model -> resume from the newest complete checkpoint if the run directory has one ->
  for each step: forward/backward over `grad_accum` micro-batches, optimizer and schedule step, log,
  evaluate held-out log-perplexity every `eval_every`, checkpoint every `checkpoint_every` ->
  final evaluation, Hugging Face export in <run_dir>/model, summary.json.

Resume is exact: the model, optimizer, schedule, RNG states and the data position (a single example
counter, see glu_study.data.PretrainData) are all in the checkpoint, and nothing else carries state, so a
killed-and-resumed run computes bit-for-bit the same weights on CPU as an uninterrupted one.

Distributed data parallel (torchrun) shares the loop: each rank computes its slice of every global batch,
and only rank 0 writes files and talks to W&B.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from glu_study.data import DataError, PretrainData
from glu_study.ffn import UnknownVariantError, check_variant_config
from glu_study.model import build_model, count_parameters, param_counts
from glu_study.tracking import Tracker, write_text_atomic


class ConfigError(ValueError):
    pass


class NonFiniteLossError(RuntimeError):
    pass


EXIT_BAD_INPUT, EXIT_NONFINITE = 2, 3

# Trainer settings that may change between a run and its resumption (they do not change the maths).
RESUMABLE_CHANGES = {"eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "num_threads"}


# ---------------------------------------------------------------------------------------------------------
# Set-up: validation, device, distributed
# ---------------------------------------------------------------------------------------------------------


# The choices the loop understands; pretraining (`trainer.*`) and fine-tuning (`finetune.*`) share them.
SETTING_CHOICES = {
    "precision": ("fp32", "bf16"),
    "optimizer": ("adafactor", "adamw"),
    "schedule": ("rsqrt", "cosine", "constant"),
    "device": ("auto", "cpu", "cuda"),
}


def check_settings(t, group: str, positive: tuple[str, ...]) -> None:
    """One ConfigError for the first bad choice, non-positive count or decay fraction outside [0, 1]."""
    for key, valid in SETTING_CHOICES.items():
        if t[key] not in valid:
            raise ConfigError(f"{group}.{key}={t[key]!r} is not one of {', '.join(valid)}")
    for key in positive:
        if t[key] < 1:
            raise ConfigError(f"{group}.{key} must be >= 1, got {t[key]}")
    if not 0.0 <= t.decay_fraction <= 1.0:
        raise ConfigError(f"{group}.decay_fraction must be in [0, 1], got {t.decay_fraction}")


def validate_trainer(t) -> None:
    positive = ("max_steps", "batch_size", "grad_accum", "eval_every", "checkpoint_every", "log_every")
    check_settings(t, "trainer", (*positive, "keep_checkpoints"))


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> DistInfo:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(t, info: DistInfo) -> torch.device:
    kind = t.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda but no CUDA device is available (use trainer=cpu)")
        if t.precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("trainer.precision=bf16 but this GPU does not support bfloat16")
        torch.cuda.set_device(info.local_rank)
        # TF32 matmuls for the fp32 parts (and fp32 runs); bf16 autocast covers the rest.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------
# Optimizer and schedule (from the libraries; only the paper's rsqrt shape is a few lines of ours)
# ---------------------------------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, t) -> torch.optim.Optimizer:
    if t.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # The paper's Adafactor: no momentum (beta1=None), update clipping at RMS 1.0, parameter-scaled
        # steps as in Mesh-TF, and the learning rate from our schedule rather than Adafactor's own.
        return Adafactor(
            model.parameters(),
            lr=t.lr,
            beta1=None,
            clip_threshold=1.0,
            decay_rate=-0.8,
            scale_parameter=True,
            relative_step=False,
            warmup_init=False,
            weight_decay=t.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True)


def rsqrt_schedule(step: int, warmup_steps: int, max_steps: int, decay_fraction: float) -> float:
    """The paper's schedule: 1/sqrt(max(step, warmup)), times a linear ramp to 0 over the final steps."""
    factor = 1.0 / math.sqrt(max(step, warmup_steps, 1))
    decay_steps = decay_fraction * max_steps
    if decay_steps > 0:
        factor *= min(1.0, max(0.0, (max_steps - step) / decay_steps))
    return factor


def make_schedule(optimizer, t) -> torch.optim.lr_scheduler.LambdaLR:
    from transformers import get_constant_schedule, get_cosine_schedule_with_warmup

    if t.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, t.warmup_steps, t.max_steps)
    if t.schedule == "constant":
        return get_constant_schedule(optimizer)
    w, n, f = t.warmup_steps, t.max_steps, t.decay_fraction
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: rsqrt_schedule(step, w, n, f))


def optimizer_step(fwd, model, optimizer, schedule, micro_batches, t, device) -> torch.Tensor:
    """One optimizer step over this rank's `t.grad_accum` micro-batches; returns their loss, still on device.

    `fwd` is what runs the forward pass (the model, its DDP wrapper, or a compiled version of either); DDP's
    gradient all-reduce happens only on the last micro-batch. Nothing here waits for the device.
    """
    total = torch.zeros((), device=device)
    ddp = (
        fwd if isinstance(fwd, torch.nn.parallel.DistributedDataParallel) else getattr(fwd, "_orig_mod", None)
    )
    for m, batch in enumerate(micro_batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        last = m == t.grad_accum - 1
        no_sync = (
            ddp.no_sync() if isinstance(ddp, torch.nn.parallel.DistributedDataParallel) and not last else None
        )
        with no_sync or contextlib.nullcontext():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16"):
                loss = fwd(**batch).loss / t.grad_accum
            loss.backward()
        total += loss.detach()
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return total


# ---------------------------------------------------------------------------------------------------------
# Checkpoints: written to a temporary directory and renamed, so `step_<N>` always means complete
# ---------------------------------------------------------------------------------------------------------

_STEP_DIR = re.compile(r"^step_(\d+)$")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    ckpt_dir = run_dir / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(x for x in found if (x[1] / "state.pt").is_file())


def save_checkpoint(run_dir: Path, name: str, state: dict, keep: int | None) -> Path:
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=ckpt_dir))
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():  # only when re-saving the same step (e.g. SIGTERM right after a periodic save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    if keep is not None:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> dict:
    return torch.load(path / "state.pt", map_location="cpu", weights_only=False)


def checkpoint_payload(model, optimizer, schedule, state: dict, config: dict) -> dict:
    """Everything an exact resume needs: weights, optimizer and schedule state, every RNG, the loop state."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": rng_state(),
        "state": dict(state),
        "config": config,
    }


def restore_checkpoint(ckpt: dict, model, optimizer, schedule) -> dict:
    """Load a checkpoint_payload back in place; returns the loop state."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["schedule"])
    set_rng_state(ckpt["rng"])
    return ckpt["state"]


def resume_newest(
    run_dir: Path, resolved: dict, comparable, model, optimizer, schedule, *, hint: str, clean: bool = True
) -> dict | None:
    """Restore the newest complete checkpoint under run_dir in place and return its loop state (None: none).

    `comparable(config)` picks what must match between the checkpoint's config and this one; a mismatch is a
    ConfigError ending in `hint`. `clean` removes leftovers of saves killed half-way (rank 0 only under DDP).
    """
    if clean:
        for stale in (run_dir / "checkpoints").glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        return None
    ckpt = load_checkpoint(checkpoints[-1][1])
    if comparable(ckpt["config"]) != comparable(resolved):
        raise ConfigError(f"{run_dir} holds a run with a different configuration; {hint}")
    return restore_checkpoint(ckpt, model, optimizer, schedule)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _comparable(cfg: dict) -> dict:
    """The parts of a config that must match for a run directory to be resumed."""
    cfg = {k: v for k, v in cfg.items() if k not in ("logger", "name")}
    cfg["trainer"] = {k: v for k, v in cfg["trainer"].items() if k not in RESUMABLE_CHANGES}
    cfg["data"] = {k: v for k, v in cfg["data"].items() if k not in ("cache_dir", "tokenizer_threads")}
    return cfg


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def heldout_log_perplexity(model, data: PretrainData, device, precision: str, batch_size: int) -> float:
    """Mean cross-entropy in nats per target token (sentinels and EOS included, padding excluded)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in data.eval_batches(batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(**batch).logits
        labels = batch["labels"]
        total += torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"
        ).item()
        count += int((labels != -100).sum())
    model.train(was_training)
    return total / count


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


class StopOnSigterm:
    """SIGTERM (pre-emption) sets a flag; the loop checkpoints at the end of the current step and exits."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def derived_figures(cfg, variant, data: PretrainData, model) -> dict:
    counted = count_parameters(model)
    shapes = param_counts(
        cfg.model, variant, data.vocab_size, data.info.inputs_length, data.info.targets_length
    )
    assert counted["params"] == shapes["params"], (counted, shapes)  # our arithmetic describes this model
    return {
        "params": counted["params"],
        "non_embedding_params": counted["non_embedding_params"],
        "d_ff": shapes["d_ff"],
        "feed_forward_proj": variant.feed_forward_proj,
        "gated": variant.gated,
        "flops_per_input_token": shapes["flops_per_input_token"],
        "flops_per_target_token": shapes["flops_per_target_token"],
        "vocab_size": data.vocab_size,
        "raw_length": data.raw_length,
        "targets_length": data.targets_length,
        "train_tokens": data.info.train_tokens,
    }


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def export_model(model, spiece_model: str, run_dir: Path) -> Path:
    """The Hugging Face export: T5ForConditionalGeneration.from_pretrained(run_dir / 'model')."""
    final = run_dir / "model"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-model-", dir=run_dir))
    model.save_pretrained(tmp)
    shutil.copyfile(spiece_model, tmp / "spiece.model")
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """One pretraining run in `run_dir`; returns the summary. Raises before writing anything on bad input."""
    t = cfg.trainer
    variant = check_variant_config(cfg.ffn)
    validate_trainer(t)
    info = setup_distributed("cuda" if t.device == "cuda" else "cpu")
    device = resolve_device(t, info)
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    per_rank, rem = divmod(t.batch_size, info.world_size * t.grad_accum)
    if rem:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} is not divisible by ranks x grad_accum = "
            f"{info.world_size} x {t.grad_accum}"
        )
    log = print if info.is_main else (lambda *a, **k: None)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)

    seed_everything(cfg.seed)
    data = PretrainData(cfg.data, log=log)
    model = build_model(cfg.model, variant, data.vocab_size, cfg.seed)
    figures = derived_figures(cfg, variant, data, model)
    model.to(device)
    optimizer = make_optimizer(model, t)
    schedule = make_schedule(optimizer, t)

    state = {"step": 0, "data_position": 0, "wandb_id": None, "best_eval": None, "wall_s": 0.0}
    resumed = resume_newest(
        run_dir,
        resolved,
        _comparable,
        model,
        optimizer,
        schedule,
        hint="choose another hydra.run.dir (or the same overrides as before) to resume",
        clean=info.is_main,
    )
    if resumed is not None:
        state = resumed
        log(f"resuming {run_dir} from step {state['step']}")

    ddp_model = model
    if info.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    fwd = torch.compile(ddp_model) if t.compile else ddp_model

    tags = ["gated" if variant.gated else "non-gated", cfg.model.name]
    tracker = Tracker(cfg, run_dir, figures, state, tags=tags, enabled=info.is_main)
    state["wandb_id"] = tracker.run_id

    def checkpoint(name: str, keep) -> Path | None:
        if not info.is_main:
            return None
        return save_checkpoint(
            run_dir, name, checkpoint_payload(model, optimizer, schedule, state, resolved), keep
        )

    def evaluate() -> float:
        value = heldout_log_perplexity(model, data, device, t.precision, per_rank * t.grad_accum)
        state["best_eval"] = value if state["best_eval"] is None else min(state["best_eval"], value)
        tracker.log(state["step"], {"eval/log_perplexity": value})
        return value

    stop = StopOnSigterm()
    model.train()
    tokens_per_example = data.info.inputs_length + data.targets_length
    bar = tqdm(
        total=t.max_steps,
        initial=state["step"],
        desc=cfg.name,
        disable=not info.is_main,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    loss_sum = torch.zeros((), device=device)  # accumulated on device: no host sync per step
    window_start, window_steps = time.perf_counter(), 0
    last_eval = None
    try:
        if state["step"] == 0 and info.is_main:
            last_eval = evaluate()  # the untrained model's figure: the first point of every curve
        while state["step"] < t.max_steps:
            micro_batches = (
                data.train_batch(
                    state["data_position"] + (m * info.world_size + info.rank) * per_rank, per_rank, cfg.seed
                )
                for m in range(t.grad_accum)
            )
            loss_sum += optimizer_step(fwd, model, optimizer, schedule, micro_batches, t, device)
            state["step"] += 1
            state["data_position"] += t.batch_size
            window_steps += 1
            bar.update(1)

            if state["step"] % t.log_every == 0 or state["step"] == t.max_steps:
                mean_loss = loss_sum.item() / window_steps  # the one host sync per log interval
                if info.world_size > 1:
                    mean_loss = _all_reduce_mean(mean_loss, device)
                elapsed = time.perf_counter() - window_start
                tps = window_steps * t.batch_size * tokens_per_example / elapsed
                state["wall_s"] += elapsed
                if not math.isfinite(mean_loss):
                    path = checkpoint(f"diagnostic_step_{state['step']}", keep=None)
                    tracker.finish(exit_code=EXIT_NONFINITE)
                    raise NonFiniteLossError(
                        f"loss is {mean_loss} at step {state['step']}; diagnostic checkpoint in {path}"
                    )
                tracker.log(
                    state["step"],
                    {
                        "train/loss": mean_loss,
                        "train/lr": schedule.get_last_lr()[0],
                        "train/tokens_per_s": tps,
                    },
                )
                bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
                state["tokens_per_s"] = tps
                loss_sum.zero_()
                window_start, window_steps = time.perf_counter(), 0

            done = state["step"] == t.max_steps
            if info.is_main and (state["step"] % t.eval_every == 0 or done):
                last_eval = evaluate()
            if state["step"] % t.checkpoint_every == 0 or done:
                checkpoint(f"step_{state['step']}", keep=t.keep_checkpoints)
            # Across ranks, agree on stopping only at log intervals: a collective every step would be a host sync.
            check = info.world_size == 1 or state["step"] % t.log_every == 0 or done
            if check and _any_rank(stop.requested, device, info):
                checkpoint(f"step_{state['step']}", keep=t.keep_checkpoints)
                log(f"\nSIGTERM: checkpoint saved at step {state['step']}; run the same command to resume")
                tracker.finish(exit_code=0, preempted=True)
                raise SystemExit(0)
    finally:
        bar.close()
        stop.restore()

    if last_eval is None and info.is_main:  # resumed a run that had already finished
        last_eval = evaluate()
    summary = {
        "name": cfg.name,
        "ffn": variant.name,
        "seed": cfg.seed,
        "model": cfg.model.name,
        "params": figures["params"],
        "non_embedding_params": figures["non_embedding_params"],
        "d_ff": figures["d_ff"],
        "steps": state["step"],
        "tokens_seen": state["data_position"] * tokens_per_example,
        "eval/log_perplexity": last_eval,
        "eval/best_log_perplexity": state["best_eval"],
        "train/tokens_per_s": state.get("tokens_per_s"),
        "wall_s": round(state["wall_s"], 3),
        "world_size": info.world_size,
        "precision": t.precision,
    }
    if info.is_main:
        export_model(model, data.info.spiece_model, run_dir)
        write_json_atomic(run_dir / "summary.json", summary)
        tracker.summary(summary)
        tracker.finish(exit_code=0)
        log(f"final held-out log-perplexity ({cfg.name}, step {state['step']}): {last_eval:.4f}")
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _all_reduce_mean(value: float, device) -> float:
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def _any_rank(flag: bool, device, info: DistInfo) -> bool:
    if info.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t)
    return bool(t.item())


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def holds_only_hydra_files(path: Path) -> bool:
    """True if the directory holds nothing but what Hydra wrote for this invocation (.hydra/, <job>.log)."""
    return path.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in path.iterdir())


@contextlib.contextmanager
def cli_exit_codes(bad_input: tuple[type[Exception], ...], cleanup=lambda: None):
    """The command-line contract: bad input is one `error:` line and exit 2, after `cleanup()` has removed
    whatever this invocation created; a non-finite loss is exit 3 (its diagnostic checkpoint is kept)."""
    try:
        yield
    except bad_input as e:
        cleanup()
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_NONFINITE) from None


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    fresh = holds_only_hydra_files(run_dir) and int(os.environ.get("RANK", "0")) == 0

    def cleanup():  # bad input leaves nothing behind
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)

    with cli_exit_codes((ConfigError, DataError, UnknownVariantError), cleanup):
        return train(cfg, run_dir)["eval/log_perplexity"]


if __name__ == "__main__":
    main()
