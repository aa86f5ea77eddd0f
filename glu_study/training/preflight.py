"""The checks every training command makes before it builds or writes anything, in one place.

Each command (`train`, `finetune`) first checks what is its own (the variant and model; the tasks and the
pretrained export), then calls `check_run`: its loop settings with their ranges, the W&B logger's mode (and, for
`online`, that the server answers), and that the directory it would write holds no differently configured run.
What comes back is the W&B mode the command's Tracker runs in, decided here once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from glu_study.config import check_logger, check_seed
from glu_study.training import run_dir as records
from glu_study.training.tracking import resolve_mode


def check_run(
    cfg: DictConfig,
    check_settings: Callable[[DictConfig], None],
    settings: DictConfig,
    directory: Path,
    hint: str,
    *,
    is_main: bool = True,
) -> str:
    """The seed, `check_settings(settings)`, the logger, the directory's recorded config; the resolved W&B
    mode."""
    check_seed(cfg.seed)
    check_settings(settings)
    check_logger(cfg.logger)
    records.check_resumable(directory, OmegaConf.to_container(cfg, resolve=True), hint)
    return resolve_mode(cfg.logger.mode, cfg.logger.timeout_s) if is_main else "disabled"
