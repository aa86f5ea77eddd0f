"""The optimizer, the learning-rate schedule and one optimizer step, shared by pretraining and fine-tuning.

Optimizers and schedules come from the libraries (transformers' Adafactor, torch's AdamW, transformers'
schedules); only the paper's rsqrt shape is a few lines of ours, wrapped in torch's LambdaLR, and the GPU preset's
Adafactor without host synchronisation (glu_study.training.adafactor: no library has one).
"""

from __future__ import annotations

import contextlib
import math

import torch


def make_optimizer(model: torch.nn.Module, settings) -> torch.optim.Optimizer:
    if settings.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # The paper's Adafactor: no momentum (beta1=None), update clipping at RMS 1.0, parameter-scaled
        # steps as in Mesh-TF, and the learning rate from our schedule rather than Adafactor's own.
        return Adafactor(
            model.parameters(),
            lr=settings.lr,
            beta1=None,
            clip_threshold=1.0,
            decay_rate=-0.8,
            scale_parameter=True,
            relative_step=False,
            warmup_init=False,
            weight_decay=settings.weight_decay,
        )
    if settings.optimizer == "adafactor_device":
        from glu_study.training.adafactor import DeviceAdafactor

        # The same algorithm with its per-tensor scalars kept on the device (no host sync per parameter).
        return DeviceAdafactor(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True
    )


def rsqrt_schedule(step: int, warmup_steps: int, max_steps: int, decay_fraction: float) -> float:
    """The paper's schedule: 1/sqrt(max(step, warmup)), times a linear ramp to 0 over the final steps."""
    factor = 1.0 / math.sqrt(max(step, warmup_steps, 1))
    decay_steps = decay_fraction * max_steps
    if decay_steps > 0:
        factor *= min(1.0, max(0.0, (max_steps - step) / decay_steps))
    return factor


def make_schedule(optimizer, settings) -> torch.optim.lr_scheduler.LambdaLR:
    from transformers import get_constant_schedule, get_cosine_schedule_with_warmup

    if settings.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps, settings.max_steps)
    if settings.schedule == "constant":
        return get_constant_schedule(optimizer)
    w, n, f = settings.warmup_steps, settings.max_steps, settings.decay_fraction
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: rsqrt_schedule(step, w, n, f))


def optimizer_step(fwd, model, optimizer, schedule, micro_batches, settings, device) -> torch.Tensor:
    """One optimizer step over this rank's `settings.grad_accum` micro-batches; returns their loss, on device.

    `fwd` is what runs the forward pass (the model, its DDP wrapper, or a compiled version of either); DDP's
    gradient all-reduce happens only on the last micro-batch. Nothing here waits for the device.
    """
    total = torch.zeros((), device=device)
    ddp = (
        fwd if isinstance(fwd, torch.nn.parallel.DistributedDataParallel) else getattr(fwd, "_orig_mod", None)
    )
    for m, batch in enumerate(micro_batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        last = m == settings.grad_accum - 1
        is_ddp = isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        with ddp.no_sync() if is_ddp and not last else contextlib.nullcontext():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16"):
                loss = fwd(**batch).loss / settings.grad_accum
            loss.backward()
        total += loss.detach()
    if settings.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return total
