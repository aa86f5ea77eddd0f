"""FFN variants that are not one of transformers' activation names: whole FFN blocks (structural variants such as
Maxout) and your own element-wise activations, both named by import path.

The model stays HF's `T5ForConditionalGeneration`. A structural variant is built as HF's block with the same
matrices (`T5DenseGatedActDense` for three: wi_0, wi_1, wo; `T5DenseActDense` for two: wi, wo), initialised by
T5's own scheme, and then each block is replaced by the variant's class, which takes over those very weights
(`load_state_dict`, strict): the same seed gives the same initial matrices as every other variant with that many.
An element-wise activation is registered in transformers' activation table under its import path, so HF's own
blocks apply it: `act(wi x) wo`, or `(act(wi_0 x) * wi_1 x) wo` when gated.

A block class takes the model's `T5Config` (d_model, d_ff already compute-matched, dropout_rate) and holds the
matrices under HF's names; Maxout (Goodfellow et al. 2013, arXiv 1302.4389) is the one the registry ships:
`wo(max(wi_0 x, wi_1 x))`, k = 2 pieces, no biases.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn as nn
from transformers import T5Config
from transformers.activations import ACT2CLS, ACT2FN
from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense, T5LayerFF

from glu_study.errors import ConfigError


class MaxoutDense(nn.Module):
    """FFN_Maxout(x) = max(x W, x V) W2 (k = 2 linear pieces), with HF's gated block's matrices."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden = torch.maximum(self.wi_0(hidden_states), self.wi_1(hidden_states))
        return self.wo(self.dropout(hidden).to(self.wo.weight.dtype))


def import_object(path: str, what: str):
    """`package.module:attribute` imported; a ConfigError naming what is wrong otherwise."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{what}={path!r} is not of the form package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what}={path!r}: cannot import {module_name!r} ({e})") from None
    if not hasattr(module, attribute):
        raise ConfigError(f"{what}={path!r}: module {module_name!r} has no {attribute!r}")
    obj = getattr(module, attribute)
    if not callable(obj):
        raise ConfigError(f"{what}={path!r} is not callable")
    return obj


def register_activation(path: str) -> str:
    """Put the element-wise function (or nn.Module class) at `path` into transformers' activation table under
    `path` itself, after checking it keeps its input's shape; returns the key."""
    fn = import_object(path, "ffn.activation")
    if isinstance(fn, type) and issubclass(fn, nn.Module):
        cls = fn
    else:
        cls = type(f"Activation[{path}]", (nn.Module,), {"forward": lambda self, x: fn(x)})
    x = torch.linspace(-3, 3, 12).reshape(3, 4)
    try:
        out = cls()(x)
    except Exception as e:
        raise ConfigError(f"ffn.activation={path!r} fails on a tensor ({type(e).__name__}: {e})") from None
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise ConfigError(
            f"ffn.activation={path!r} must return a tensor of its input's shape (an element-wise map)"
        )
    for table in (ACT2CLS, ACT2FN):
        table[path] = cls
    return path


def placeholder_block(config: T5Config, matrices: int) -> nn.Module:
    """HF's block with the same matrices as a structural variant: what it is built (and initialised) as."""
    return T5DenseGatedActDense(config) if matrices == 3 else T5DenseActDense(config)


def block_class(path: str, matrices: int) -> type:
    """The structural variant's class, checked on a small config: HF's matrix names and shapes, output shape."""
    if matrices not in (2, 3):
        raise ConfigError(
            f"ffn.matrices={matrices}: a T5 FFN block holds 2 (wi, wo) or 3 (wi_0, wi_1, wo) matrices"
        )
    cls = import_object(path, "ffn.module")
    config = T5Config(
        d_model=8, d_ff=12, dropout_rate=0.0, feed_forward_proj="gated-linear" if matrices == 3 else "relu"
    )
    try:
        block = cls(config)
        block.load_state_dict(placeholder_block(config, matrices).state_dict(), strict=True)
        out = block(torch.randn(2, 3, 8))
    except Exception as e:
        names = "wi_0, wi_1, wo" if matrices == 3 else "wi, wo"
        raise ConfigError(
            f"ffn.module={path!r}: a block class takes a T5Config and holds exactly the matrices {names} "
            f"(as HF's blocks); it failed with {type(e).__name__}: {e}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.shape != (2, 3, 8):
        raise ConfigError(f"ffn.module={path!r} must map (batch, length, d_model) to the same shape")
    return cls


def refuse_plain_loading(path: str) -> None:
    """In transformers' activation table, `path` (what a structural variant's export records as its
    feed_forward_proj) names a module that refuses to be built, with the call that loads such an export; without
    glu_study imported, transformers' own KeyError names the path."""

    def refuse(self):
        raise ImportError(
            f"this export's FFN is a whole block, {path}, which plain transformers cannot build: load it with "
            "glu_study.model.from_pretrained(path)"
        )

    sentinel = type(f"Block[{path}]", (nn.Module,), {"__init__": refuse})
    for table in (ACT2CLS, ACT2FN):
        if path not in table:  # not setdefault: transformers' ACT2FN instantiates on item access
            table[path] = sentinel


def install_blocks(model: nn.Module, path: str, matrices: int) -> None:
    """Replace the FFN block of every T5 layer under `model` with the class at `path`, keeping its weights."""
    cls = block_class(path, matrices)
    refuse_plain_loading(path)
    for layer in model.modules():
        if isinstance(layer, T5LayerFF):
            old = layer.DenseReluDense
            config = T5Config(
                d_model=old.wo.out_features, d_ff=old.wo.in_features, dropout_rate=old.dropout.p
            )
            new = cls(config).to(device=old.wo.weight.device, dtype=old.wo.weight.dtype)
            new.load_state_dict(old.state_dict(), strict=True)
            layer.DenseReluDense = new
