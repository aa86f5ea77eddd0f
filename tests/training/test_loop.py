"""The shared loop's set-up: the CPU allocator setting that spares each step its page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

FAULTS = """
import resource, sys, torch
from glu_study.training.loop import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
def step():  # a step's large activations, the largest the loss's ~30 MB logits, all freed at its end
    held = [torch.zeros(928, 8100 // k) for k in (1, 2, 3, 4, 6, 8)]
    return sum(float(t.sum()) for t in held)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activation_memory_is_reused_not_faulted_in_again():
    default, kept = minor_faults("default"), minor_faults("keep")
    # With glibc's defaults, freed blocks go back to the kernel and are faulted in again: how much depends on where
    # its sliding mmap threshold settles (measured 18k to 348k faults over the 20 steps), but never under ~2 MB a step.
    assert default > 20 * 500
    assert kept < default / 10
