"""Held-out log-perplexity of a run's latest checkpoint: `python -m glu_study.evaluate run_dir=DIR`.

Rebuilds the run's exact held-out set from its saved config (same corpus, tokenizer, lengths and masks),
prints the figure and appends it to the run's metrics.jsonl as {"step", "eval/log_perplexity" (test),
"val/log_perplexity" (validation), "source": "evaluate"}. Falls back to the Hugging Face export in <run_dir>/model when no checkpoint loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from glu_study.config import DataConfig
from glu_study.data import PretrainData
from glu_study.errors import ConfigError, DataError, exit_status
from glu_study.ffn import check_variant_config
from glu_study.model import build_model
from glu_study.training import run_dir as records
from glu_study.training.checkpoints import newest_loadable
from glu_study.training.heldout import heldout_figures


def load_latest(run_dir: Path):
    """(config, model, step, where) of the newest checkpoint that loads, else of the Hugging Face export.

    evaluate only reads: a damaged checkpoint is skipped, not moved (the run's own writer sets it aside)."""
    found = newest_loadable(run_dir, log=lambda m: print(m, file=sys.stderr), move=False)
    if found is not None:
        step, path, ckpt = found
        cfg = OmegaConf.create(ckpt["config"])  # the config the weights were trained with
        model = build_model(
            cfg.model, check_variant_config(cfg.ffn), ckpt["model"]["shared.weight"].shape[0], 0
        )
        model.load_state_dict(ckpt["model"])
        return cfg, model, step, str(path)
    cfg = records.load_config(run_dir)
    if cfg is None or records.missing_export_files(run_dir):
        raise DataError(
            f"{run_dir} has neither a checkpoint nor an exported model with its {records.HYDRA_CONFIG}"
        )
    summary = records.read_summary(run_dir) if (run_dir / records.SUMMARY).is_file() else {}
    return cfg, records.load_export(run_dir), summary.get("steps", -1), str(run_dir / records.MODEL)


def evaluate_run(run_dir: Path, batch_size: int = 32, device: str = "cpu") -> dict:
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run directory")
    cfg, model, step, source = load_latest(run_dir)
    # On the schema: a run recorded before a data setting existed gets that setting's default.
    data = PretrainData(OmegaConf.merge(OmegaConf.structured(DataConfig), cfg.data), log=lambda *a: None)
    dev = torch.device(device)
    figures = heldout_figures(model.to(dev), data, dev, cfg.trainer.precision, batch_size)
    record = {"step": step, **figures, "source": "evaluate"}
    records.append_metrics(run_dir, record)
    return {**record, "checkpoint": source}


USAGE = "usage: python -m glu_study.evaluate run_dir=DIR [batch_size=32] [device=cpu]"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(
            f"{USAGE}\n\n{__doc__.strip()}\n\nexample: python -m glu_study.evaluate run_dir=runs/dev/swiglu-s0"
        )
        return 0
    args = OmegaConf.from_cli(argv)

    def body() -> int:
        if "run_dir" not in args:
            raise ConfigError(USAGE)
        result = evaluate_run(
            Path(str(args.run_dir)), int(args.get("batch_size", 32)), str(args.get("device", "cpu"))
        )
        print(
            f"held-out log-perplexity of {result['checkpoint']} (step {result['step']}): "
            f"{result['eval/log_perplexity']:.4f} (validation set {result['val/log_perplexity']:.4f})"
        )
        return 0

    return exit_status(body)


if __name__ == "__main__":
    sys.exit(main())
