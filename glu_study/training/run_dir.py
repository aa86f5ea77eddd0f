"""The run directory's files: the one module that knows their names and formats.

    <run_dir>/
      .hydra/config.yaml     resolved config (the run writes it once its checks pass; Hydra writes nothing here)
      metrics.jsonl          one JSON object per logging event ({"step": N, "train/loss": ..., ...})
      summary.json           final figures of a pretraining run
      checkpoints/step_<N>/  see glu_study.training.checkpoints
      model/                 Hugging Face export: config.json, model.safetensors, spiece.model
      wandb/                 the W&B run
      finetune/<name>/       a fine-tune's records: config.yaml, metrics.jsonl, scores.json, checkpoints/, wandb/
      .lock                  held by the one process writing the directory (see `one_writer`)

Reports copy a run's records as `<name>/{summary.json, metrics.jsonl, config.yaml}`; readers accept either place
for the config.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from glu_study.errors import ConfigError, DirectoryBusyError
from glu_study.files import atomic_dir, write_json_atomic, write_text_atomic

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
CONFIG = "config.yaml"  # our own copy of the config: fine-tunes and copied records
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
SCORES = "scores.json"
MODEL = "model"
LOCK = ".lock"
EXPORT_FILES = ("config.json", "model.safetensors", "spiece.model")
RECORD_FILES = (SUMMARY, METRICS, CONFIG)  # what a report keeps of a run
FINETUNE_RECORD_FILES = (SCORES, METRICS, CONFIG)


def holds_only_hydra_files(path: Path) -> bool:
    """True if the directory holds nothing but what Hydra wrote for this invocation (.hydra/, <job>.log)."""
    return path.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in path.iterdir())


@contextmanager
def one_writer(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on <directory>/.lock for the block; a second process on the same directory is refused
    (DirectoryBusyError) instead of racing it. The OS releases the lock when its holder exits or dies, so a killed run
    never leaves a stale lock behind."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DirectoryBusyError(
            f"{directory} is being written by another process (it holds {directory / LOCK}); "
            "wait for it to finish, or choose another run directory"
        ) from None
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# --- metrics.jsonl ----------------------------------------------------------------------------------------


def read_metrics(directory: Path) -> list[dict]:
    """The logging events. A process killed while appending can leave a last line without its newline: that is
    not a record yet (it is left out here, and the writer trims it when the run resumes)."""
    path = Path(directory) / METRICS
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]  # the last piece: "" or a torn line


def keep_metrics_until(directory: Path, step: int) -> None:
    """When a run starts, drop events logged after the step it starts from (all of them when it starts afresh:
    step -1): they will be logged again. Only the command that writes the run calls it, before logging."""
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


def save_config(directory: Path, cfg: DictConfig, name: Path | str = CONFIG) -> None:
    """The resolved config as the run's record (a pretraining run keeps it where Hydra would: .hydra/config.yaml)."""
    (directory / name).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / name, OmegaConf.to_yaml(cfg, resolve=True))


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for every leaf that differs between two nested configs."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


# Settings that may change between a run and its resumption (they do not change the maths), in either command's
# loop settings (`trainer.*`, `finetune.*`); and what is not compared at all.
RESUMABLE_CHANGES = {"eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "num_threads"}
RESUMABLE_CHANGES |= {
    "eval_batch_size",
    "dist_timeout_min",
    "loader_workers",
    "eval_dense_from",
    "eval_dense_every",
}
NOT_COMPARED = {
    "logger",
    "name",
    "cache_dir",
    "challenger",
    "study",
}  # the challenger's settings are compared in `ffn`; the study kind only labels the run
DATA_NOT_COMPARED = {
    "cache_dir",
    "num_proc",
}  # where the cache lives, who builds it (tokenizer_threads: part of the tokenizer)


def comparable(cfg: dict) -> dict:
    """The parts of a resolved config (pretraining's or a fine-tune's) that must match for a resume."""
    out = {k: v for k, v in cfg.items() if k not in NOT_COMPARED}
    for group in ("trainer", "finetune"):
        if isinstance(out.get(group), dict):
            out[group] = {k: v for k, v in out[group].items() if k not in RESUMABLE_CHANGES}
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k not in DATA_NOT_COMPARED}
    return out


def refuse_different(directory: Path, old: dict, new: dict, hint: str) -> None:
    """The one resume comparison: a ConfigError naming each key that differs (old -> new), ending in `hint`."""
    diffs = config_differences(comparable(old), comparable(new))
    old_model, new_model = (c.get("model", {}).get("name") for c in (old, new))
    if old_model != new_model and "name" in new:  # default run directories are named by variant and seed only
        hint = (
            f"it holds a {old_model} run: name={new_model}-{new['name']} (or hydra.run.dir=...) gives this "
            f"{new_model} run a directory of its own, or {hint}"
        )
    if diffs:
        raise ConfigError(
            f"{directory} holds a run with a different configuration ({'; '.join(diffs)}); {hint}"
        )


def check_resumable(directory: Path, resolved: dict, hint: str) -> None:
    """Refuse, before anything is written, a directory whose recorded config differs from `resolved`."""
    saved = load_config(directory) if directory.is_dir() else None
    if saved is None:
        return
    try:
        old = OmegaConf.to_container(saved, resolve=True)
    except Exception:  # an unreadable record: the checkpoint's own config check still guards the resume
        return
    refuse_different(directory, old, resolved, hint)


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
    from glu_study.model import from_pretrained

    return from_pretrained(directory / MODEL, **config_overrides)


# --- fine-tunes of a pretraining run ----------------------------------------------------------------------


def finetune_dir(run_dir: Path, name: str) -> Path:
    return run_dir / "finetune" / name


def finetune_dirs(run_dir: Path) -> list[Path]:
    """The fine-tunes of a run that have written scores."""
    return sorted(p.parent for p in (run_dir / "finetune").glob(f"*/{SCORES}"))
