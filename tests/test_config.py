"""The Hydra conf tree composes for every combination, the schema rejects mistakes, bad variants
fail before anything is written."""

from __future__ import annotations

import re
import shutil

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from glu_study.config import CONF_DIR, compose
from glu_study.errors import ConfigError
from glu_study.ffn import PAPER_VARIANTS, VARIANTS, check_variant_config
from tests.helpers import run_cli

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_model_sizes_present():
    assert MODELS == ["t5_base", "t5_micro", "t5_mini", "t5_nano", "t5_small", "t5_tiny"]
    base = compose(["model=t5_base"]).model
    assert (base.d_model, base.num_layers, base.num_decoder_layers, base.num_heads, base.d_kv, base.d_ff) == (
        768,
        12,
        12,
        12,
        64,
        3072,
    )


@pytest.mark.parametrize("model", MODELS)
def test_every_ffn_composes_with_every_model(model):
    for ffn in VARIANTS:
        cfg = compose([f"model={model}", f"ffn={ffn}"])
        assert cfg.model.name == model
        assert check_variant_config(cfg.ffn).name == ffn
        assert cfg.name == f"{ffn}-s0"


def test_defaults():
    cfg = compose([])
    assert (cfg.model.name, cfg.ffn.name, cfg.data.source, cfg.trainer.device) == (
        "t5_tiny",
        "relu",
        "embedded",
        "cpu",
    )
    assert cfg.logger.mode == "auto"


@pytest.mark.parametrize(
    "group,options",
    [
        ("data", ["embedded", "text_files", "c4"]),
        ("trainer", ["cpu", "gpu"]),
        ("logger", ["wandb", "offline", "disabled"]),
    ],
)
def test_every_group_option_composes(group, options):
    for opt in options:
        compose([f"{group}={opt}"])


def test_mistyped_key_in_yaml_fails_at_compose_time(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "trainer" / "typo.yaml").write_text("max_step: 5\n")  # max_steps, mistyped
    with pytest.raises(ConfigCompositionException) as e:
        compose(["trainer=typo"], config_dir=conf)
    assert "Key 'max_step' not in 'TrainerConfig'" in str(e.value)


def test_wrong_type_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as e:
        compose(["trainer.batch_size=big"])
    assert isinstance(e.value.__cause__, ValidationError)


def test_bad_variant_cli_exits_2_lists_names_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    r = run_cli("glu_study.train", "ffn=swigluu", f"hydra.run.dir={run_dir}")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "swigluu" in r.stderr
    for name in PAPER_VARIANTS:
        assert f" {name} " in r.stderr
    assert not run_dir.exists()


def test_edited_ffn_yaml_is_refused():
    cfg = compose(["ffn=swiglu", "ffn.activation=relu"])
    with pytest.raises(ValueError, match="registry"):
        check_variant_config(cfg.ffn)


def help_groups(command: str, cwd) -> dict[str, set[str]]:
    """The `== Configuration groups ==` section of `python -m <command> --help`, as {group: options}."""
    r = run_cli(command, "--help", cwd=cwd)
    assert r.returncode == 0, r.stderr
    section = r.stdout.split("== Configuration groups", 1)[1].split("\n", 1)[1].split("== Config ==", 1)[0]
    lines = [line.split(": ", 1) for line in section.splitlines() if ": " in line]
    return {group: set(options.split(", ")) for group, options in lines}


@pytest.mark.slow
def test_each_command_lists_only_the_groups_it_can_use(tmp_path):
    # From another directory: the fine-tuning tree finds the shared logger group by an absolute search path.
    train = help_groups("glu_study.train", tmp_path)
    assert set(train) == {"data", "experiment", "ffn", "logger", "model", "trainer"}
    assert "table2_paper" not in train["experiment"] and "table1_cpu" in train["experiment"]
    finetune = help_groups("glu_study.finetune", tmp_path)
    assert finetune == {"experiment": {"table2_paper"}, "finetune": {"cpu", "paper"}}
    shared = compose(["run_dir=x", "task=rte", "logger=offline"], config_name="finetune")
    assert shared.logger.mode == "offline"


@pytest.mark.parametrize(
    ("group", "override", "fragment"),
    [
        ("trainer", "trainer.warmup_steps=-1", "trainer.warmup_steps must be >= 0"),
        ("trainer", "trainer.weight_decay=-0.1", "trainer.weight_decay must be >= 0"),
        ("trainer", "trainer.grad_clip=-1", "trainer.grad_clip must be >= 0"),
        ("trainer", "trainer.log_every=0", "trainer.log_every must be >= 1"),
        ("trainer", "trainer.lr=0", "trainer.lr must be > 0.0"),
        ("data", "data.val_examples=0", "data.val_examples must be >= 1"),
        ("data", "data.heldout_percent=100", "data.heldout_percent must be < 100"),
        ("data", "data.vocab_size=0", "data.vocab_size must be >= 1"),
        ("model", "model.layer_norm_epsilon=0", "model.layer_norm_epsilon must be > 0.0"),
        ("logger", "logger.timeout_s=0", "logger.timeout_s must be > 0.0"),
    ],
)
def test_every_numeric_setting_has_its_range_checked(group, override, fragment):
    """What preflight refuses (the CLI path itself is tested for a few of these in tests/training)."""
    from glu_study.config import check_data, check_logger, check_model, check_trainer

    check = {"trainer": check_trainer, "data": check_data, "model": check_model, "logger": check_logger}
    cfg = compose([override])
    for name, fn in check.items():
        if name != group:
            fn(cfg[name])  # the other groups stay valid
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        check[group](cfg[group])


def test_finetune_settings_share_the_loop_settings_and_their_ranges():
    from glu_study.config import FinetuneSettings, LoopSettings, TrainerConfig, check_finetune

    assert issubclass(TrainerConfig, LoopSettings) and issubclass(FinetuneSettings, LoopSettings)
    cfg = compose(["run_dir=/nowhere", "task=rte", "finetune.lr=-1"], config_name="finetune")
    with pytest.raises(ConfigError, match=re.escape("finetune.lr must be > 0.0")):
        check_finetune(cfg.finetune)
