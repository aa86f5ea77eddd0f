"""Variants from outside the package: Maxout (a whole block), your own activation or block by import path, and the
README's example run through the CLI."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap

import pytest
import torch
from transformers import T5ForConditionalGeneration

from glu_study.config import MODEL_SIZES, compose
from glu_study.errors import ConfigError
from glu_study.ffn import BUILT_IN_VARIANTS, VARIANTS, check_variant_config, get_variant
from glu_study.model import build_model, from_pretrained, param_counts
from tests.helpers import ROOT, TINY, run_cli

SIZE = MODEL_SIZES["t5_nano"]
VOCAB = 300


@pytest.fixture(autouse=True)
def registry():
    """Custom variants register themselves in the process's registry: put it back as shipped afterwards."""
    saved = dict(VARIANTS)
    yield
    VARIANTS.clear()
    VARIANTS.update(saved)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module outside the package, importable as `my_ffn`."""
    (tmp_path / "my_ffn.py").write_text(
        textwrap.dedent(
            """
            import torch

            def cube_relu(x):
                return torch.relu(x) ** 3

            def shrink(x):
                return x[..., :1]

            not_callable = 3

            class MinBlock(torch.nn.Module):
                def __init__(self, config):
                    super().__init__()
                    self.wi_0 = torch.nn.Linear(config.d_model, config.d_ff, bias=False)
                    self.wi_1 = torch.nn.Linear(config.d_model, config.d_ff, bias=False)
                    self.wo = torch.nn.Linear(config.d_ff, config.d_model, bias=False)

                def forward(self, x):
                    return self.wo(torch.minimum(self.wi_0(x), self.wi_1(x)))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_ffn", None)
    yield tmp_path
    sys.modules.pop("my_ffn", None)  # the README's example is a different my_ffn


def ffn(*overrides):
    return check_variant_config(compose(["ffn=custom", *overrides]).ffn)


def block_of(model):
    return model.decoder.block[1].layer[2].DenseReluDense


def test_maxout_block_equals_the_formula_and_matches_compute():
    v = get_variant("maxout")
    block = block_of(build_model(SIZE, v, VOCAB, seed=1))
    x = torch.randn(2, 5, SIZE.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = torch.maximum(x @ block.wi_0.weight.T, x @ block.wi_1.weight.T) @ block.wo.weight.T
        torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-6)
    for size in MODEL_SIZES.values():  # three matrices, d_ff x 2/3: parity < 0.5% at every size
        ref = param_counts(size, get_variant("relu"), 32100)["non_embedding_params"]
        assert abs(param_counts(size, v, 32100)["non_embedding_params"] / ref - 1) < 0.005
    # built as the gated block, so the same seed gives Maxout and SwiGLU the same initial matrices
    swiglu = block_of(build_model(SIZE, get_variant("swiglu"), VOCAB, seed=1))
    assert torch.equal(block.wi_0.weight, block_of(build_model(SIZE, v, VOCAB, seed=1)).wi_0.weight)
    assert block.wi_0.weight.shape == swiglu.wi_0.weight.shape


def round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    ids, labels = torch.randint(3, VOCAB, (2, 9)), torch.randint(3, VOCAB, (2, 4))
    with torch.no_grad():
        want = model.eval()(input_ids=ids, labels=labels).logits
        got = from_pretrained(tmp_path).eval()(input_ids=ids, labels=labels).logits
    assert torch.equal(want, got)
    return json.loads((tmp_path / "config.json").read_text())


def test_maxout_export_round_trip_and_plain_transformers_refuses_it(tmp_path):
    config = round_trip(build_model(SIZE, get_variant("maxout"), VOCAB, seed=0), tmp_path)
    assert config["glu_study_ffn"]["name"] == "maxout"
    with pytest.raises(ImportError, match=re.escape("glu_study.model.from_pretrained(path)")):
        T5ForConditionalGeneration.from_pretrained(tmp_path)


def test_builtin_exports_still_load_with_plain_transformers(tmp_path):
    model = build_model(SIZE, get_variant("swiglu"), VOCAB, seed=0)
    round_trip(model, tmp_path)
    assert T5ForConditionalGeneration.from_pretrained(tmp_path).config.feed_forward_proj == "gated-silu"


def test_custom_activation_gated_and_not_equals_the_formula(user_module, tmp_path):
    for gated in (True, False):
        v = ffn("ffn.activation=my_ffn:cube_relu", f"ffn.gated={str(gated).lower()}", "ffn.name=cube")
        assert v.d_ff(240) == (160 if gated else 240)
        block = block_of(build_model(SIZE, v, VOCAB, seed=0))
        x = torch.randn(2, 3, SIZE.d_model)
        with torch.no_grad():
            if gated:
                want = (
                    torch.relu(x @ block.wi_0.weight.T) ** 3 * (x @ block.wi_1.weight.T)
                ) @ block.wo.weight.T
            else:
                want = (torch.relu(x @ block.wi.weight.T) ** 3) @ block.wo.weight.T
            torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-6)
    config = round_trip(build_model(SIZE, v, VOCAB, seed=0), tmp_path / "export")
    assert config["feed_forward_proj"] == "my_ffn:cube_relu"


def test_custom_block_class_and_its_export(user_module, tmp_path):
    v = ffn("ffn.module=my_ffn:MinBlock", "ffn.matrices=3", "ffn.name=minout")
    block = block_of(build_model(SIZE, v, VOCAB, seed=0))
    assert type(block).__name__ == "MinBlock" and v.d_ff(240) == 160
    round_trip(build_model(SIZE, v, VOCAB, seed=0), tmp_path / "export")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["ffn.activation=no_such_module:f"], "cannot import 'no_such_module'"),
        (["ffn.activation=my_ffn:missing"], "has no 'missing'"),
        (["ffn.activation=my_ffn:not_callable"], "is not callable"),
        (["ffn.activation=my_ffn:shrink"], "of its input's shape"),
        (["ffn.activation=my_ffn"], "ffn=custom needs ffn.activation=package.module:function"),
        (["ffn.module=my_ffn:MinBlock", "ffn.matrices=2"], "holds exactly the matrices wi, wo"),
        (["ffn.module=my_ffn:MinBlock", "ffn.matrices=4"], "2 (wi, wo) or 3"),
        ([], "ffn=custom needs ffn.activation"),
    ],
)
def test_bad_custom_names_are_refused(user_module, overrides, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        ffn(*overrides)
    assert set(VARIANTS) == set(BUILT_IN_VARIANTS)  # nothing registered


@pytest.mark.slow
def test_bad_custom_name_through_the_cli_is_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    r = run_cli(
        "glu_study.train", *TINY, "ffn=custom", "ffn.activation=no_such_module:f", f"hydra.run.dir={run_dir}"
    )
    assert (
        r.returncode == 2 and r.stderr.count("error:") == 1 and "cannot import 'no_such_module'" in r.stderr
    )
    assert not run_dir.exists()


@pytest.mark.slow
def test_the_readme_example_runs_through_the_cli(tmp_path, monkeypatch):
    """The README's "Add your own FFN": its module written out as a user would, its command for a few steps."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(# my_ffn\.py.*?)```", readme, re.S).group(1)
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 15
    (tmp_path / "my_ffn.py").write_text(code)
    command = re.search(
        r"PYTHONPATH=\. \.venv/bin/python -m glu_study\.train (ffn=custom[^\n]*)", readme
    ).group(1)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run_dir = tmp_path / "run"
    r = run_cli("glu_study.train", *TINY, *command.split(), f"hydra.run.dir={run_dir}", env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))  # as the user's own process would have it
    sys.modules.pop("my_ffn", None)
    assert summary["ffn"] == "squareglu" and summary["d_ff"] == 344  # gated: 2/3 of t5_tiny's 512
    assert from_pretrained(run_dir / "model").config.glu_study_ffn["dense_act_fn"] == "my_ffn:squareplus"


def test_compare_preset_sweeps_the_challenger_beside_relu_and_swiglu():
    from tests.helpers import preset_sweep

    assert preset_sweep("compare_cpu") == {"seed": ["0", "1", "2", "3"], "ffn": ["relu", "swiglu", "custom"]}
    cfg = compose(["experiment=compare_cpu", "ffn=relu", "challenger.activation=x:y"])
    assert check_variant_config(cfg.ffn).name == "relu"  # the challenger's settings reach only ffn=custom
    assert compose(["experiment=compare_cpu"]).trainer == compose(["experiment=table1_cpu"]).trainer


def test_a_challenger_is_a_table1_row_with_its_holm_p(tmp_path):
    """experiment=compare_cpu's report: the challenger against FFN_ReLU paired by seed, Holm-corrected together
    with the paper's claims present (recomputed here with scipy and statsmodels)."""
    import numpy as np
    from scipy import stats as st
    from statsmodels.stats.multitest import multipletests

    from glu_study.reporting.table1 import write_table1
    from tests.helpers import cells, final_records, numbers

    VARIANTS["mine"] = get_variant("relu").__class__("mine", "FFN_mine", "mine", True)
    finals = {
        "relu": [4.50, 4.52, 4.49, 4.51],
        "swiglu": [4.40, 4.43, 4.41, 4.40],
        "mine": [4.46, 4.50, 4.45, 4.47],
    }
    records = final_records(finals, "compare_cpu")
    stats = write_table1(records, tmp_path, "compare_cpu")
    ps = {v: st.ttest_rel(finals[v], finals["relu"], alternative="less").pvalue for v in ("swiglu", "mine")}
    holm = dict(zip(ps, multipletests(list(ps.values()), method="holm")[1], strict=True))
    assert stats["mine"].p_holm == pytest.approx(holm["mine"]) and stats["swiglu"].p_holm == pytest.approx(
        holm["swiglu"]
    )
    row = cells((tmp_path / "table1.md").read_text(), "FFN_mine")
    d = np.array(finals["mine"]) - np.array(finals["relu"])
    assert numbers(row[3])[0] == round(d.mean(), 4) and float(row[5]) == pytest.approx(holm["mine"], rel=1e-2)
