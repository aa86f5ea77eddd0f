"""Fine-tune a pretrained run on GLUE / SuperGLUE / SQuAD and score the dev splits (the paper's Tables 2-4).

    python -m glu_study.finetune run_dir=runs/table1_cpu/swiglu-s0 task=rte
    python -m glu_study.finetune run_dir=DIR task=all finetune=paper       (= experiment=table2_paper)

Read top to bottom in `finetune()`: load the run's Hugging Face export (model/ with spiece.model) with dropout
switched on -> cast every task to text-to-text (glu_study.tasks) and tokenise it (cached by `datasets`) -> train
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
import math
import shutil
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from glu_study.data import DataError, fingerprint, load_hf_tokenizer
from glu_study.tasks import (
    TASKS,
    Task,
    UnknownTaskError,
    benchmark_averages,
    load_split,
    resolve_tasks,
    score_splits,
    text_to_text,
)
from glu_study.tracking import Tracker, write_text_atomic
from glu_study.train import (
    EXIT_NONFINITE,
    ConfigError,
    DistInfo,
    NonFiniteLossError,
    StopOnSigterm,
    check_settings,
    checkpoint_payload,
    cli_exit_codes,
    holds_only_hydra_files,
    make_optimizer,
    make_schedule,
    optimizer_step,
    resolve_device,
    resume_newest,
    save_checkpoint,
    seed_everything,
    write_json_atomic,
)

EXPORT_FILES = ("config.json", "model.safetensors", "spiece.model")
# Settings that may change between a fine-tune and its resumption (they do not change the maths).
RESUMABLE_CHANGES = {
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "num_threads",
    "eval_batch_size",
}


def _comparable(cfg: dict) -> dict:
    """The parts of a fine-tune's config that must match for its directory to be resumed."""
    settings = {k: v for k, v in cfg["finetune"].items() if k not in RESUMABLE_CHANGES}
    return {**{k: v for k, v in cfg.items() if k not in ("logger", "finetune")}, "finetune": settings}


def validate_settings(s) -> None:
    positive = ("max_steps", "batch_size", "grad_accum", "inputs_length", "targets_length", "eval_every")
    positive += ("checkpoint_every", "keep_checkpoints", "log_every", "eval_batch_size", "mixing_limit")
    check_settings(s, "finetune", positive)
    if s.batch_size % s.grad_accum:
        raise ConfigError(f"finetune.batch_size={s.batch_size} is not divisible by grad_accum={s.grad_accum}")
    if not 0.0 <= s.dropout_rate < 1.0:
        raise ConfigError(f"finetune.dropout_rate must be in [0, 1), got {s.dropout_rate}")


def check_export(run_dir: Path) -> dict:
    """What we know about the pretrained model (summary.json), after checking its export is complete."""
    # Hydra has already made <run_dir>/finetune/<name> for its logs, so "absent" means "nothing else in it".
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} <= {"finetune"}:
        raise DataError(f"{run_dir}: no such run directory (no pretraining run there)")
    missing = [f for f in EXPORT_FILES if not (run_dir / "model" / f).is_file()]
    if missing:
        raise DataError(
            f"{run_dir} has no exported model ({run_dir / 'model'} lacks {', '.join(missing)}); "
            "a pretraining run writes it when it finishes"
        )
    summary = run_dir / "summary.json"
    info = json.loads(summary.read_text()) if summary.is_file() else {}
    model_cfg = json.loads((run_dir / "model" / "config.json").read_text())
    return {
        "name": info.get("name", run_dir.name),
        "ffn": info.get("ffn", model_cfg.get("feed_forward_proj")),
        "seed": info.get("seed"),
        "model": info.get("model"),
        "steps": info.get("steps"),
        "eval/log_perplexity": info.get("eval/log_perplexity"),
    }


# ---------------------------------------------------------------------------------------------------------
# Data: text-to-text pairs, tokenised once (datasets caches the map), sampled by (seed, step)
# ---------------------------------------------------------------------------------------------------------


def _rows(batch: dict) -> list[dict]:
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


# Part of the cache key of tokenised training sets: bump it whenever text_to_text's output changes.
CASTING_VERSION = 1


def encode_train(task: Task, ds, tok, s, tokenizer_id: str):
    """A dataset of (input_ids, labels), one row per training pair (ReCoRD: one per answer).

    `datasets` caches the map beside the source data. Its automatic key hashes the function with the tokenizer
    inside, which is not stable across processes, so the key is given: the source's fingerprint, the task, the
    tokenizer file's hash, the lengths and CASTING_VERSION.
    """

    def encode(batch):
        pairs = [p for row in _rows(batch) for p in text_to_text(task, row, for_training=True)]
        return {
            "input_ids": tok([p[0] for p in pairs], max_length=s.inputs_length, truncation=True)["input_ids"],
            "labels": tok([p[1] for p in pairs], max_length=s.targets_length, truncation=True)["input_ids"],
        }

    if s.max_train_examples and len(ds) > s.max_train_examples:
        ds = ds.shuffle(seed=0).select(range(s.max_train_examples))  # a fixed subset, the same for every run
    key = fingerprint(
        "text-to-text",
        CASTING_VERSION,
        ds._fingerprint,
        task.name,
        tokenizer_id,
        s.inputs_length,
        s.targets_length,
    )
    out = ds.map(
        encode,
        batched=True,
        remove_columns=ds.column_names,
        new_fingerprint=key,
        desc=f"{task.name}: tokenise",
    )
    if len(out) == 0:
        raise DataError(f"{task.name}: no training examples")
    return out


def encode_eval(task: Task, ds, tok, s) -> tuple[list[dict], list[list[int]], int]:
    """The dev rows scored (what the metrics need), their tokenised inputs, and the split's full size."""
    total = len(ds)
    if s.eval_examples:
        ds = ds.select(range(min(s.eval_examples, total)))
    rows = list(ds)
    inputs = [text_to_text(task, r, for_training=False)[0][0] for r in rows]
    return rows, tok(inputs, max_length=s.inputs_length, truncation=True)["input_ids"], total


def mixture_rates(sizes: list[int], limit: int) -> np.ndarray:
    """T5's examples-proportional mixing: each task's rate is proportional to min(its size, limit)."""
    r = np.minimum(np.asarray(sizes, dtype=np.float64), limit)
    return r / r.sum()


def sample_batch(train_sets: list, rates: np.ndarray, size: int, seed: int, step: int) -> list[tuple]:
    """The examples of one step: a pure function of (seed, step), so resuming needs no data state."""
    rng = np.random.default_rng([seed, step])
    which = rng.choice(len(train_sets), size=size, p=rates)
    pairs = []
    for t in np.unique(which):
        idx = rng.integers(0, len(train_sets[t]), size=int((which == t).sum()))
        got = train_sets[t][idx.tolist()]
        pairs.extend(zip(got["input_ids"], got["labels"], strict=True))
    order = rng.permutation(len(pairs))  # tasks mixed within the batch, not grouped
    return [pairs[i] for i in order]


def collate(pairs: list[tuple], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest example of the batch (fine-tuning inputs vary a lot in length)."""
    n_in, n_out = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs)
    input_ids = torch.full((len(pairs), n_in), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), n_out), -100, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        input_ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": labels}


# ---------------------------------------------------------------------------------------------------------
# Evaluation: greedy decoding, then the task's metric
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(model, tok, inputs: list[list[int]], s, device) -> list[str]:
    """Greedy answers, batched by input length (sorted, so little padding), returned in input order."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in inputs], kind="stable")
    out: list[str] = [""] * len(inputs)
    for start in range(0, len(order), s.eval_batch_size):
        chunk = order[start : start + s.eval_batch_size]
        batch = collate([(inputs[i], [0]) for i in chunk])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
            ids = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=s.targets_length,
                do_sample=False,
                num_beams=1,
                use_cache=True,
            )
        for i, text in zip(chunk, tok.batch_decode(ids, skip_special_tokens=True), strict=True):
            out[i] = text.strip()
    model.train(was_training)
    return out


def evaluate_tasks(model, tok, eval_sets: dict, s, device) -> dict[str, dict[str, float]]:
    """{task: {metric: value, ..., "score": mean}} over every dev split of every task."""
    scores = {}
    for name, splits in eval_sets.items():
        per_split = {
            split: (generate(model, tok, inputs, s, device), rows)
            for split, (rows, inputs, _) in splits.items()
        }
        scores[name] = score_splits(TASKS[name], per_split)
    return scores


# ---------------------------------------------------------------------------------------------------------
# The fine-tune
# ---------------------------------------------------------------------------------------------------------


def finetune(cfg: DictConfig, out_dir: Path) -> dict:
    """Fine-tune `cfg.run_dir`'s model on `cfg.task`; returns scores.json. Raises before training on bad input."""
    from transformers import T5ForConditionalGeneration

    s = cfg.finetune
    tasks = resolve_tasks(cfg.task)
    validate_settings(s)
    if cfg.data_dir is not None and not Path(cfg.data_dir).is_dir():
        raise DataError(f"data_dir={cfg.data_dir}: no such directory")
    run_dir = Path(cfg.run_dir).resolve()
    pretrained = check_export(run_dir)
    device = resolve_device(s, DistInfo())
    if s.num_threads > 0:
        torch.set_num_threads(s.num_threads)

    # Data first: a bad dataset fails here, before anything is trained or written.
    tok = load_hf_tokenizer(run_dir / "model" / "spiece.model")
    tokenizer_id = hashlib.sha256((run_dir / "model" / "spiece.model").read_bytes()).hexdigest()[:16]
    train_sets, eval_sets = [], {}
    for task in tasks:
        train_sets.append(encode_train(task, load_split(task, "train", cfg.data_dir), tok, s, tokenizer_id))
        eval_sets[task.name] = {
            split: encode_eval(task, load_split(task, split, cfg.data_dir), tok, s)
            for split in task.eval_splits
        }
    rates = mixture_rates([len(d) for d in train_sets], s.mixing_limit)
    # Scores on part of a dev split are pipeline checks, never comparable with the paper: say so in the record.
    truncated = any(len(rows) < total for splits in eval_sets.values() for rows, _, total in splits.values())

    seed_everything(cfg.seed)
    model = T5ForConditionalGeneration.from_pretrained(run_dir / "model", dropout_rate=s.dropout_rate)
    model.to(device)
    optimizer = make_optimizer(model, s)
    schedule = make_schedule(optimizer, s)

    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    state = {"step": 0, "wandb_id": None, "best": {}, "final": {}, "wall_s": 0.0}
    resumed = resume_newest(
        out_dir,
        resolved,
        _comparable,
        model,
        optimizer,
        schedule,
        hint="choose another name= for this fine-tune",
    )
    if resumed is not None:
        state = resumed
        print(f"resuming {out_dir} from step {state['step']}")
    # Our own copy of the config: in a -m sweep Hydra's .hydra/ is in the sweep directory, not here.
    write_text_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    figures = {
        "pretrained": pretrained,
        "train_examples": {t.name: len(d) for t, d in zip(tasks, train_sets, strict=True)},
        "mixing_rates": {t.name: float(r) for t, r in zip(tasks, rates, strict=True)},
    }
    tracker = Tracker(
        cfg,
        out_dir,
        figures,
        state,
        tags=["finetune", str(pretrained["ffn"]), *(t.name for t in tasks)],
        name=f"{pretrained['name']}/{cfg.name}",
        job_type="finetune",
        summaries={"train/loss": "last", **{f"{t.name}/score": "max,last" for t in tasks}},
    )
    state["wandb_id"] = tracker.run_id

    def checkpoint() -> None:
        payload = checkpoint_payload(model, optimizer, schedule, state, resolved)
        save_checkpoint(out_dir, f"step_{state['step']}", payload, s.keep_checkpoints)

    def write_scores(finished: bool) -> dict:
        record = {
            "name": cfg.name,
            "task": cfg.task,
            "tasks": [t.name for t in tasks],
            "run_dir": str(run_dir),
            "pretrained": pretrained,
            "ffn": pretrained["ffn"],
            "seed": pretrained["seed"],
            "finetune_seed": cfg.seed,
            "steps": state["step"],
            "max_steps": s.max_steps,
            "finished": finished,
            "eval_examples": s.eval_examples,
            "dev_truncated": truncated,
            "best": state["best"],
            "final": state["final"],
            **benchmark_averages(state["best"]),
            "wall_s": round(state["wall_s"], 3),
        }
        write_json_atomic(out_dir / "scores.json", record)
        return record

    def evaluate() -> None:
        scores = evaluate_tasks(model, tok, eval_sets, s, device)
        state["final"] = scores
        for name, metrics in scores.items():
            best = state["best"].get(name)
            if best is None or metrics["score"] > best["score"]:  # T5: the best checkpoint per task
                state["best"][name] = {**metrics, "step": state["step"]}
        tracker.log(state["step"], {f"{n}/{k}": v for n, m in scores.items() for k, v in m.items()})
        write_scores(finished=state["step"] == s.max_steps)

    model.train()
    bar = tqdm(
        total=s.max_steps, initial=state["step"], desc=f"{pretrained['name']}/{cfg.name}", mininterval=1.0
    )
    loss_sum = torch.zeros((), device=device)  # accumulated on device: one host sync per log interval
    window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
    micro = s.batch_size // s.grad_accum
    # SIGTERM (pre-emption): checkpoint at the end of this step, exit 0, resume on re-run.
    stop = StopOnSigterm()
    try:
        while state["step"] < s.max_steps:
            pairs = sample_batch(train_sets, rates, s.batch_size, cfg.seed, state["step"])
            window_tokens += sum(len(x) + len(y) for x, y in pairs)
            micro_batches = [collate(pairs[i : i + micro]) for i in range(0, len(pairs), micro)]
            loss_sum += optimizer_step(model, model, optimizer, schedule, micro_batches, s, device)
            state["step"] += 1
            window_steps += 1
            bar.update(1)
            done = state["step"] == s.max_steps
            if state["step"] % s.log_every == 0 or done:
                mean_loss = loss_sum.item() / window_steps
                elapsed = time.perf_counter() - window_start
                state["wall_s"] += elapsed
                if not math.isfinite(mean_loss):
                    tracker.finish(exit_code=EXIT_NONFINITE)
                    raise NonFiniteLossError(f"fine-tuning loss is {mean_loss} at step {state['step']}")
                tracker.log(
                    state["step"],
                    {
                        "train/loss": mean_loss,
                        "train/lr": schedule.get_last_lr()[0],
                        "train/tokens_per_s": window_tokens / elapsed,
                    },
                )
                bar.set_postfix(loss=f"{mean_loss:.3f}", refresh=False)
                loss_sum.zero_()
                window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
            if state["step"] % s.eval_every == 0 or done:
                evaluate()
            if state["step"] % s.checkpoint_every == 0 or done:
                checkpoint()
            if stop.requested and not done:
                checkpoint()
                print(f"\nSIGTERM: checkpoint saved at step {state['step']}; run the same command to resume")
                tracker.finish(exit_code=0, preempted=True)
                raise SystemExit(0)
    finally:
        bar.close()
        stop.restore()
    if not state["final"]:  # resumed a fine-tune that had already finished
        evaluate()
    record = write_scores(finished=True)
    summary = {k: v for k, v in record.items() if k.endswith(("_avg", "_em", "_f1")) and v is not None}
    summary.update({f"best/{t}/{k}": v for t, m in record["best"].items() for k, v in m.items()})
    tracker.summary(summary)
    tracker.finish(exit_code=0)
    return record


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


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    missing = [k for k in ("run_dir", "task") if OmegaConf.is_missing(cfg, k)]
    # Without run_dir=, Hydra's run directory sits under a placeholder (conf/finetune.yaml): remove all of it.
    run_dir = hydra_dir.parent.parent if missing else Path(cfg.run_dir).resolve()
    out_dir = hydra_dir if missing else run_dir / "finetune" / cfg.name
    fresh = holds_only_hydra_files(out_dir) or not out_dir.exists()

    def cleanup():
        if fresh:
            _remove_job_dirs(out_dir, run_dir)
            if holds_only_hydra_files(hydra_dir):  # a -m sweep's per-job directory
                shutil.rmtree(hydra_dir, ignore_errors=True)

    with cli_exit_codes((ConfigError, DataError, UnknownTaskError), cleanup):
        if missing:
            raise ConfigError(
                f"missing {' and '.join(f'{k}=' for k in missing)}; usage: python -m glu_study.finetune "
                f"run_dir=<a finished pretraining run> task=<{', '.join(TASKS)}; or glue, superglue, squad, all>"
            )
        print_scores(finetune(cfg, out_dir))


if __name__ == "__main__":
    main()
