"""The FFN variants: the registry (variants.py) and its compute-matching table (`python -m glu_study.ffn`)."""

from glu_study.ffn.variants import (
    EXTRA_VARIANTS,
    GELU_ERF,
    GELU_TANH,
    PAPER_VARIANTS,
    VARIANTS,
    Variant,
    activation_fn,
    check_variant_config,
    gated_d_ff,
    get_variant,
    paper_order,
)

__all__ = [
    "EXTRA_VARIANTS",
    "GELU_ERF",
    "GELU_TANH",
    "PAPER_VARIANTS",
    "VARIANTS",
    "Variant",
    "activation_fn",
    "check_variant_config",
    "gated_d_ff",
    "get_variant",
    "paper_order",
]
