"""Held-out log-perplexity of a run's latest checkpoint: `python -m glu_study.evaluate run_dir=DIR`.

Rebuilds the run's exact held-out set from its saved config (same corpus, tokenizer, lengths and masks),
prints the figure and appends it to the run's metrics.jsonl as {"step", "eval/log_perplexity",
"source": "evaluate"}. Falls back to the Hugging Face export in <run_dir>/model when no checkpoint is left.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import T5ForConditionalGeneration

from glu_study.data import DataError, PretrainData
from glu_study.ffn import check_variant_config
from glu_study.model import build_model
from glu_study.train import heldout_log_perplexity, list_checkpoints, load_checkpoint


def evaluate_run(run_dir: Path, batch_size: int = 32, device: str = "cpu") -> dict:
    run_dir = Path(run_dir).resolve()
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run directory")
    checkpoints = list_checkpoints(run_dir)
    if checkpoints:
        step, path = checkpoints[-1]
        ckpt = load_checkpoint(path)
        cfg = OmegaConf.create(ckpt["config"])  # the config the weights were trained with
        data = PretrainData(cfg.data, log=lambda *a: None)
        model = build_model(cfg.model, check_variant_config(cfg.ffn), data.vocab_size, cfg.seed)
        model.load_state_dict(ckpt["model"])
        source = str(path)
    elif (run_dir / "model" / "config.json").is_file() and cfg_path.is_file():
        cfg = OmegaConf.load(cfg_path)
        data = PretrainData(cfg.data, log=lambda *a: None)
        model = T5ForConditionalGeneration.from_pretrained(run_dir / "model")
        summary = run_dir / "summary.json"
        step = json.loads(summary.read_text())["steps"] if summary.exists() else -1
        source = str(run_dir / "model")
    else:
        raise DataError(
            f"{run_dir} has neither a checkpoint nor an exported model with its .hydra/config.yaml"
        )
    dev = torch.device(device)
    model.to(dev)
    value = heldout_log_perplexity(model, data, dev, cfg.trainer.precision, batch_size)
    record = {"step": step, "eval/log_perplexity": value, "source": "evaluate"}
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return {**record, "checkpoint": source}


def main(argv: list[str] | None = None) -> int:
    args = OmegaConf.from_cli(sys.argv[1:] if argv is None else argv)
    if "run_dir" not in args:
        print("usage: python -m glu_study.evaluate run_dir=DIR [batch_size=32] [device=cpu]", file=sys.stderr)
        return 2
    try:
        result = evaluate_run(
            Path(str(args.run_dir)), int(args.get("batch_size", 32)), str(args.get("device", "cpu"))
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"held-out log-perplexity of {result['checkpoint']} (step {result['step']}): "
        f"{result['eval/log_perplexity']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
