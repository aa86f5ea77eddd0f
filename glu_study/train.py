"""Pretrain one T5 with a chosen FFN variant on span corruption: `python -m glu_study.train ffn=swiglu`.

Read top to bottom in `train()`: check the settings -> build data and model -> resume from the newest complete
checkpoint if the run directory has one -> the untrained model's held-out figure -> the shared step loop
(glu_study.training.loop: log, evaluate held-out log-perplexity every `eval_every`, checkpoint every
`checkpoint_every`, SIGTERM or SIGUSR2) -> final evaluation, Hugging Face export in <run_dir>/model, summary.json.

Resume is exact: the model, optimizer, schedule, RNG states and the data position (a single example counter, see
glu_study.data.PretrainData) are all in the checkpoint, and nothing else carries state, so a killed-and-resumed
run computes bit-for-bit the same weights on CPU as an uninterrupted one.

Distributed data parallel (torchrun) shares the loop: each rank computes its slice of every global batch, and
only rank 0 writes files and talks to W&B.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from glu_study.cli import check_overrides, guarded
from glu_study.code_version import code_version
from glu_study.config import check_data, check_model, check_trainer
from glu_study.data import PretrainData
from glu_study.data.loader import StepBatches, step_loader
from glu_study.errors import ConfigError, DataError
from glu_study.ffn import Variant, check_variant_config
from glu_study.model import build_model, count_parameters, param_counts
from glu_study.training import run_dir as records
from glu_study.training.checkpoints import Checkpointer, list_checkpoints
from glu_study.training.distributed import DistInfo, finish_distributed, launched_rank, setup_distributed
from glu_study.training.heldout import TEST_METRIC, VAL_METRIC, heldout_figures
from glu_study.training.loop import TrainLoop, device_kind, seed_everything, setup_device
from glu_study.training.optim import make_optimizer, make_schedule, optimizer_step
from glu_study.training.preflight import check_run
from glu_study.training.state import PretrainState
from glu_study.training.tracking import Tracker


def per_rank_batch(trainer, info: DistInfo) -> int:
    per_rank, rem = divmod(trainer.batch_size, info.world_size * trainer.grad_accum)
    if rem:
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} is not divisible by ranks x grad_accum = "
            f"{info.world_size} x {trainer.grad_accum}"
        )
    return per_rank


RESUME_HINT = "choose another hydra.run.dir (or the same overrides as before) to resume"


def preflight(cfg: DictConfig, run_dir: Path, info: DistInfo) -> tuple[Variant, str]:
    """Every check the config allows, before anything is built or written: the variant, model and data
    settings, then what every command checks (glu_study.training.preflight: the trainer's settings, the W&B mode
    and server, and that the run directory holds no differently configured run)."""
    variant = check_variant_config(cfg.ffn)
    check_model(cfg.model)
    check_data(cfg.data)
    mode = check_run(cfg, check_trainer, cfg.trainer, run_dir, RESUME_HINT, is_main=info.is_main)
    per_rank_batch(cfg.trainer, info)
    return variant, mode


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """One pretraining run in `run_dir`; returns the summary. Raises before writing anything on bad input."""
    trainer = cfg.trainer
    kind = device_kind(trainer)
    info = setup_distributed(kind, trainer.dist_timeout_min)
    variant, mode = preflight(cfg, run_dir, info)
    device = setup_device(kind, trainer, info)
    per_rank = per_rank_batch(trainer, info)
    log = print if info.is_main else (lambda *a, **k: None)

    seed_everything(cfg.seed)
    data = PretrainData(cfg.data, log=log)
    check_passes(data, trainer)
    model = build_model(cfg.model, variant, data.vocab_size, cfg.seed)
    derived = derived_figures(cfg, variant, data, model)
    model.to(device)
    optimizer = make_optimizer(model, trainer)
    schedule = make_schedule(optimizer, trainer)

    run_dir.mkdir(parents=True, exist_ok=True)
    state = PretrainState()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    read = {k: derived[k] for k in ("corpus_fingerprint", "tokenizer_fingerprint")}  # what this machine built
    checkpointer = Checkpointer(
        run_dir, model, optimizer, schedule, state, resolved, data=read, enabled=info.is_main
    )
    resumed = checkpointer.resume(RESUME_HINT, log=log)
    if resumed:
        log(f"resuming {run_dir} from step {state.step}")
    if info.is_main:
        records.save_config(run_dir, cfg, records.HYDRA_CONFIG)
        records.keep_metrics_until(run_dir, state.step if resumed else -1)  # events after it come again
    tags = ["gated" if variant.is_gated_act else "non-gated", cfg.model.name]
    tracker = Tracker(cfg, run_dir, derived, state, tags=tags, enabled=info.is_main, mode=mode)
    state.wandb_id = tracker.run_id

    def evaluate() -> float | None:
        if not info.is_main:
            return None
        figures = heldout_figures(model, data, device, trainer.precision, per_rank * trainer.grad_accum)
        state.record_eval(figures)
        tracker.log(state.step, figures)
        return state.last_eval

    fwd = forward_module(model, device, info, compile=trainer.compile)
    tokens_per_step = trainer.batch_size * (data.info.inputs_length + data.targets_length)
    upcoming = iter(batches_from(data, state, cfg, per_rank, info, pin_memory=device.type == "cuda"))

    def train_step() -> tuple[torch.Tensor, int]:
        position, micro_batches = next(upcoming)
        assert position == state.data_position, (position, state.data_position)  # the loader keeps step
        state.data_position += trainer.batch_size
        loss = optimizer_step(fwd, model, optimizer, schedule, micro_batches, trainer, device)
        return loss, tokens_per_step

    if state.step == 0:
        evaluate()  # the untrained model's figure: the first point of every curve
    model.train()
    loop = TrainLoop(trainer, state, checkpointer, tracker, schedule, device=device, desc=cfg.name, info=info)
    loop.run(train_step, evaluate)  # a finished run re-run takes no step: it re-reports its recorded figures
    summary = run_summary(cfg, variant, derived, state, data, info)
    if info.is_main:
        publish(run_dir, model, data, tracker, summary)
    finish_distributed(info)
    return summary


def batches_from(data: PretrainData, state: PretrainState, cfg, per_rank: int, info: DistInfo, *, pin_memory):
    """This rank's batches of the remaining steps, built ahead by `trainer.loader_workers` processes."""
    t = cfg.trainer
    batches = StepBatches(data, cfg.seed, per_rank, t.grad_accum, info.world_size, info.rank)
    remaining = t.max_steps - state.step
    return step_loader(
        batches, state.data_position, remaining, t.batch_size, workers=t.loader_workers, pin_memory=pin_memory
    )


def check_passes(data: PretrainData, trainer) -> None:
    """Refuse, before anything is written, a run that would pass over its training chunks more than
    `data.max_epochs` times (the paper never repeats C4); the message says what the budget needs."""
    planned = data.data_epochs(trainer.max_steps * trainer.batch_size)
    limit = data.cfg.max_epochs
    if planned > limit:
        raise DataError(
            f"{trainer.max_steps:,} steps of {trainer.batch_size} examples would pass over the "
            f"{data.info.train_examples:,} training chunks {planned:.2f} times (data.max_epochs={limit:g}): the "
            f"budget needs {planned / limit:.2f}x the training text (about {data.documents_for(planned / limit):,} "
            "documents), or raise data.max_epochs"
        )


def publish(run_dir: Path, model, data: PretrainData, tracker: Tracker, summary: dict) -> None:
    """A finished run's records: the Hugging Face export, summary.json, the W&B summary."""
    records.export_model(model, data.info.spiece_model, run_dir)
    records.write_summary(run_dir, summary)
    tracker.summary(summary)
    tracker.finish(exit_code=0)
    figure, step = summary["eval/log_perplexity"], summary["steps"]
    print(f"final held-out log-perplexity ({summary['name']}, step {step}): {figure:.4f}")
    print(next_steps(run_dir, summary, tracker.mode))


def next_steps(run_dir: Path, summary: dict, mode: str) -> str:
    """What a newcomer needs after the bare figure: what it compares with, and where to look next — as commands
    that run as printed from a fresh shell (this environment's own python and wandb, no activated venv)."""
    floor, val = summary["eval/unigram_floor"], summary["val/log_perplexity"]
    python, wandb = (
        environment_command(sys.executable),
        environment_command(Path(sys.executable).parent / "wandb"),
    )
    lines = [
        f"  unigram floor of the held-out set {floor:.4f} (a model that learned only token frequencies); "
        f"validation set {val:.4f}; {summary['tokens_per_param']:g} tokens seen per non-embedding parameter",
        f"  run directory: {run_dir}",
        f"  report:        {python} -m glu_study.report {run_dir}   (writes {run_dir / 'report'})",
    ]
    if mode in ("offline", "online"):
        lines.append(f"  W&B run:       {wandb} leet {run_dir / 'wandb'}")
    if mode == "offline":
        lines.append(f"  upload later:  {wandb} sync {run_dir / 'wandb'}/offline-run-*")
    return "\n".join(lines)


def environment_command(path: str | Path) -> str:
    """An executable of this environment as a shell in the current directory can run it: relative when it lies
    below it (.venv/bin/python), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def forward_module(model, device: torch.device, info: DistInfo, *, compile: bool):
    """What runs the forward pass: the model, wrapped for DDP under torchrun, compiled if asked."""
    fwd = model
    if info.world_size > 1:
        fwd = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(fwd) if compile else fwd


def derived_figures(cfg, variant: Variant, data: PretrainData, model) -> dict:
    """Figures derived from the config (W&B's `derived`): counts, shapes and the data's sizes."""
    counted = count_parameters(model)
    shapes = param_counts(cfg.model, variant, data.vocab_size, data.info.inputs_length, data.targets_length)
    assert counted["params"] == shapes["params"], (counted, shapes)  # our arithmetic describes this model
    return {
        "params": counted["params"],
        "non_embedding_params": counted["non_embedding_params"],
        "d_ff": shapes["d_ff"],
        "feed_forward_proj": variant.feed_forward_proj,
        "gated": variant.is_gated_act,
        "flops_per_input_token": shapes["flops_per_input_token"],
        "flops_per_target_token": shapes["flops_per_target_token"],
        "vocab_size": data.vocab_size,
        "raw_length": data.raw_length,
        "targets_length": data.targets_length,
        "train_tokens": data.info.train_tokens,
        "train_examples": data.info.train_examples,
        "unigram_floor": data.unigram_floor(),
        "test_ngram_overlap": data.test_overlap(),
        "corpus_fingerprint": data.info.corpus_fingerprint,
        "corpus_sources": data.info.corpus_sources,
        "tokenizer_fingerprint": data.info.tokenizer_fingerprint,
        **code_version(),
    }


def run_summary(
    cfg, variant: Variant, derived: dict, state: PretrainState, data: PretrainData, info: DistInfo
) -> dict:
    tokens_per_example = data.info.inputs_length + data.targets_length
    tokens_seen = state.data_position * tokens_per_example
    return {
        "name": cfg.name,
        "ffn": variant.name,
        "seed": cfg.seed,
        "model": cfg.model.name,
        "params": derived["params"],
        "non_embedding_params": derived["non_embedding_params"],
        "d_ff": derived["d_ff"],
        "steps": state.step,
        "tokens_seen": tokens_seen,
        # The regime: the paper's 65k-step column is ~26.5 tokens per non-embedding parameter.
        "tokens_per_param": round(tokens_seen / derived["non_embedding_params"], 4),
        "data_epochs": round(data.data_epochs(state.data_position), 4),
        TEST_METRIC: state.last_eval,
        "eval/best_log_perplexity": state.best_eval,
        VAL_METRIC: state.last_val,
        # the latest evaluation's copyable / novel split of both sets (glu_study.training.heldout)
        **{k: v for k, v in state.last_figures.items() if k not in (TEST_METRIC, VAL_METRIC)},
        "eval/unigram_floor": derived["unigram_floor"],
        # Leakage: the share of the test set's 8-token windows that occur in the training split.
        "eval/test_ngram_overlap": round(derived["test_ngram_overlap"], 4),
        "corpus_fingerprint": derived["corpus_fingerprint"],
        "corpus_sources": derived["corpus_sources"],
        "tokenizer_fingerprint": derived["tokenizer_fingerprint"],
        "code_commit": derived["code_commit"],  # the code that ran (glu_study.code_version)
        "code_clean": derived["code_clean"],
        "train/tokens_per_s": state.tokens_per_s,
        "wall_s": round(state.wall_s, 3),
        "world_size": info.world_size,
        "precision": cfg.trainer.precision,
    }


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """The command: one writer per run directory; bad input removes what this invocation created, nothing else."""
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    main_rank = launched_rank() == 0
    fresh = main_rank and records.holds_only_hydra_files(run_dir)  # before our lock file exists

    def cleanup() -> None:
        # only what this invocation created, and never a checkpoint (a fault mid-run keeps the run resumable)
        if fresh and not list_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)

    def body() -> float:
        with records.one_writer(run_dir) if main_rank else contextlib.nullcontext():
            return train(cfg, run_dir)["eval/log_perplexity"]

    return guarded(body, cleanup)


if __name__ == "__main__":
    check_overrides("config", sys.argv[1:])
    main()
