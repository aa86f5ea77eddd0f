"""Shared fixtures. Tests run on a small embedded corpus (stdlib docstrings only, 1k-piece vocabulary) in a
session cache, so the corpus, tokenizer and tokenised stream are built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
    from tests.helpers import TINY

    cfg = compose(TINY)
    return PretrainData(cfg.data, log=lambda *a: None)
