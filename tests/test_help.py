"""Every command's --help says what the command does and shows an example, and exits 0 (through the CLI)."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli

COMMANDS = {
    "glu_study.train": ("pretrain one T5", "python -m glu_study.train ffn=swiglu"),
    "glu_study.finetune": ("fine-tune a pretrained run", "python -m glu_study.finetune run_dir="),
    "glu_study.evaluate": ("Held-out log-perplexity of a run's latest checkpoint", "example: python -m"),
    "glu_study.prepare": ("Build the data a run needs", "example: python -m glu_study.prepare"),
    "glu_study.report": ("Turn pretraining runs into", "example: python -m glu_study.report"),
    "glu_study.gallery": ("Activation and gated-unit figures", "example: python -m glu_study.gallery"),
    "glu_study.mlp": ("comparison of the FFN variants", "example: python -m glu_study.mlp"),
    "glu_study.ffn": ("Compute-matching table", "example: python -m glu_study.ffn"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_says_what_the_command_does_and_exits_0(command):
    r = run_cli(command, "--help", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    for fragment in COMMANDS[command]:
        assert fragment in r.stdout, (command, fragment, r.stdout[:400])
