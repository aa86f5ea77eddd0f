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
an integer. `python -m glu_study.ffn --model t5_base` prints the resulting table.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch.nn as nn
from transformers.activations import ACT2CLS, ACT2FN

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
    activation: str  # key into transformers' ACT2FN
    gated: bool
    gelu: str | None = None  # GELU flavour, only for GELU-based variants
    paper: bool = False  # one of the eight in Shazeer (2020) Table 1
    note: str = ""

    @property
    def feed_forward_proj(self) -> str:
        """The exact string HF's T5Config expects (and writes to config.json on export)."""
        return f"gated-{self.activation}" if self.gated else self.activation

    def d_ff(self, base_d_ff: int) -> int:
        return gated_d_ff(base_d_ff) if self.gated else base_d_ff

    @property
    def num_matrices(self) -> int:
        return 3 if self.gated else 2


def gated_d_ff(base_d_ff: int) -> int:
    """2/3 of the base d_ff: exact when it divides, else the nearest multiple of 8."""
    if (2 * base_d_ff) % 3 == 0:
        return 2 * base_d_ff // 3
    return max(8, 8 * round(2 * base_d_ff / 3 / 8))


_V = Variant
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        # --- the eight of Shazeer (2020), in the paper's Table 1 order ---
        _V("relu", "FFN_ReLU", "relu", gated=False, paper=True, note="T5 baseline, eq. 1"),
        _V("gelu", "FFN_GELU", "gelu_pytorch_tanh", gated=False, gelu=GELU_TANH, paper=True, note="eq. 2"),
        _V("swish", "FFN_Swish", "silu", gated=False, paper=True, note="Swish_1 = SiLU, eq. 2"),
        _V("glu", "FFN_GLU", "sigmoid", gated=True, paper=True, note="Dauphin et al. 2016, eq. 6"),
        _V("bilinear", "FFN_Bilinear", "linear", gated=True, paper=True, note="phi = identity, eq. 6"),
        _V("geglu", "FFN_GEGLU", "gelu_pytorch_tanh", gated=True, gelu=GELU_TANH, paper=True, note="eq. 6"),
        _V("swiglu", "FFN_SwiGLU", "silu", gated=True, paper=True, note="eq. 6"),
        _V("reglu", "FFN_ReGLU", "relu", gated=True, paper=True, note="eq. 6"),
        # --- the wider activation family of the study's background (not in the paper's tables) ---
        _V("gelu_erf", "FFN_GELU (exact erf)", "gelu", gated=False, gelu=GELU_ERF, note="HF's plain 'gelu'"),
        _V("sigmoid", "FFN_Sigmoid", "sigmoid", gated=False),
        _V("tanh", "FFN_Tanh", "tanh", gated=False),
        _V("leaky_relu", "FFN_LeakyReLU", "leaky_relu", gated=False, note="negative slope 0.01"),
        _V("elu", "FFN_ELU", "elu", gated=False, note="alpha 1.0"),
        _V("mish", "FFN_Mish", "mish", gated=False),
        _V("geglu_erf", "FFN_GEGLU (exact erf)", "gelu_python", gated=True, gelu=GELU_ERF),
        _V("tanhglu", "FFN_TanhGLU", "tanh", gated=True),
        _V("leaky_reglu", "FFN_LeakyReGLU", "leaky_relu", gated=True, note="negative slope 0.01"),
        _V("eluglu", "FFN_ELUGLU", "elu", gated=True),
        _V("mishglu", "FFN_MishGLU", "mish", gated=True),
    ]
}

PAPER_VARIANTS: tuple[str, ...] = tuple(v.name for v in VARIANTS.values() if v.paper)


def paper_order(name: str) -> tuple[int, str]:
    """Sort key for tables: the paper's eight in its order, then any extra variant by name."""
    return (PAPER_VARIANTS.index(name) if name in PAPER_VARIANTS else len(PAPER_VARIANTS), name)


EXTRA_VARIANTS: tuple[str, ...] = tuple(v.name for v in VARIANTS.values() if not v.paper)


class UnknownVariantError(ValueError):
    pass


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
    return ACT2FN[get_variant(name).activation]


def check_variant_config(ffn_cfg) -> Variant:
    """Resolve a composed `ffn` config node to its registry entry, refusing an edited/inconsistent file.

    The conf/ffn/*.yaml files repeat the registry's facts so they show up in the resolved config (and W&B);
    this keeps the two from drifting apart silently.
    """
    v = get_variant(ffn_cfg.name)
    stated = {"activation": ffn_cfg.activation, "gated": ffn_cfg.gated, "gelu": ffn_cfg.gelu}
    actual = {"activation": v.activation, "gated": v.gated, "gelu": v.gelu}
    if stated != actual:
        raise ValueError(f"conf/ffn/{v.name}.yaml states {stated} but the registry says {actual}")
    return v


def _main(argv: list[str] | None = None) -> int:
    from glu_study.model import MODEL_SIZES, param_counts

    p = argparse.ArgumentParser(
        prog="python -m glu_study.ffn", description="Compute-matching table of every FFN variant."
    )
    p.add_argument("--model", default="t5_base", choices=sorted(MODEL_SIZES))
    p.add_argument("--vocab-size", type=int, default=32100, help="for total parameter counts (T5: 32000+100)")
    p.add_argument("--inputs-length", type=int, default=512)
    p.add_argument("--targets-length", type=int, default=114)
    p.add_argument("--all", action="store_true", help="include the extra (non-paper) variants")
    args = p.parse_args(argv)

    size = MODEL_SIZES[args.model]
    names = list(VARIANTS) if args.all else list(PAPER_VARIANTS)
    ref = param_counts(size, get_variant("relu"), args.vocab_size, args.inputs_length, args.targets_length)
    print(
        f"{args.model}: d_model {size.d_model}, {size.num_layers}+{size.num_decoder_layers} layers, "
        f"{size.num_heads} heads x d_kv {size.d_kv}, base d_ff {size.d_ff}, vocab {args.vocab_size}, "
        f"lengths {args.inputs_length}/{args.targets_length}"
    )
    hdr = (
        f"{'variant':<12}{'paper name':<24}{'feed_forward_proj':<26}{'d_ff':>6}{'non-emb params':>16}"
        f"{'vs relu':>9}{'total params':>15}{'enc GFLOP/in-tok':>18}{'dec GFLOP/tgt-tok':>19}"
    )
    print(hdr)
    print("-" * len(hdr))
    for n in names:
        v = get_variant(n)
        c = param_counts(size, v, args.vocab_size, args.inputs_length, args.targets_length)
        rel = 100 * (c["non_embedding_params"] / ref["non_embedding_params"] - 1)
        print(
            f"{n:<12}{v.paper_name:<24}{v.feed_forward_proj:<26}{c['d_ff']:>6}{c['non_embedding_params']:>16,}"
            f"{rel:>+8.2f}%{c['params']:>15,}{c['flops_per_input_token'] / 1e9:>18.4f}"
            f"{c['flops_per_target_token'] / 1e9:>19.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(_main())
