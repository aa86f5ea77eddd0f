"""The FFN variant registry: every feed-forward block the study can put inside T5.

Shazeer (2020), eqs. 2-6, all without biases:

    non-gated   FFN_act(x)  = act(x W1) W2                         (HF: wi, wo)
    gated       FFN_phiGLU(x) = (phi(x W) * x V) W2                 (HF: wi_0 = W, wi_1 = V, wo = W2)

HF transformers' T5 already implements both shapes (`T5DenseActDense`, `T5DenseGatedActDense`) selected by
`feed_forward_proj` = "<act>" or "gated-<act>", so a variant here is only *data*: a name, the HF activation
string, whether it is gated, and which GELU it uses. No second implementation of the block exists; the
activation callables we expose (`activation_fn`) are the very `transformers.activations.ACT2FN` objects the
model runs, so the gallery, the MLP and the tests all use the same code as pretraining.

GELU flavours, stated explicitly because libraries disagree:
  * Mesh-TensorFlow (the paper's code) used the tanh approximation for both FFN_GELU and FFN_GEGLU.
  * HF maps `gated-gelu` to the tanh approximation (`gelu_new`) but plain `gelu` to exact erf.
  We make the two paper variants consistent with Mesh-TF: both use `gelu_pytorch_tanh`
  (torch's fused `gelu(approximate="tanh")`, the same formula as `gelu_new`, one kernel instead of five).
  The exact-erf versions are available as the extras `gelu_erf` and `geglu_erf`.

Compute matching: a gated block has three d_model x d_ff matrices instead of two, so its d_ff is 2/3 of the
model's base d_ff (T5-base: 3072 -> 2048), rounded to a multiple of 8 (tensor-core friendly) when 2/3 is not
an integer. `python -m glu_study.ffn --model t5_base` prints the resulting table (glu_study/ffn/__main__.py).

Later challengers (not in the paper), compute-matched the same way:
  * squared ReLU, relu(x)^2 (So et al. 2021, "Primer", arXiv 2109.08668): HF's `relu2`; `reglu2` is its gated
    twin, phi = ReLU^2 (Primer's own gated form).
  * xIELU (Huang & Schlag 2024, arXiv 2411.13010): HF's `xielu`, x > 0: a_p x^2 + b x, x <= 0:
    a_n (expm1(min(x, eps)) - x) + b x, with two *learnable* scalars per FFN block (a_p, a_n, stored through a
    softplus, initialised to 0.8 each) and two fixed buffers (b = 0.5, eps = -1e-6). Every block gets its own
    pair, so a model has 2 x (encoder + decoder layers) more parameters (16 at t5_tiny: `act_params` counts them;
    0.001% of the FFN). transformers creates them in bf16 (its default, and `from_pretrained` restores them in
    bf16 too); we keep them as the library builds them, so an export round-trips exactly. `xieluglu` is its
    gated twin, phi = xIELU.

A variant's two facts carry HF's own names: `dense_act_fn` (the ACT2FN key) and `is_gated_act`, exactly what
`T5Config` derives from `feed_forward_proj`. The conf/ffn/*.yaml files state them as `activation` and `gated`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from transformers.activations import ACT2CLS, ACT2FN

from glu_study.errors import ConfigError, UnknownVariantError

# HF has no plain ELU in its activation table. We register torch's nn.ELU under the obvious name so that
# the ELU extras run through the same T5 code path. This is the only addition we make to HF's registry;
# an exported ELU model needs `import glu_study` before `from_pretrained` (the paper variants need nothing).
for _table in (ACT2CLS, ACT2FN):
    _table.setdefault("elu", nn.ELU)

GELU_TANH = "tanh approximation"
GELU_ERF = "exact erf"


@dataclass(frozen=True)
class Variant:
    name: str  # our short name, the Hydra choice: ffn=<name>
    paper_name: str  # how the paper (or the activation literature) writes it
    dense_act_fn: str  # key into transformers' ACT2FN (HF T5Config.dense_act_fn)
    is_gated_act: bool  # HF T5Config.is_gated_act: (phi(xW) * xV) W2 instead of act(xW1) W2
    gelu: str | None = None  # GELU flavour, only for GELU-based variants
    act_params: int = 0  # learnable scalars of the activation itself, per FFN block (xIELU: a_p, a_n)
    paper: bool = False  # one of the eight in Shazeer (2020) Table 1
    note: str = ""
    # A structural variant (glu_study.ffn.custom): the FFN block's class by import path, and its matrix count.
    module: str | None = None
    matrices: int = 0  # 0: 3 if gated, else 2

    @property
    def num_matrices(self) -> int:
        return self.matrices or (3 if self.is_gated_act else 2)

    @property
    def feed_forward_proj(self) -> str:
        """What the export's config.json records. For HF's own blocks, the exact string T5Config expects; for a
        structural variant, its class path in the same shape, which plain transformers cannot resolve (so an
        export never silently loads as a different FFN)."""
        act = self.module or self.dense_act_fn
        return f"gated-{act}" if self.num_matrices == 3 else act

    @property
    def build_proj(self) -> str:
        """What the HF model is built with: a structural variant starts as HF's block with its matrices."""
        if self.module:
            return "gated-linear" if self.num_matrices == 3 else "relu"
        return self.feed_forward_proj

    def d_ff(self, base_d_ff: int) -> int:
        return matched_d_ff(base_d_ff, self.num_matrices)

    def record(self) -> dict:
        """What an export's config.json keeps (`glu_study_ffn`) to rebuild this variant."""
        keys = ("name", "paper_name", "dense_act_fn", "is_gated_act", "module", "matrices", "act_params")
        return {k: getattr(self, k) for k in keys}


def matched_d_ff(base_d_ff: int, matrices: int) -> int:
    """The d_ff that gives `matrices` d_model x d_ff matrices the parameters of the base's two: 2/matrices of
    the base d_ff, exact when it divides, else the nearest multiple of 8."""
    if (2 * base_d_ff) % matrices == 0:
        return 2 * base_d_ff // matrices
    return max(8, 8 * round(2 * base_d_ff / matrices / 8))


def gated_d_ff(base_d_ff: int) -> int:
    """2/3 of the base d_ff (three matrices instead of two)."""
    return matched_d_ff(base_d_ff, 3)


_V = Variant
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        # --- the eight of Shazeer (2020), in the paper's Table 1 order ---
        _V("relu", "FFN_ReLU", "relu", is_gated_act=False, paper=True, note="T5 baseline, eq. 1"),
        _V(
            "gelu",
            "FFN_GELU",
            "gelu_pytorch_tanh",
            is_gated_act=False,
            gelu=GELU_TANH,
            paper=True,
            note="eq. 2",
        ),
        _V("swish", "FFN_Swish", "silu", is_gated_act=False, paper=True, note="Swish_1 = SiLU, eq. 2"),
        _V("glu", "FFN_GLU", "sigmoid", is_gated_act=True, paper=True, note="Dauphin et al. 2016, eq. 6"),
        _V("bilinear", "FFN_Bilinear", "linear", is_gated_act=True, paper=True, note="phi = identity, eq. 6"),
        _V(
            "geglu",
            "FFN_GEGLU",
            "gelu_pytorch_tanh",
            is_gated_act=True,
            gelu=GELU_TANH,
            paper=True,
            note="eq. 6",
        ),
        _V("swiglu", "FFN_SwiGLU", "silu", is_gated_act=True, paper=True, note="eq. 6"),
        _V("reglu", "FFN_ReGLU", "relu", is_gated_act=True, paper=True, note="eq. 6"),
        # --- the wider activation family of the study's background (not in the paper's tables) ---
        _V(
            "gelu_erf",
            "FFN_GELU (exact erf)",
            "gelu",
            is_gated_act=False,
            gelu=GELU_ERF,
            note="HF's plain 'gelu'",
        ),
        _V("sigmoid", "FFN_Sigmoid", "sigmoid", is_gated_act=False),
        _V("tanh", "FFN_Tanh", "tanh", is_gated_act=False),
        _V("leaky_relu", "FFN_LeakyReLU", "leaky_relu", is_gated_act=False, note="negative slope 0.01"),
        _V("elu", "FFN_ELU", "elu", is_gated_act=False, note="alpha 1.0"),
        _V("mish", "FFN_Mish", "mish", is_gated_act=False),
        _V("geglu_erf", "FFN_GEGLU (exact erf)", "gelu_python", is_gated_act=True, gelu=GELU_ERF),
        _V("tanhglu", "FFN_TanhGLU", "tanh", is_gated_act=True),
        _V("leaky_reglu", "FFN_LeakyReGLU", "leaky_relu", is_gated_act=True, note="negative slope 0.01"),
        _V("eluglu", "FFN_ELUGLU", "elu", is_gated_act=True),
        _V("mishglu", "FFN_MishGLU", "mish", is_gated_act=True),
        # --- the later challengers (Primer 2021, xIELU 2024): study `experiment=scaling_cpu` ---
        _V("relu2", "FFN_ReLU²", "relu2", is_gated_act=False, note="squared ReLU, Primer"),
        _V("reglu2", "FFN_ReGLU²", "relu2", is_gated_act=True, note="phi = squared ReLU"),
        _V(
            "xielu",
            "FFN_xIELU",
            "xielu",
            is_gated_act=False,
            act_params=2,
            note="2 learnable scalars per block",
        ),
        _V("xieluglu", "FFN_xIELUGLU", "xielu", is_gated_act=True, act_params=2, note="phi = xIELU"),
        # --- structural: not an element-wise activation (glu_study.ffn.custom) ---
        _V(
            "maxout",
            "FFN_Maxout",
            "maxout",
            is_gated_act=False,
            module="glu_study.ffn.custom:MaxoutDense",
            matrices=3,
            note="max(xW, xV) W2, k = 2 (Goodfellow et al. 2013)",
        ),
    ]
}

PAPER_VARIANTS: tuple[str, ...] = tuple(v.name for v in VARIANTS.values() if v.paper)


def paper_order(name: str) -> tuple[int, str]:
    """Sort key for tables: the paper's eight in its order, then any extra variant by name."""
    return (PAPER_VARIANTS.index(name) if name in PAPER_VARIANTS else len(PAPER_VARIANTS), name)


EXTRA_VARIANTS: tuple[str, ...] = tuple(v.name for v in VARIANTS.values() if not v.paper)


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UnknownVariantError(
            f"unknown FFN variant {name!r}. Valid names: paper variants {', '.join(PAPER_VARIANTS)}; "
            f"extras {', '.join(EXTRA_VARIANTS)}"
        ) from None


def activation_fn(name: str) -> nn.Module:
    """The activation module a variant's block applies (the HF object itself, not a copy)."""
    return ACT2FN[get_variant(name).dense_act_fn]


def check_variant_config(ffn_cfg) -> Variant:
    """Resolve a composed `ffn` config node to its registry entry, refusing an edited/inconsistent file.

    The conf/ffn/*.yaml files repeat the registry's facts so they show up in the resolved config (and W&B);
    this keeps the two from drifting apart silently. `ffn=custom` (an activation or a block class named by
    import path) is checked and registered here, so every later step looks it up like any other variant.
    """
    named_by_path = ffn_cfg.get("module") or (ffn_cfg.activation and ":" in ffn_cfg.activation)
    if ffn_cfg.name not in BUILT_IN_VARIANTS and named_by_path:
        return custom_variant(ffn_cfg)
    if ffn_cfg.name == "custom":
        raise ConfigError(
            "ffn=custom needs ffn.activation=package.module:function (ffn.gated=true|false) or "
            "ffn.module=package.module:Class (ffn.matrices=2|3)"
        )
    v = get_variant(ffn_cfg.name)
    stated = {"activation": ffn_cfg.activation, "gated": ffn_cfg.gated, "gelu": ffn_cfg.gelu}
    actual = {"activation": v.dense_act_fn, "gated": v.is_gated_act, "gelu": v.gelu}
    if stated != actual or (ffn_cfg.get("module") or None) != v.module:
        raise ConfigError(f"conf/ffn/{v.name}.yaml states {stated} but the registry says {actual}")
    return v


def custom_variant(ffn_cfg) -> Variant:
    """A variant defined outside the package (`ffn=custom`), checked (imports, shapes) and registered."""
    from glu_study.ffn.custom import block_class, register_activation

    name = ffn_cfg.name
    if ffn_cfg.get("module"):
        matrices = int(ffn_cfg.get("matrices") or 0)
        block_class(ffn_cfg.module, matrices)
        v = Variant(name, ffn_cfg.paper_name, "block", False, module=ffn_cfg.module, matrices=matrices)
    else:
        v = Variant(name, ffn_cfg.paper_name, register_activation(ffn_cfg.activation), bool(ffn_cfg.gated))
    VARIANTS[name] = v
    return v


BUILT_IN_VARIANTS = frozenset(VARIANTS)  # the registry as shipped; check_variant_config adds custom ones


def variant_from_record(record: dict) -> Variant:
    """The variant an export's config.json recorded (`glu_study_ffn`), registered again in this process."""
    from glu_study.ffn.custom import block_class, register_activation

    v = Variant(
        record["name"],
        record["paper_name"],
        record["dense_act_fn"],
        record["is_gated_act"],
        act_params=record.get("act_params", 0),
        module=record.get("module"),
        matrices=record.get("matrices", 0),
    )
    if v.module:
        block_class(v.module, v.num_matrices)
    elif v.dense_act_fn not in ACT2CLS:
        register_activation(v.dense_act_fn)
    VARIANTS.setdefault(v.name, v)
    return v
