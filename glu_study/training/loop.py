"""The training loop both commands share (pretraining and fine-tuning), and the device it runs on.

`TrainLoop.run()` reads top to bottom: for each step, the command's own `train_step()` (one optimizer step,
returning its loss still on the device) -> every `log_every` steps one host synchronisation to log the mean loss,
with the non-finite check -> every `eval_every` steps the command's `evaluate()` -> every `checkpoint_every` steps
a checkpoint -> on SIGTERM or SIGUSR2 (pre-emption, a SLURM time-out warning) a checkpoint at the end of the step,
then exit 0 so that the same command resumes — or, under submitit, submitit's own requeue; on Ctrl-C the same
checkpoint, then exit 130 (`StopSignals`).
"""

from __future__ import annotations

import ctypes
import math
import random
import signal
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from glu_study.errors import EXIT_INTERRUPTED, EXIT_NONFINITE, ConfigError, NonFiniteLossError
from glu_study.training.checkpoints import Checkpointer
from glu_study.training.distributed import SINGLE_PROCESS, DistInfo, all_reduce_mean, any_rank
from glu_study.training.state import RunState
from glu_study.training.tracking import Tracker

TRAIN_LOSS = "train/loss"  # the mean training loss over each log interval, as logged and recorded


def device_kind(settings) -> str:
    """`settings.device` resolved, once per command: "cuda" or "cpu" (`auto`: CUDA when there is a GPU). The
    process group's backend (NCCL or gloo) and the device are both derived from it."""
    kind = settings.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is available (use trainer=cpu)")
        if settings.precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("precision=bf16 but this GPU does not support bfloat16")
    return kind


def setup_device(kind: str, settings, info: DistInfo = SINGLE_PROCESS) -> torch.device:
    """The torch device of this rank for a resolved `kind` (device_kind), set up for training."""
    if kind == "cuda":
        torch.cuda.set_device(info.local_rank)
        # TF32 matmuls for the fp32 parts (and fp32 runs); bf16 autocast covers the rest.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", info.local_rank)
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)
    keep_freed_memory()
    return torch.device("cpu")


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks of up to 32 MiB for reuse instead of returning them to the kernel.

    Every CPU training step allocates and frees the same large tensors (the loss's batch x targets x vocab logits:
    ~30 MB in the CPU study). With glibc's defaults each comes from freshly mapped pages, so every step pays
    ~16,000 page faults (measured on our 2-core machines: 27 ms of system time per 250 ms step; with this, 520
    faults and 2 ms). PyTorch's CPU performance guide reaches the same end with jemalloc or tcmalloc; this is the
    glibc-only way, from inside the process. A no-op where libc is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters (malloc.h)
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum: larger blocks are always mapped
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StopSignals:
    """While active, SIGTERM, SIGUSR2 and the first SIGINT (Ctrl-C) only set `requested`; the loop finishes the
    step, checkpoints, and then calls `hand_over()`.

    SIGUSR2 is what SLURM sends `signal_delay_s` before a time-out (and on pre-emption where the cluster sends the
    user signal); submitit installs its own SIGUSR2 handler, which requeues the job and exits at once — from inside
    whatever step is running, so the step's work since the last periodic checkpoint would be lost. We hold the
    signal until the step ends and the checkpoint is on disk, then call submitit's handler ourselves
    (`hand_over`): it requeues the job (or, past `max_num_timeout` time-outs, raises its UncompletedJobError) and
    exits, and the requeued job resumes from our checkpoint. Without submitit, or on SIGTERM, the run exits 0 and
    the same command resumes it.

    Ctrl-C is a person at the keyboard: the run checkpoints like SIGTERM but exits EXIT_INTERRUPTED (130, the
    shell's code for SIGINT), so that `make`, a shell `&&` and a `-m` sweep stop instead of going on as after a
    finished run. A second Ctrl-C (Python's own handler again) aborts at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __enter__(self):
        self.requested, self.received = False, None
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C interrupts at once
        # How the run ends: a SIGUSR2 at any point means submitit's requeue, whatever comes after it (a cluster
        # may follow the warning with SIGTERM); otherwise the first signal decides.
        if not self.requested or signum == signal.SIGUSR2:
            self.received = signal.Signals(signum).name
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def hand_over(self) -> None:
        """After the checkpoint: submitit's requeue for SIGUSR2 when submitit is in charge, exit 130 for Ctrl-C,
        else exit 0."""
        requeue = self._previous[signal.SIGUSR2]
        self.__exit__()
        if self.received == "SIGUSR2" and callable(requeue):
            requeue(signal.SIGUSR2, None)  # submitit: requeues and exits (a non-zero status that is not ours)
        raise SystemExit(EXIT_INTERRUPTED if self.received == "SIGINT" else 0)


class LossWindow:
    """The training loss since the last log line, summed on the device: reading it is the one host sync."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device)
        self._reset()

    def _reset(self):
        self.loss.zero_()
        self.steps, self.tokens, self.start = 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor, tokens: int) -> None:
        self.loss += loss
        self.steps += 1
        self.tokens += tokens

    def read(self) -> tuple[float, float, float]:
        """(mean loss, tokens per second, seconds) of the window; starts the next window."""
        seconds = time.perf_counter() - self.start
        result = (self.loss.item() / self.steps, self.tokens / seconds, seconds)
        self._reset()
        return result


class TrainLoop:
    """Steps `state.step` up to `settings.max_steps` (see the module docstring).

    `settings` are a command's loop settings (glu_study.config.LoopSettings); `state` is its resumable state
    (glu_study.training.state.RunState: the loop advances `step` and keeps `wall_s`, `tokens_per_s`). Under DDP
    every rank runs the loop; stopping is agreed only at log intervals, since a collective every step would be a
    host sync.
    """

    def __init__(
        self,
        settings,
        state: RunState,
        checkpointer: Checkpointer,
        tracker: Tracker,
        schedule,
        *,
        device: torch.device,
        desc: str,
        info: DistInfo = SINGLE_PROCESS,
    ):
        self.settings, self.state, self.checkpointer, self.tracker = settings, state, checkpointer, tracker
        self.schedule, self.device, self.desc, self.info = schedule, device, desc, info

    def due(self, every: int) -> bool:
        return self.state.step % every == 0 or self.state.step == self.settings.max_steps

    def eval_due(self) -> bool:
        """Every `eval_every` steps and at the end; also every `eval_dense_every` from `eval_dense_from` on."""
        s, step = self.settings, self.state.step
        dense = s.eval_dense_from and s.eval_dense_every and step >= s.eval_dense_from
        return self.due(s.eval_every) or bool(dense and (step - s.eval_dense_from) % s.eval_dense_every == 0)

    def run(self, train_step: Callable[[], tuple[torch.Tensor, int]], evaluate: Callable[[], object]) -> None:
        """`train_step()` does one optimizer step, returning (its loss on the device, the tokens it trained on)."""
        s, state = self.settings, self.state
        window = LossWindow(self.device)
        bar = tqdm(
            total=s.max_steps,
            initial=state.step,
            desc=self.desc,
            disable=not self.info.is_main,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        with StopSignals() as stop, bar:
            while state.step < s.max_steps:
                loss, tokens = train_step()
                state.step += 1
                window.add(loss, tokens)
                bar.update(1)
                if self.due(s.log_every):
                    self.log_window(window, bar)
                if self.eval_due():
                    evaluate()
                if self.due(s.checkpoint_every):
                    self.checkpointer.save(f"step_{state.step}", s.keep_checkpoints)
                if state.step < s.max_steps and self.stop_requested(stop):
                    self.preempt(stop)

    def log_window(self, window: LossWindow, bar) -> None:
        step = self.state.step
        loss, tokens_per_s, seconds = window.read()
        loss = all_reduce_mean(loss, self.device, self.info)
        self.state.wall_s += seconds
        self.state.tokens_per_s = tokens_per_s
        if not math.isfinite(loss):
            path = self.checkpointer.save(f"diagnostic_step_{step}")
            self.tracker.finish(exit_code=EXIT_NONFINITE)
            raise NonFiniteLossError(f"loss is {loss} at step {step}; diagnostic checkpoint in {path}")
        lr = self.schedule.get_last_lr()[0]
        self.tracker.log(step, {TRAIN_LOSS: loss, "train/lr": lr, "train/tokens_per_s": tokens_per_s})
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)

    def stop_requested(self, stop: StopSignals) -> bool:
        if self.info.world_size > 1 and self.state.step % self.settings.log_every:
            return False
        return any_rank(stop.requested, self.device, self.info)

    def preempt(self, stop: StopSignals) -> None:
        step = self.state.step
        self.checkpointer.save(f"step_{step}", self.settings.keep_checkpoints)
        if self.info.is_main:
            signal_name = "Ctrl-C (SIGINT)" if stop.received == "SIGINT" else stop.received or "stop"
            print(f"\n{signal_name}: checkpoint saved at step {step}; run the same command to resume")
        self.tracker.finish(exit_code=0, preempted=True)
        stop.hand_over()
