"""Training batches built ahead of the step that uses them: a torch DataLoader over PretrainData's positions.

A pretraining step's batch is a pure function of one number, the run's example position (PretrainData: example k
is chunk perm_e[k mod N] with its mask drawn from (seed, e, chunk)). So the loader is a map-style dataset whose
index is that position, read in order from where the run stands: with `trainer.loader_workers` > 0, worker
processes build step k+1's batch (span corruption, collation: ~40 ms for 128 x 568 tokens on one of our cores)
while the device runs step k, and on CUDA the batch is pinned so that its copy to the device does not block.
With 0 workers the batches are built in the training process, as before. Either way the batches are exactly
those of `PretrainData.train_batch`, so resume stays exact: a resumed run builds a new loader at its position.
"""

from __future__ import annotations

import multiprocessing as mp
import signal

import torch

from glu_study.data.pretrain import PretrainData


class StepBatches(torch.utils.data.Dataset):
    """Item `position` = (position, this rank's `grad_accum` micro-batches of the step starting at example
    `position`). Rank r's micro-batch m holds examples position + (m x ranks + r) x per_rank onwards."""

    def __init__(self, data: PretrainData, seed: int, per_rank: int, grad_accum: int, world_size=1, rank=0):
        self.data, self.seed, self.per_rank, self.grad_accum = data, seed, per_rank, grad_accum
        self.world_size, self.rank = world_size, rank

    def __getitem__(self, position: int):
        micro = [
            self.data.train_batch(
                position + (m * self.world_size + self.rank) * self.per_rank, self.per_rank, self.seed
            )
            for m in range(self.grad_accum)
        ]
        return position, micro


def step_loader(
    batches: StepBatches, start: int, steps: int, batch_size: int, *, workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """The next `steps` steps' batches from example position `start` (batch_size examples per step, all ranks)."""
    positions = range(start, start + steps * batch_size, batch_size)
    return torch.utils.data.DataLoader(
        batches,
        batch_size=None,  # an item is already a step's batches
        sampler=positions,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        pin_memory=pin_memory,
        persistent_workers=False,
        worker_init_fn=leave_stop_signals_to_the_trainer if workers else None,
        # Forked workers share the memory-mapped token stream; a spawned or forkserver worker (Python 3.14's
        # default on Linux) would receive PretrainData pickled, memory maps and all.
        multiprocessing_context="fork" if workers and "fork" in mp.get_all_start_methods() else None,
    )


def leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A worker ignores the stop signals: a cluster signals the whole process group (SIGTERM, SIGUSR2), a
    terminal sends Ctrl-C to it, and a worker that acted on one (or ran submitit's requeue handler, which it
    inherits from the process that forked it) would die before the trainer's checkpoint. The trainer decides
    (glu_study.training.loop.StopSignals); torch ends its workers when the trainer exits."""
    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
