"""The variant registry, compute matching, the model builder and the HF export."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import T5ForConditionalGeneration

from glu_study.config import CONF_DIR, MODEL_SIZES
from glu_study.errors import UnknownVariantError
from glu_study.ffn import (
    BUILT_IN_VARIANTS,
    GELU_ERF,
    GELU_TANH,
    PAPER_VARIANTS,
    VARIANTS,
    activation_fn,
    get_variant,
)
from glu_study.model import build_model, count_parameters, param_counts
from tests.helpers import run_cli

TINY = MODEL_SIZES["t5_tiny"]
VOCAB = 300


def test_paper_variants_in_paper_order():
    assert PAPER_VARIANTS == ("relu", "gelu", "swish", "glu", "bilinear", "geglu", "swiglu", "reglu")
    assert {"sigmoid", "tanh", "leaky_relu", "elu", "mish", "gelu_erf", "mishglu", "tanhglu"} <= set(VARIANTS)


def test_feed_forward_proj_strings_are_hf_names():
    expected = {
        "relu": "relu",
        "gelu": "gelu_pytorch_tanh",
        "swish": "silu",
        "glu": "gated-sigmoid",
        "bilinear": "gated-linear",
        "geglu": "gated-gelu_pytorch_tanh",
        "swiglu": "gated-silu",
        "reglu": "gated-relu",
    }
    assert {n: get_variant(n).feed_forward_proj for n in PAPER_VARIANTS} == expected


def test_paper_gelus_are_both_tanh_approximation_like_mesh_tf():
    assert get_variant("gelu").gelu == get_variant("geglu").gelu == GELU_TANH
    assert get_variant("gelu_erf").gelu == get_variant("geglu_erf").gelu == GELU_ERF
    x = torch.linspace(-5, 5, 101)
    tanh_formula = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(activation_fn("gelu")(x), tanh_formula)
    torch.testing.assert_close(activation_fn("geglu")(x), tanh_formula)
    torch.testing.assert_close(activation_fn("gelu_erf")(x), 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))
    assert (activation_fn("gelu")(x) - activation_fn("gelu_erf")(x)).abs().max() > 1e-5  # truly different


def test_unknown_variant_lists_valid_names():
    with pytest.raises(UnknownVariantError) as e:
        get_variant("swigluu")
    for name in PAPER_VARIANTS:
        assert name in str(e.value)


@pytest.mark.parametrize("name", sorted(BUILT_IN_VARIANTS))
def test_conf_file_matches_registry(name):
    node = OmegaConf.load(CONF_DIR / "ffn" / f"{name}.yaml")
    v = get_variant(name)
    assert (node.name, node.activation, node.gated, node.gelu) == (
        v.name,
        v.dense_act_fn,
        v.is_gated_act,
        v.gelu,
    )
    shipped = {p.stem for p in (CONF_DIR / "ffn").glob("*.yaml")}
    assert shipped == set(BUILT_IN_VARIANTS) | {
        "custom"
    }  # custom.yaml: a variant defined outside the package


@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_compute_matching_parameter_parity(size):
    m = MODEL_SIZES[size]
    ref = param_counts(m, get_variant("relu"), 32100)
    for name, v in VARIANTS.items():
        c = param_counts(m, v, 32100)
        rel = abs(c["non_embedding_params"] / ref["non_embedding_params"] - 1)
        assert rel < 0.005, (size, name, rel)
        if v.is_gated_act:
            assert c["d_ff"] % 8 == 0 and abs(c["d_ff"] - 2 * m.d_ff / 3) <= 4
    assert param_counts(MODEL_SIZES["t5_base"], get_variant("swiglu"), 32100)["d_ff"] == 2048


def test_shape_arithmetic_equals_built_model():
    for name, v in VARIANTS.items():
        model = build_model(TINY, v, VOCAB, seed=0)
        built = count_parameters(model)
        shapes = param_counts(TINY, v, VOCAB)
        assert built["params"] == shapes["params"], name
        assert built["non_embedding_params"] == shapes["non_embedding_params"], name


def test_no_biases_and_hf_weight_names():
    for name in ("relu", "swiglu"):
        model = build_model(TINY, get_variant(name), VOCAB, seed=0)
        names = [n for n, _ in model.named_parameters()]
        assert not any(n.endswith("bias") and "relative_attention_bias" not in n for n in names)
        ff = model.encoder.block[0].layer[1].DenseReluDense
        expected = {"wi_0", "wi_1", "wo"} if get_variant(name).is_gated_act else {"wi", "wo"}
        assert {n.split(".")[0] for n, _ in ff.named_parameters()} == expected
        assert model.config.dropout_rate == 0.0
        assert model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()  # T5.1.0 tied embeddings


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_trains_forward_backward(name):
    model = build_model(TINY, get_variant(name), VOCAB, seed=0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (2, 12), generator=g)
    labels = torch.randint(3, VOCAB, (2, 5), generator=g)
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(gr.abs().sum() for gr in grads) > 0


PHI = {
    "relu": F.relu,
    "gelu": lambda a: F.gelu(a, approximate="tanh"),
    "swish": F.silu,
    "glu": torch.sigmoid,
    "bilinear": lambda a: a,
    "geglu": lambda a: F.gelu(a, approximate="tanh"),
    "swiglu": lambda a: a * torch.sigmoid(a),
    "reglu": F.relu,
    "gelu_erf": F.gelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "leaky_relu": lambda a: F.leaky_relu(a, 0.01),
    "elu": F.elu,
    "mish": lambda a: a * torch.tanh(F.softplus(a)),
    "geglu_erf": F.gelu,
    "tanhglu": torch.tanh,
    "leaky_reglu": lambda a: F.leaky_relu(a, 0.01),
    "eluglu": F.elu,
    "mishglu": lambda a: a * torch.tanh(F.softplus(a)),
    "relu2": lambda a: F.relu(a) ** 2,
    "reglu2": lambda a: F.relu(a) ** 2,
}


def xielu_by_hand(x, act):
    """arXiv 2411.13010, eq. 6, with the block's own scalars (as its own matrices are used for W, V, W2):
    alpha_p = softplus(a_p), alpha_n = beta + softplus(a_n), kept in the dtype transformers gives them."""
    alpha_p, alpha_n = F.softplus(act.alpha_p), act.beta + F.softplus(act.alpha_n)
    neg = alpha_n * (torch.expm1(torch.clamp(x, max=act.eps)) - x) + act.beta * x
    return torch.where(x > 0, alpha_p * x * x + act.beta * x, neg)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_ffn_block_equals_paper_formula(name):
    """Eqs. 2-6: act(xW1)W2 or (phi(xW) * xV)W2, computed by hand from the block's own matrices."""
    v = get_variant(name)
    model = build_model(TINY, v, VOCAB, seed=1)
    block = model.decoder.block[2].layer[2].DenseReluDense
    x = torch.randn(3, 7, TINY.d_model, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = block(x)
        if v.module:  # FFN_Maxout: max(xW, xV) W2
            W, V, W2 = block.wi_0.weight.T, block.wi_1.weight.T, block.wo.weight.T
            torch.testing.assert_close(got, torch.maximum(x @ W, x @ V) @ W2, rtol=1e-5, atol=1e-6)
            return
        phi = PHI.get(name) or partial(xielu_by_hand, act=block.act)
        if v.is_gated_act:
            W, V, W2 = block.wi_0.weight.T, block.wi_1.weight.T, block.wo.weight.T
            want = (phi(x @ W) * (x @ V)) @ W2
        else:
            W1, W2 = block.wi.weight.T, block.wo.weight.T
            want = phi(x @ W1) @ W2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_xielu_scalars_initialised_counted_and_trained():
    """Two learnable scalars per FFN block (alpha_p, alpha_n through a softplus, both 0.8 at init)."""
    model = build_model(TINY, get_variant("xielu"), VOCAB, seed=0)
    acts = [m for n, m in model.named_modules() if n.endswith("DenseReluDense.act")]
    assert len(acts) == TINY.num_layers + TINY.num_decoder_layers
    assert len({id(a) for a in acts}) == len(acts)  # one pair per block, not one shared pair
    for act in acts:
        torch.testing.assert_close(F.softplus(act.alpha_p.float()), torch.tensor([0.8]), atol=4e-3, rtol=0)
        torch.testing.assert_close(
            act.beta + F.softplus(act.alpha_n.float()), torch.tensor([0.8]), atol=4e-3, rtol=0
        )
        assert float(act.beta) == 0.5 and not act.beta.requires_grad
    relu = count_parameters(build_model(TINY, get_variant("relu"), VOCAB, seed=0))["params"]
    assert (
        count_parameters(model)["params"] - relu
        == 2 * len(acts)
        == param_counts(TINY, get_variant("xielu"), VOCAB)["params"]
        - param_counts(TINY, get_variant("relu"), VOCAB)["params"]
    )
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids[:, :5].clone()).loss.backward()
    assert all(a.alpha_p.grad is not None and a.alpha_p.grad.abs().sum() > 0 for a in acts)


@pytest.mark.parametrize("name", ["swiglu", "gelu", "xielu"])
def test_export_round_trip_identical_logits(name, tmp_path):
    model = build_model(TINY, get_variant(name), VOCAB, seed=3).eval()
    model.save_pretrained(tmp_path)
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.feed_forward_proj == get_variant(name).feed_forward_proj
    assert loaded.config.is_gated_act == get_variant(name).is_gated_act
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    dec = torch.randint(3, VOCAB, (2, 4), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = model(input_ids=ids, decoder_input_ids=dec).logits
        b = loaded(input_ids=ids, decoder_input_ids=dec).logits
    assert torch.equal(a, b)


def test_ffn_table_cli():
    r = run_cli("glu_study.ffn", "--model", "t5_base")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.split() and ln.split()[0] in PAPER_VARIANTS]
    assert len(lines) == 8
    d_ffs = {ln.split()[0]: int(ln.split()[3]) for ln in lines}
    assert d_ffs["relu"] == 3072 and d_ffs["swiglu"] == 2048
    assert all("+0.00%" in ln for ln in lines)  # t5_base matches exactly
