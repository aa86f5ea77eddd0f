"""Data-parallel training under torchrun: which rank this is, and the two collectives the loop needs.

torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; without them everything here is a single process and the
collectives return their input. Each rank computes its slice of every global batch; only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistInfo()


def setup_distributed(device_kind: str, timeout_min: int = 60) -> DistInfo:
    """The process group (NCCL on CUDA, gloo on CPU) when torchrun launched us; a single process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE_PROCESS
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_min))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched_rank() -> int:
    """This process's rank as torchrun announced it (0 without torchrun), before any process group exists."""
    return int(os.environ.get("RANK", "0"))


def all_reduce_mean(value: float, device, info: DistInfo) -> float:
    if info.world_size == 1:
        return value
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_rank(flag: bool, device, info: DistInfo) -> bool:
    if info.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t)
    return bool(t.item())


def finish_distributed(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
