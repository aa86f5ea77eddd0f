"""The configuration: structured schemas for the Hydra trees (conf/, conf_finetune/), composing them, and checks.

Each group's YAML is merged into one of these dataclasses at compose time, so a mistyped key
(`trainer.max_step=5`) or a wrong type (`trainer.batch_size=big`) fails before anything runs. What a type cannot
say (a choice among names, a count that must be positive, a rate that must not be negative) is checked by the
`check_*` functions below, in each command's preflight, before a run builds or writes anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from glu_study.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent  # the repository: conf/ and the committed reports/
CONF_DIR = ROOT / "conf"  # pretraining (`python -m glu_study.train`)
# Fine-tuning has its own tree, so `train --help` lists only what train can use; it reads the shared groups
# (logger, hydra/launcher) from conf/ through `hydra.searchpath`, which needs an absolute path: Hydra resolves a
# relative file:// path against the current directory, not the config file.
FINETUNE_CONF_DIR = ROOT / "conf_finetune"
OmegaConf.register_new_resolver("glu_study.conf_dir", lambda: CONF_DIR.as_posix(), replace=True)
# `${glu_study.every:${trainer.max_steps},10}`: an interval that gives every budget of a sweep the same number of
# evaluations (max_steps // 10, at least 1), so presets that sweep max_steps need no arithmetic by hand.
OmegaConf.register_new_resolver("glu_study.every", lambda steps, points: max(int(steps) // int(points), 1))


def steps_for_ratio(ratio, *, _root_) -> int:
    """`trainer.max_steps: ${glu_study.steps_for_ratio:26.5}`: the steps that show `ratio` tokens per
    non-embedding parameter to this config's model at its batch and lengths (the paper's 65k column is ~26.5).
    Counted for the baseline FFN_ReLU, so every variant of a sweep trains as long (compute-matched variants are
    within 0.5% of its parameters)."""
    from glu_study.data.spans import compute_input_and_target_lengths
    from glu_study.ffn import get_variant
    from glu_study.model import param_counts

    d = _root_.data
    _, targets = compute_input_and_target_lengths(d.inputs_length, d.noise_density, d.mean_noise_span_length)
    non_embedding = param_counts(_root_.model, get_variant("relu"), 1, d.inputs_length, targets)[
        "non_embedding_params"
    ]
    return round(float(ratio) * non_embedding / (_root_.trainer.batch_size * (d.inputs_length + targets)))


OmegaConf.register_new_resolver("glu_study.steps_for_ratio", steps_for_ratio, replace=True)


@dataclass
class ModelConfig:
    name: str = MISSING
    d_model: int = MISSING
    num_layers: int = MISSING
    num_decoder_layers: int = MISSING
    num_heads: int = MISSING
    d_kv: int = MISSING
    d_ff: int = MISSING  # the *non-gated* d_ff; gated variants use 2/3 of it (glu_study.ffn.gated_d_ff)
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dropout_rate: float = 0.0  # the paper pretrains without dropout
    initializer_factor: float = 1.0


def load_model_sizes() -> dict[str, ModelConfig]:
    """The model sizes of conf/model/*.yaml, validated against the schema (one source of truth)."""
    sizes = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        node = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
        sizes[path.stem] = OmegaConf.to_object(node)
    return sizes


MODEL_SIZES: dict[str, ModelConfig] = load_model_sizes()


@dataclass
class FFNConfig:
    name: str = MISSING
    paper_name: str = MISSING
    activation: str | None = MISSING  # transformers ACT2FN key, or package.module:function (ffn=custom)
    gated: bool = MISSING
    gelu: str | None = None  # "tanh approximation" | "exact erf" for GELU-based variants
    module: str | None = None  # a whole FFN block's class, package.module:Class (Maxout; ffn=custom)
    matrices: int = 0  # the block's d_model x d_ff matrices (0: 3 if gated, else 2): compute matching follows


@dataclass
class DataConfig:
    source: str = MISSING  # embedded | text_files | c4
    inputs_length: int = 512
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    vocab_size: int = 32000  # SentencePiece pieces; 100 sentinels are added on top (T5: 32000 + 100)
    extra_ids: int = 100
    eval_examples: int = 64  # size of the fixed held-out test set (the reported figure), in examples
    # the validation set, disjoint from the test set: every choice is made on it
    val_examples: int = 64
    max_epochs: float = (
        1.0  # passes over the training chunks a run may make (refused before it starts beyond)
    )
    eval_seed: int = 20200212  # masks of the held-out set: fixed per experiment, independent of `seed`
    cache_dir: str = MISSING
    # embedded corpus
    include_stdlib: bool = True
    packages: list[str] = field(default_factory=list)
    heldout_percent: float = 5.0  # share of *source files* whose paragraphs form the held-out split
    min_paragraph_chars: int = 40
    # text_files
    paths: list[str] = field(default_factory=list)
    heldout_paths: list[str] = field(default_factory=list)  # empty: split by file hash like embedded
    text_field: str = "text"
    # c4 (streamed from the hub; dataset_path/data_files let tests run the same loader on local files)
    dataset_path: str = "allenai/c4"
    dataset_name: str | None = "en"
    data_files: dict[str, Any] = field(default_factory=dict)  # e.g. {train: a.json, validation: b.json}
    max_train_documents: int = 200_000
    max_heldout_documents: int = 5_000
    # tokenizer: an existing SentencePiece model used as is (e.g. T5's published spiece.model), else one trained
    tokenizer_path: str | None = None
    tokenizer_max_sentences: int = 300_000
    tokenizer_threads: int = 2
    num_proc: int = 0  # processes that tokenise the corpus (0: the CPUs this process may use)


@dataclass
class LoopSettings:
    """What both training loops (pretraining's `trainer.*`, fine-tuning's `finetune.*`) are configured by: the
    optimizer step (glu_study.training.optim) and the shared loop (glu_study.training.loop)."""

    max_steps: int = 1000
    batch_size: int = 32  # per optimizer step, across all ranks and accumulation micro-steps
    grad_accum: int = 1
    optimizer: str = (
        "adafactor"  # adafactor (transformers') | adafactor_device (the same, no host syncs) | adamw
    )
    lr: float = 1.0  # multiplies the schedule; rsqrt with lr 1.0 gives T5's 0.01 plateau at 10k warmup
    schedule: str = "rsqrt"  # rsqrt | cosine | constant
    warmup_steps: int = 10_000
    decay_fraction: float = 0.1  # rsqrt: linear decay to 0 over this final share of steps
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 disables; Adafactor already clips its *update* at RMS 1.0
    eval_every: int = 100
    # A closer look at one stretch (experiment=fall_probe): from step `eval_dense_from` on, also evaluate every
    # `eval_dense_every` steps; 0 in either turns it off.
    eval_dense_from: int = 0
    eval_dense_every: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default


@dataclass
class TrainerConfig(LoopSettings):
    compile: bool = False  # torch.compile the forward pass (trainer=gpu); numerics differ from eager at ~1e-6
    # Worker processes that build the next steps' batches while the current one runs (glu_study.data.loader);
    # 0 builds them in the training process. The batches are the same either way.
    loader_workers: int = 0
    # torchrun: how long a rank waits in a collective for the others. Ranks prepare their data before the first
    # collective (one builds, the others wait on the cache's lock), so this need not cover a cold build, but a
    # generous value keeps a slow shared file system from failing a job.
    dist_timeout_min: int = 60


@dataclass
class LoggerConfig:
    mode: str = "auto"  # auto (online iff a W&B key is configured) | online | offline | disabled
    project: str = "glu-study"
    entity: str | None = None
    group: str = "dev"
    tags: list[str] = field(default_factory=list)
    timeout_s: float = (
        5.0  # how long mode=auto/online waits for the W&B server before deciding it is unreachable
    )


@dataclass
class ChallengerConfig:
    """Your own FFN for a one-command comparison (experiment=compare_cpu): conf/ffn/custom.yaml reads it, so a
    sweep over ffn=relu,swiglu,custom gives only the custom job these settings."""

    name: str = "custom"
    paper_name: str = "FFN_custom"
    activation: str | None = None  # package.module:function, an element-wise activation
    gated: bool = False  # (act(x W) * x V) W2 instead of act(x W1) W2
    module: str | None = None  # package.module:Class, a whole FFN block taking a T5Config
    matrices: int = 0  # the block's matrices: 2 (wi, wo) or 3 (wi_0, wi_1, wo)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    ffn: FFNConfig = field(default_factory=FFNConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    challenger: ChallengerConfig = field(default_factory=ChallengerConfig)
    seed: int = 0
    name: str = "${ffn.name}-s${seed}"
    # The kind of study a preset's runs make up (table1, lr_check, fall_probe, ...): recorded in every run's
    # config, so that a report knows what its runs are for; None for a run outside a study.
    study: str | None = None


@dataclass
class FinetuneSettings(LoopSettings):
    """conf_finetune/finetune/*.yaml: how a pretrained run is fine-tuned (the paper: Adafactor, constant 1e-3,
    dropout 0.1). The loop settings are LoopSettings'; only their defaults differ here."""

    lr: float = 1e-3
    schedule: str = "constant"  # constant | rsqrt | cosine
    warmup_steps: int = 0
    decay_fraction: float = 0.0
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 1
    inputs_length: int = 512  # longer inputs are truncated (T5 does the same)
    targets_length: int = 128  # training targets are truncated to this; generation stops here
    dropout_rate: float = 0.1  # on during fine-tuning, as in T5 (pretraining used none)
    mixing_limit: int = 524_288  # examples-proportional mixing: a task's rate is min(its size, this)
    max_train_examples: int = 0  # 0: every training example; else a fixed random subset of each task
    eval_examples: int = 0  # 0: the whole dev split; else its first N rows (quick checks, not comparable)
    eval_batch_size: int = 64


@dataclass
class FinetuneConfig:
    """conf_finetune/finetune.yaml: `python -m glu_study.finetune run_dir=DIR task=NAME`."""

    run_dir: str = MISSING  # a pretraining run directory holding model/ (the Hugging Face export)
    task: str = (
        MISSING  # a task (rte, squad, ...), a mixture (glue, superglue, squad, all) or several joined by +
    )
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # null: the hub (nyu-mll/glue, aps/super_glue, rajpurkar/squad). A directory: local copies in the hub's
    # schema, <data_dir>/<task>/<split>.jsonl (or .json/.parquet/.csv), read through the same loader.
    data_dir: str | None = None
    # Every cache under one root, as pretraining's data.cache_dir: datasets' downloads and tokenised tasks.
    cache_dir: str = "${oc.env:GLU_STUDY_CACHE,${oc.env:HOME}/.cache/glu_study}"
    seed: int = 0
    name: str = "${oc.select:task,unnamed}"


# config.yaml lists `config_schema` first in its defaults, so every group is merged into these types;
# finetune.yaml does the same with `finetune_schema`.
ConfigStore.instance().store(name="config_schema", node=Config)
ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)


def compose(
    overrides: list[str] | None = None,
    config_name: str = "config",
    config_dir: Path | None = None,
    *,
    with_hydra: bool = False,
):
    """Compose the real conf tree outside a Hydra app (tests, scripts); `finetune` reads conf_finetune/.
    `with_hydra` keeps the `hydra` node (a preset's sweep is `hydra.sweeper.params`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if config_dir is None:
        config_dir = FINETUNE_CONF_DIR if config_name == "finetune" else CONF_DIR
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose(
            config_name=config_name, overrides=overrides or [], return_hydra_config=with_hydra
        )


# ---------------------------------------------------------------------------------------------------------
# Setting checks: what the schemas' types cannot express
# ---------------------------------------------------------------------------------------------------------

# The choices the training loop understands; pretraining (`trainer.*`) and fine-tuning (`finetune.*`) share them.
SETTING_CHOICES = {
    "precision": ("fp32", "bf16"),
    "optimizer": ("adafactor", "adafactor_device", "adamw"),
    "schedule": ("rsqrt", "cosine", "constant"),
    "device": ("auto", "cpu", "cuda"),
}
# Ranges of the loop settings both commands share: (lowest value, whether the lowest value itself is allowed).
LOOP_RANGES = {
    **dict.fromkeys(("max_steps", "batch_size", "grad_accum", "eval_every", "checkpoint_every"), (1, True)),
    **dict.fromkeys(("keep_checkpoints", "log_every"), (1, True)),
    "lr": (0.0, False),
    **dict.fromkeys(("warmup_steps", "weight_decay", "grad_clip", "num_threads"), (0, True)),
    **dict.fromkeys(("eval_dense_from", "eval_dense_every"), (0, True)),
}
FINETUNE_RANGES = {
    **dict.fromkeys(("inputs_length", "targets_length", "eval_batch_size", "mixing_limit"), (1, True)),
    **dict.fromkeys(("max_train_examples", "eval_examples"), (0, True)),
}
DATA_RANGES = {
    **dict.fromkeys(("inputs_length", "vocab_size", "extra_ids", "eval_examples", "val_examples"), (1, True)),
    **dict.fromkeys(("max_train_documents", "max_heldout_documents", "tokenizer_max_sentences"), (1, True)),
    "tokenizer_threads": (1, True),
    "num_proc": (0, True),
    "eval_seed": (0, True),
    "min_paragraph_chars": (0, True),
    "heldout_percent": (0.0, False),
    "max_epochs": (0.0, False),
}


def check_ranges(settings, group: str, ranges: dict) -> None:
    """One ConfigError for the first number of the group that is not finite (`trainer.lr=nan` would otherwise
    train until the loss is NaN), then for the first setting below its range: `group.key must be >= low` (or
    `> low`)."""
    for key, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{group}.{key} must be a finite number, got {value}")
    for key, (low, inclusive) in ranges.items():
        value = settings[key]
        if value < low or (value == low and not inclusive):
            raise ConfigError(f"{group}.{key} must be {'>=' if inclusive else '>'} {low}, got {value}")


def check_settings(settings, group: str, extra_ranges: dict | None = None) -> None:
    """One ConfigError for the first bad choice, setting out of range or decay fraction outside [0, 1]."""
    for key, valid in SETTING_CHOICES.items():
        if settings[key] not in valid:
            raise ConfigError(f"{group}.{key}={settings[key]!r} is not one of {', '.join(valid)}")
    check_ranges(settings, group, {**LOOP_RANGES, **(extra_ranges or {})})
    if not 0.0 <= settings.decay_fraction <= 1.0:
        raise ConfigError(f"{group}.decay_fraction must be in [0, 1], got {settings.decay_fraction}")


SEED_RANGE = (0, 2**32 - 1)  # what numpy's and torch's generators take


def check_seed(seed: int) -> None:
    low, high = SEED_RANGE
    if not low <= seed <= high:
        raise ConfigError(f"seed must be in {low} ... {high}, got {seed}")


LOGGER_MODES = ("auto", "online", "offline", "disabled")
MODEL_COUNTS = ("d_model", "num_layers", "num_decoder_layers", "num_heads", "d_kv", "d_ff")
MODEL_COUNTS += ("relative_attention_num_buckets", "relative_attention_max_distance")


def check_model(model) -> None:
    """Model sizes transformers would only reject deep inside T5's constructor (or not at all)."""
    check_ranges(model, "model", dict.fromkeys(MODEL_COUNTS, (1, True)))
    if not 0.0 <= model.dropout_rate < 1.0:
        raise ConfigError(f"model.dropout_rate must be in [0, 1), got {model.dropout_rate}")
    check_ranges(model, "model", {"layer_norm_epsilon": (0.0, False), "initializer_factor": (0.0, False)})


def check_logger(logger) -> None:
    if logger.mode not in LOGGER_MODES:
        raise ConfigError(f"logger.mode={logger.mode!r} is not one of {', '.join(LOGGER_MODES)}")
    check_ranges(logger, "logger", {"timeout_s": (0.0, False)})


def check_trainer(trainer) -> None:
    check_settings(trainer, "trainer", {"dist_timeout_min": (1, True), "loader_workers": (0, True)})


def check_data(data) -> None:
    """Data settings a type cannot check; the span settings themselves are checked by glu_study.data.spans."""
    check_ranges(data, "data", DATA_RANGES)
    if data.heldout_percent >= 100:
        raise ConfigError(f"data.heldout_percent must be < 100, got {data.heldout_percent}")


def check_finetune(settings) -> None:
    check_settings(settings, "finetune", FINETUNE_RANGES)
    if settings.batch_size % settings.grad_accum:
        raise ConfigError(
            f"finetune.batch_size={settings.batch_size} is not divisible by grad_accum={settings.grad_accum}"
        )
    if not 0.0 <= settings.dropout_rate < 1.0:
        raise ConfigError(f"finetune.dropout_rate must be in [0, 1), got {settings.dropout_rate}")
