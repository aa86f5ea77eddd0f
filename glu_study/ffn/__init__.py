"""The FFN variants: the registry (variants.py), variants named by import path and Maxout (custom.py), and the
compute-matching table (`python -m glu_study.ffn`)."""

from glu_study.ffn.variants import (
    BUILT_IN_VARIANTS,
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
    "BUILT_IN_VARIANTS",
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
