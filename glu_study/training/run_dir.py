"""The run directory's files: the one module that knows their names and formats.

    <run_dir>/
      .hydra/config.yaml     resolved config (Hydra writes it)
      metrics.jsonl          one JSON object per logging event ({"step": N, "train/loss": ..., ...})
      summary.json           final figures of a pretraining run
      checkpoints/step_<N>/  see glu_study.training.checkpoints
      model/                 Hugging Face export: config.json, model.safetensors, spiece.model
      wandb/                 the W&B run
      finetune/<name>/       a fine-tune's records: config.yaml, metrics.jsonl, scores.json, checkpoints/, wandb/

Reports copy a run's records as `<name>/{summary.json, metrics.jsonl, config.yaml}`; readers accept either place
for the config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from glu_study.files import atomic_dir, write_json_atomic, write_text_atomic

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
CONFIG = "config.yaml"  # our own copy of the config: fine-tunes and copied records
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
SCORES = "scores.json"
MODEL = "model"
EXPORT_FILES = ("config.json", "model.safetensors", "spiece.model")
RECORD_FILES = (SUMMARY, METRICS, CONFIG)  # what a report keeps of a run
FINETUNE_RECORD_FILES = (SCORES, METRICS, CONFIG)


def holds_only_hydra_files(path: Path) -> bool:
    """True if the directory holds nothing but what Hydra wrote for this invocation (.hydra/, <job>.log)."""
    return path.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in path.iterdir())


# --- metrics.jsonl ----------------------------------------------------------------------------------------


def read_metrics(directory: Path) -> list[dict]:
    path = Path(directory) / METRICS
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def keep_metrics_until(directory: Path, step: int) -> None:
    """On resume, drop events logged after the checkpoint resumed from: they will be logged again."""
    kept = [r for r in read_metrics(directory) if r["step"] <= step]
    write_text_atomic(directory / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def append_metrics(directory: Path, record: dict) -> None:
    with open(directory / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


# --- config, summary, scores ------------------------------------------------------------------------------


def config_path(directory: Path) -> Path | None:
    """The run's resolved config: Hydra's copy in a run directory, ours in copied records and fine-tunes."""
    for path in (directory / HYDRA_CONFIG, directory / CONFIG):
        if path.is_file():
            return path
    return None


def load_config(directory: Path) -> DictConfig | None:
    path = config_path(directory)
    return OmegaConf.load(path) if path else None


def save_config(directory: Path, cfg: DictConfig) -> None:
    write_text_atomic(directory / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


def read_summary(directory: Path) -> dict:
    return json.loads((directory / SUMMARY).read_text())


def write_summary(directory: Path, summary: dict) -> None:
    write_json_atomic(directory / SUMMARY, summary)


def write_scores(directory: Path, scores: dict) -> None:
    write_json_atomic(directory / SCORES, scores)


def copy_records(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """Copy the record files `names` that `source` has into `target` (the config from wherever it lives)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = config_path(source) if name == CONFIG else source / name
        if path is not None and path.is_file():
            shutil.copyfile(path, target / name)


# --- the Hugging Face export ------------------------------------------------------------------------------


def export_model(model, spiece_model: str | Path, directory: Path) -> Path:
    """<directory>/model, loadable with T5ForConditionalGeneration/T5Tokenizer.from_pretrained."""
    final = directory / MODEL
    with atomic_dir(final, replace=True) as tmp:
        model.save_pretrained(tmp)
        shutil.copyfile(spiece_model, tmp / "spiece.model")
    return final


def missing_export_files(directory: Path) -> list[str]:
    return [f for f in EXPORT_FILES if not (directory / MODEL / f).is_file()]


def load_export(directory: Path, **config_overrides):
    from transformers import T5ForConditionalGeneration

    return T5ForConditionalGeneration.from_pretrained(directory / MODEL, **config_overrides)


# --- fine-tunes of a pretraining run ----------------------------------------------------------------------


def finetune_dir(run_dir: Path, name: str) -> Path:
    return run_dir / "finetune" / name


def finetune_dirs(run_dir: Path) -> list[Path]:
    """The fine-tunes of a run that have written scores."""
    return sorted(p.parent for p in (run_dir / "finetune").glob(f"*/{SCORES}"))
