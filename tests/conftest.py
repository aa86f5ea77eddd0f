"""Shared fixtures. Tests run on a small embedded corpus (stdlib docstrings only, 1k-piece vocabulary) in a
session cache, so the corpus, tokenizer and tokenised stream are built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Small-but-real settings every training test starts from (the real conf tree, a few overrides).
TINY = [
    "data.packages=[]",
    "data.vocab_size=1000",
    "data.eval_examples=16",
    "data.inputs_length=64",
    "trainer.batch_size=8",
    "trainer.max_steps=6",
    "trainer.eval_every=3",
    "trainer.checkpoint_every=3",
    "trainer.log_every=1",
    "trainer.warmup_steps=10",
    "logger=disabled",
]


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow (make test-all)"))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    cache = os.environ.get("GLU_STUDY_TEST_CACHE") or str(tmp_path_factory.mktemp("glu_cache"))
    os.environ["GLU_STUDY_CACHE"] = cache
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    return Path(cache)


@pytest.fixture(scope="session")
def tiny_data(session_cache):
    from glu_study.config import compose
    from glu_study.data import PretrainData

    cfg = compose(TINY)
    return PretrainData(cfg.data, log=lambda *a: None)


def run_cli(*args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ...` in a child process (from the repository root unless cwd= says), capturing output."""
    kwargs.setdefault("cwd", ROOT)
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
