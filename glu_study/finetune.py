"""Fine-tune a pretrained run on GLUE / SuperGLUE / SQuAD and score the dev splits (the paper's Tables 2-4).

    python -m glu_study.finetune run_dir=runs/table1_cpu/swiglu-s0 task=rte
    python -m glu_study.finetune run_dir=DIR task=all finetune=paper       (= experiment=table2_paper)

Read top to bottom in `finetune()`: load the run's Hugging Face export (model/ with spiece.model) with dropout
switched on -> cast every task to text-to-text (glu_study.finetuning.tasks) and tokenise it (cached by `datasets`) -> train
on an examples-proportional mixture of the tasks with the pretraining loop's optimizer step -> every `eval_every`
steps generate answers for each dev split and score them with the task's official metric -> keep the best
score per task (T5's protocol) -> scores.json.

Records live in <run_dir>/finetune/<name>/: config.yaml, metrics.jsonl (train/loss, <task>/<metric> per
evaluation), scores.json (best and final per task, benchmark averages) and wandb/ (same rules as pretraining).
Checkpoints make a pre-empted fine-tune resume exactly: batches are a pure function of (seed, step).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from glu_study.cli import check_overrides, guarded
from glu_study.config import check_finetune
from glu_study.data import load_hf_tokenizer
from glu_study.errors import ConfigError, DataError
from glu_study.finetuning.evaluation import evaluate_tasks
from glu_study.finetuning.metrics import benchmark_averages
from glu_study.finetuning.mixture import collate, encode_eval, encode_train, mixture_rates, sample_batch
from glu_study.finetuning.tasks import TASKS, Task, check_hub, load_split, resolve_tasks
from glu_study.training import run_dir as records
from glu_study.training.checkpoints import Checkpointer
from glu_study.training.loop import TrainLoop, device_kind, seed_everything, setup_device
from glu_study.training.optim import make_optimizer, make_schedule, optimizer_step
from glu_study.training.preflight import check_run
from glu_study.training.state import FinetuneState
from glu_study.training.tracking import Tracker


def check_export(run_dir: Path) -> dict:
    """What we know about the pretrained model (summary.json), after checking its export is complete."""
    # Hydra has already made <run_dir>/finetune/<name> for its logs, so "absent" means "nothing else in it".
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} <= {"finetune"}:
        raise DataError(f"{run_dir}: no such run directory (no pretraining run there)")
    missing = records.missing_export_files(run_dir)
    if missing:
        raise DataError(
            f"{run_dir} has no exported model ({run_dir / records.MODEL} lacks {', '.join(missing)}); "
            "a pretraining run writes it when it finishes"
        )
    info = records.read_summary(run_dir) if (run_dir / records.SUMMARY).is_file() else {}
    model_cfg = json.loads((run_dir / records.MODEL / "config.json").read_text())
    return {
        "name": info.get("name", run_dir.name),
        "ffn": info.get("ffn", model_cfg.get("feed_forward_proj")),
        "seed": info.get("seed"),
        "model": info.get("model"),
        "steps": info.get("steps"),
        "eval/log_perplexity": info.get("eval/log_perplexity"),
    }


def load_tasks(tasks: list[Task], run_dir: Path, data_dir, settings, cache_dir: str):
    """The tokenizer, each task's tokenised training set and its dev splits (rows, inputs, full size)."""
    spiece = run_dir / records.MODEL / "spiece.model"
    tok = load_hf_tokenizer(spiece)
    tokenizer_id = hashlib.sha256(spiece.read_bytes()).hexdigest()[:16]
    hf_cache = str(Path(cache_dir) / "hf")
    train_sets, eval_sets = [], {}
    for task in tasks:
        train_sets.append(
            encode_train(task, load_split(task, "train", data_dir, hf_cache), tok, settings, tokenizer_id)
        )
        eval_sets[task.name] = {
            split: encode_eval(task, load_split(task, split, data_dir, hf_cache), tok, settings)
            for split in task.eval_splits
        }
    return tok, train_sets, eval_sets


def scores_record(
    cfg, tasks: list[Task], pretrained: dict, state: FinetuneState, truncated: bool, finished: bool
) -> dict:
    """scores.json: best and final scores per task, the benchmark averages, and what they came from."""
    return {
        "name": cfg.name,
        "task": cfg.task,
        "tasks": [t.name for t in tasks],
        "run_dir": str(Path(cfg.run_dir).resolve()),
        "pretrained": pretrained,
        "ffn": pretrained["ffn"],
        "seed": pretrained["seed"],
        "finetune_seed": cfg.seed,
        "steps": state.step,
        "max_steps": cfg.finetune.max_steps,
        "finished": finished,
        "eval_examples": cfg.finetune.eval_examples,
        "dev_truncated": truncated,
        "best": state.best,
        "final": state.final,
        **benchmark_averages(state.best),
        "wall_s": round(state.wall_s, 3),
    }


def finetune_tracker(
    cfg, out_dir: Path, pretrained: dict, tasks, train_sets, rates, state: FinetuneState, mode: str
) -> Tracker:
    """The fine-tune's metrics.jsonl and W&B run (job type `finetune`, named after the pretrained run)."""
    derived = {
        "pretrained": pretrained,
        "train_examples": {t.name: len(d) for t, d in zip(tasks, train_sets, strict=True)},
        "mixing_rates": {t.name: float(r) for t, r in zip(tasks, rates, strict=True)},
    }
    return Tracker(
        cfg,
        out_dir,
        derived,
        state,
        tags=["finetune", str(pretrained["ffn"]), *(t.name for t in tasks)],
        name=f"{pretrained['name']}/{cfg.name}",
        job_type="finetune",
        mode=mode,
        summaries={"train/loss": "last", **{f"{t.name}/score": "max,last" for t in tasks}},
    )


RESUME_HINT = "choose another name= for this fine-tune"


def preflight(cfg: DictConfig, out_dir: Path) -> tuple[list, Path, dict, str]:
    """The checks that need no data, before anything is built or written: the tasks, what every command checks
    (glu_study.training.preflight: the settings with their ranges, the W&B mode and server, the fine-tune
    directory's recorded config), the data directory, the pretrained export, the hub. Returns the W&B mode."""
    tasks = resolve_tasks(cfg.task)
    mode = check_run(cfg, check_finetune, cfg.finetune, out_dir, RESUME_HINT)
    if cfg.data_dir is not None and not Path(cfg.data_dir).is_dir():
        raise DataError(f"data_dir={cfg.data_dir}: no such directory")
    run_dir = Path(cfg.run_dir).resolve()
    pretrained = check_export(run_dir)
    check_hub(cfg.data_dir)
    return tasks, run_dir, pretrained, mode


def finetune(cfg: DictConfig, out_dir: Path) -> dict:
    """Fine-tune `cfg.run_dir`'s model on `cfg.task`; returns scores.json. Raises before training on bad input."""
    settings = cfg.finetune
    tasks, run_dir, pretrained, mode = preflight(cfg, out_dir)
    device = setup_device(device_kind(settings), settings)
    # Data first: a bad dataset fails here, before anything is trained or written.
    tok, train_sets, eval_sets = load_tasks(tasks, run_dir, cfg.data_dir, settings, cfg.cache_dir)
    rates = mixture_rates([len(d) for d in train_sets], settings.mixing_limit)
    # Scores on part of a dev split are pipeline checks, never comparable with the paper: say so in the record.
    truncated = any(len(rows) < total for splits in eval_sets.values() for rows, _, total in splits.values())

    seed_everything(cfg.seed)
    model = records.load_export(run_dir, dropout_rate=settings.dropout_rate).to(device)
    optimizer = make_optimizer(model, settings)
    schedule = make_schedule(optimizer, settings)

    out_dir.mkdir(parents=True, exist_ok=True)
    state = FinetuneState()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    checkpointer = Checkpointer(out_dir, model, optimizer, schedule, state, resolved)
    resumed = checkpointer.resume(RESUME_HINT)
    if resumed:
        print(f"resuming {out_dir} from step {state.step}")
    # Our own copy of the config: in a -m sweep Hydra's .hydra/ is in the sweep directory, not here.
    records.save_config(out_dir, cfg)
    records.keep_metrics_until(out_dir, state.step if resumed else -1)
    tracker = finetune_tracker(cfg, out_dir, pretrained, tasks, train_sets, rates, state, mode)
    state.wandb_id = tracker.run_id

    def evaluate() -> None:
        scores = evaluate_tasks(model, tok, eval_sets, settings, device)
        state.final = scores
        for name, metrics in scores.items():
            best = state.best.get(name)
            if best is None or metrics["score"] > best["score"]:  # T5: the best checkpoint per task
                state.best[name] = {**metrics, "step": state.step}
        tracker.log(state.step, {f"{n}/{k}": v for n, m in scores.items() for k, v in m.items()})
        finished = state.step == settings.max_steps
        records.write_scores(out_dir, scores_record(cfg, tasks, pretrained, state, truncated, finished))

    micro = settings.batch_size // settings.grad_accum

    def train_step() -> tuple[torch.Tensor, int]:
        pairs = sample_batch(train_sets, rates, settings.batch_size, cfg.seed, state.step)
        micro_batches = [collate(pairs[i : i + micro]) for i in range(0, len(pairs), micro)]
        loss = optimizer_step(model, model, optimizer, schedule, micro_batches, settings, device)
        return loss, sum(len(x) + len(y) for x, y in pairs)

    model.train()
    desc = f"{pretrained['name']}/{cfg.name}"
    TrainLoop(settings, state, checkpointer, tracker, schedule, device=device, desc=desc).run(
        train_step, evaluate
    )
    if not state.final:  # resumed a fine-tune that had already finished
        evaluate()
    record = scores_record(cfg, tasks, pretrained, state, truncated, finished=True)
    records.write_scores(out_dir, record)
    tracker.summary(wandb_summary(record))
    tracker.finish(exit_code=0)
    return record


def wandb_summary(record: dict) -> dict:
    """What the W&B run's summary keeps of scores.json: the averages and every best score."""
    summary = {k: v for k, v in record.items() if k.endswith(("_avg", "_em", "_f1")) and v is not None}
    summary.update({f"best/{t}/{k}": v for t, m in record["best"].items() for k, v in m.items()})
    return summary


def print_scores(record: dict) -> None:
    print(
        f"dev scores of {record['pretrained']['name']} fine-tuned on {record['task']} ({record['steps']} steps):"
    )
    for name, m in record["best"].items():
        figures = ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k not in ("score", "step"))
        print(f"  {name:14s} {figures}  (best at step {m['step']})")
    for key in ("glue_avg", "superglue_avg", "squad_em", "squad_f1"):
        if record.get(key) is not None:
            print(f"  {key:14s} {record[key]:.2f}")


def _remove_job_dirs(out_dir: Path, run_dir: Path) -> None:
    """Bad input leaves nothing behind: Hydra already made <run_dir>/finetune/<name> (and a bad run_dir)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    d = out_dir.parent
    while d != run_dir.parent and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


@hydra.main(config_path="../conf_finetune", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    missing = [k for k in ("run_dir", "task") if OmegaConf.is_missing(cfg, k)]
    # Without run_dir=, Hydra's run directory sits under a placeholder (conf_finetune/finetune.yaml): remove all of it.
    run_dir = hydra_dir.parent.parent if missing else Path(cfg.run_dir).resolve()
    out_dir = hydra_dir if missing else records.finetune_dir(run_dir, cfg.name)
    fresh = records.holds_only_hydra_files(out_dir) or not out_dir.exists()

    def cleanup():
        if fresh:
            _remove_job_dirs(out_dir, run_dir)
            if records.holds_only_hydra_files(hydra_dir):  # a -m sweep's per-job directory
                shutil.rmtree(hydra_dir, ignore_errors=True)

    def body() -> dict:
        if missing:
            raise ConfigError(
                f"missing {' and '.join(f'{k}=' for k in missing)}; usage: python -m glu_study.finetune "
                f"run_dir=<a finished pretraining run> task=<{', '.join(TASKS)}; or glue, superglue, squad, all>"
            )
        out_dir.mkdir(parents=True, exist_ok=True)  # a -m sweep's job directory is not made by Hydra
        with records.one_writer(out_dir):
            record = finetune(cfg, out_dir)
        print_scores(record)
        return record

    guarded(body, cleanup)


if __name__ == "__main__":
    check_overrides("finetune", sys.argv[1:])
    main()
