"""The paper's Adafactor with no host synchronisation in its step (`trainer.optimizer=adafactor_device`).

Why our own: transformers' Adafactor (what the CPU study uses) computes the parameter scale as
`max(eps2, RMS(p))` in Python against a device tensor, so every parameter tensor's step reads a number back from
the GPU (257-281 waits per step at T5-base); torch.optim.Adafactor, the same rule, calls `.item()` on
`p.norm()` and `update.norm()` even with foreach=True; timm's and fairseq's copies keep transformers' `max`. This is
transformers' algorithm line for line — factored second moments for matrices, decay 1 - t^-0.8, ε1 = 1e-30, update
clipping at RMS 1.0, the step scaled by max(ε2 = 1e-3, RMS(p)) — with the two scalars that depend on the tensors
(the clipping divisor and the parameter scale) kept as device tensors. The only host numbers are the step counter
and the learning rate. Tested against transformers' over 50 steps (tests/training/test_optim.py).
"""

from __future__ import annotations

import math

import torch


class DeviceAdafactor(torch.optim.Optimizer):
    """Adafactor without momentum, with update clipping and parameter scaling, and an external learning rate."""

    def __init__(
        self, params, lr: float, *, clip_threshold=1.0, decay_rate=-0.8, eps=(1e-30, 1e-3), weight_decay=0.0
    ):
        defaults = dict(
            lr=lr, clip_threshold=clip_threshold, decay_rate=decay_rate, eps=eps, weight_decay=weight_decay
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)

    def _update(self, p: torch.Tensor, group: dict) -> None:
        grad = p.grad.float()
        state = self.state[p]
        factored = grad.dim() >= 2
        if not state:
            state["step"] = 0
            if factored:
                state["exp_avg_sq_row"] = grad.new_zeros(grad.shape[:-1])
                state["exp_avg_sq_col"] = grad.new_zeros(grad.shape[:-2] + grad.shape[-1:])
            else:
                state["exp_avg_sq"] = torch.zeros_like(grad)
        state["step"] += 1
        eps1, eps2 = group["eps"]
        master = p.float()
        # The parameter scale max(eps2, RMS(p)), as a device tensor: no number comes back to the host.
        lr = rms(master).clamp_(min=eps2) * group["lr"]
        beta2 = 1.0 - math.pow(state["step"], group["decay_rate"])
        squared = grad.square().add_(eps1)
        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(beta2).add_(squared.mean(dim=-1), alpha=1.0 - beta2)
            col.mul_(beta2).add_(squared.mean(dim=-2), alpha=1.0 - beta2)
            row_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
            update = torch.mul(row_factor, col.unsqueeze(-2).rsqrt()).mul_(grad)
        else:
            second = state["exp_avg_sq"]
            second.mul_(beta2).add_(squared, alpha=1.0 - beta2)
            update = second.rsqrt().mul_(grad)
        update.div_((rms(update) / group["clip_threshold"]).clamp_(min=1.0))
        update.mul_(lr)
        if group["weight_decay"]:
            master.sub_(master * lr * group["weight_decay"])
        master.sub_(update)
        if master is not p:  # a bf16/fp16 parameter: its fp32 copy was updated
            p.copy_(master)


def rms(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.norm(2) / (tensor.numel() ** 0.5)
