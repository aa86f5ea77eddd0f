"""Logging events: every one to the run directory's metrics.jsonl, and the same figures to Weights & Biases.

One W&B run per job: project from `logger.project`, group = `logger.group` (the experiment or sweep), name =
`<ffn>-s<seed>`, tags gated/non-gated and the model size, config = the resolved Hydra config plus derived
figures. `logger.mode=auto` goes online only when an API key is configured and the server answers within
`logger.timeout_s`, otherwise offline into <run_dir>/wandb (with a one-line warning saying how to sync later), so a
job never prompts for a login and never waits on a network it does not have. `logger.mode=online` with no route
to the server is refused up front (exit 2), before anything is trained.
"""

from __future__ import annotations

import json
import netrc
import os
import secrets
import sys
from pathlib import Path

from omegaconf import OmegaConf

from glu_study.errors import ConfigError
from glu_study.network import host_port, reachable
from glu_study.training.run_dir import METRICS
from glu_study.training.state import RunState


def wandb_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = host_port(wandb_url())[0]
    try:
        return netrc.netrc().authenticators(host) is not None  # what `wandb login` writes
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str, timeout_s: float) -> str:
    """The W&B mode this job runs in; decided once, before anything is written (`mode` checked by check_logger)."""
    if mode not in ("auto", "online"):
        return mode
    if mode == "auto" and not wandb_key_configured():
        return (
            "offline"  # said by the Tracker once every check has passed (a refused run says only its error)
        )
    if reachable(wandb_url(), timeout_s):
        return "online"
    host, port = host_port(wandb_url())
    if mode == "online":
        raise ConfigError(
            f"logger.mode=online but the W&B server {host}:{port} did not answer within {timeout_s:g} s; "
            "use logger.mode=offline (and `wandb sync` later) or logger.mode=auto"
        )
    print(
        f"warning: W&B server {host}:{port} unreachable within {timeout_s:g} s: logging offline; "
        "upload later with `wandb sync <run_dir>/wandb/offline-run-*`",
        file=sys.stderr,
    )
    return "offline"


class Tracker:
    """Writes every logging event to metrics.jsonl and (unless disabled) to W&B. Inert on ranks > 0."""

    def __init__(
        self,
        cfg,
        run_dir: Path,
        derived: dict,
        state: RunState,
        *,
        mode: str,
        tags: list[str],
        name: str | None = None,
        job_type: str = "pretrain",
        summaries: dict[str, str] | None = None,
        enabled: bool = True,
    ):
        """`mode` is the W&B mode the command's preflight resolved (resolve_mode); `derived` (parameter counts,
        d_ff, ...) joins the config under that key; `summaries` are W&B define_metric summaries (metric -> e.g.
        "min,last"), which summary() leaves alone. Construction only opens metrics.jsonl for appending: the
        command trims it to its resumed step (run_dir.keep_metrics_until) before."""
        self.enabled = enabled
        self.summaries = summaries or {
            "eval/log_perplexity": "min,last",
            "val/log_perplexity": "min,last",
            "train/loss": "last",
        }
        self.run = None
        self.run_id = state.wandb_id
        self.mode = mode if enabled else "disabled"
        if not enabled:
            return
        self._file = open(run_dir / METRICS, "a")

        if mode == "disabled":
            return
        if mode == "offline" and cfg.logger.mode == "auto" and not wandb_key_configured():
            print(
                f"warning: no W&B API key (WANDB_API_KEY or `wandb login`): logging offline; upload later with "
                f"`wandb sync {run_dir / 'wandb'}/offline-run-*`",
                file=sys.stderr,
            )
        import wandb

        # A fixed id, kept in the checkpoint: a resumed job continues the same W&B run.
        self.run_id = self.run_id or secrets.token_hex(4)
        config = OmegaConf.to_container(cfg, resolve=True)
        config["derived"] = derived
        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group,
            name=name or cfg.name,
            job_type=job_type,
            tags=[*tags, *cfg.logger.tags],
            config=config,
            dir=str(run_dir),
            id=self.run_id,
            resume="allow",
            mode=mode,
            reinit="create_new",
            settings=wandb.Settings(
                console="off",
                silent=True,
                x_disable_stats=True,
                disable_git=True,
                save_code=False,
                x_save_requirements=False,
            ),
        )
        for metric, summary in self.summaries.items():
            self.run.define_metric(metric, summary=summary)

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        if self.run is not None:
            self.run.log(values, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                if k not in self.summaries:  # define_metric keeps those (e.g. min and last)
                    self.run.summary[k] = v

    def finish(self, exit_code: int = 0, preempted: bool = False) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self.run is not None:
            if preempted:
                self.run.mark_preempting()
            self.run.finish(exit_code=exit_code)
            self.run = None
