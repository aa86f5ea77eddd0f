"""Build the T5 encoder-decoder for a (model size, FFN variant) pair, and count what it costs.

The network itself is `transformers.T5ForConditionalGeneration`: the variant chooses `feed_forward_proj` and
d_ff (see glu_study.ffn), and a structural variant (Maxout, or a block class of your own) replaces the FFN block
of every layer, nothing else (glu_study.ffn.custom). `from_pretrained` loads any export, custom variants included. Everything here is either configuration of that model or
arithmetic on its shapes, so parameter counts and FLOPs can be had for t5_base without instantiating it.
"""

from __future__ import annotations

import torch
from transformers import T5Config, T5ForConditionalGeneration

from glu_study.ffn import Variant, get_variant


def t5_config(model_cfg, variant: Variant, vocab_size: int) -> T5Config:
    """The HF config of our model. `model_cfg` is a ModelConfig (or the composed `model` node)."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=model_cfg.d_model,
        d_kv=model_cfg.d_kv,
        d_ff=variant.d_ff(model_cfg.d_ff),
        num_layers=model_cfg.num_layers,
        num_decoder_layers=model_cfg.num_decoder_layers,
        num_heads=model_cfg.num_heads,
        relative_attention_num_buckets=model_cfg.relative_attention_num_buckets,
        relative_attention_max_distance=model_cfg.relative_attention_max_distance,
        dropout_rate=model_cfg.dropout_rate,
        layer_norm_epsilon=model_cfg.layer_norm_epsilon,
        initializer_factor=model_cfg.initializer_factor,
        feed_forward_proj=variant.build_proj,
        # T5.1.0: input embedding and softmax weights are shared, decoder output scaled by d_model**-0.5.
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        use_cache=False,  # training only; generation turns it back on
    )


def build_model(model_cfg, variant: Variant, vocab_size: int, seed: int) -> T5ForConditionalGeneration:
    """A freshly initialised model; the same seed gives the same weights for every variant's shared shapes."""
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(t5_config(model_cfg, variant, vocab_size))
    return finish_variant(model, variant)


def finish_variant(model: T5ForConditionalGeneration, variant: Variant) -> T5ForConditionalGeneration:
    """A structural variant's blocks put in place; the variant recorded in the config (its config.json), with
    `feed_forward_proj` naming what plain transformers would need, so a custom export never loads silently as
    another FFN (glu_study's `from_pretrained` loads it)."""
    if variant.module:
        from glu_study.ffn.custom import install_blocks

        install_blocks(model, variant.module, variant.num_matrices)
    model.config.glu_study_ffn = variant.record()
    if variant.feed_forward_proj != variant.build_proj:
        model.config.feed_forward_proj = variant.feed_forward_proj
        model.config.dense_act_fn = variant.feed_forward_proj.removeprefix("gated-")
    return model


def from_pretrained(path, **config_overrides) -> T5ForConditionalGeneration:
    """Any export (a run's model/ directory), custom variants included: the variant recorded in config.json is
    registered again (its module imported), the model built as HF's T5 and the variant's blocks put in place.
    Exports of the built-in HF variants load with plain transformers as well."""
    import json
    from pathlib import Path

    from glu_study.ffn.variants import variant_from_record

    record = json.loads((Path(path) / "config.json").read_text()).get("glu_study_ffn")
    if record is None:  # an export from before variants were recorded: an HF variant by construction
        return T5ForConditionalGeneration.from_pretrained(path, **config_overrides)
    variant = variant_from_record(record)
    build = variant.build_proj
    model = T5ForConditionalGeneration.from_pretrained(
        path,
        feed_forward_proj=build,
        dense_act_fn=build.removeprefix("gated-"),
        is_gated_act=build.startswith("gated-"),
        **config_overrides,
    )
    return finish_variant(model, variant)


def param_counts(
    model_cfg, variant: Variant, vocab_size: int, inputs_length: int = 512, targets_length: int = 114
) -> dict[str, int]:
    """Parameters and forward FLOPs from shapes alone (tests check this equals the built model's count).

    FLOPs are 2 per multiply-add, forward pass only (training is about 3x). Per input token: the encoder
    stack plus the decoder's cross-attention key/value projections, which are computed once per encoder
    position. Per target token: the decoder stack (self-attention over all targets_length positions, not
    halved for causality, and cross-attention over inputs_length) plus the tied softmax layer.
    """
    m = model_cfg
    d, inner, d_ff = m.d_model, m.num_heads * m.d_kv, variant.d_ff(m.d_ff)
    attn = 4 * d * inner  # q, k, v, o
    ffn_matmul = variant.num_matrices * d * d_ff
    ffn = ffn_matmul + variant.act_params  # xIELU's learnable scalars: parameters, but no multiply-adds
    rel_bias = m.relative_attention_num_buckets * m.num_heads  # first layer of each stack only
    enc = m.num_layers * (attn + ffn + 2 * d) + rel_bias + d  # 2 layer norms per layer, final layer norm
    dec = m.num_decoder_layers * (2 * attn + ffn + 3 * d) + rel_bias + d
    embedding = vocab_size * d  # shared by encoder, decoder and the (tied) softmax
    flops_in = 2 * m.num_layers * (
        attn + 2 * inputs_length * inner + ffn_matmul
    ) + 2 * m.num_decoder_layers * (2 * d * inner)
    flops_tgt = (
        2
        * m.num_decoder_layers
        * (attn + 2 * targets_length * inner + 2 * d * inner + 2 * inputs_length * inner + ffn_matmul)
        + 2 * d * vocab_size
    )
    return {
        "d_ff": d_ff,
        "params": enc + dec + embedding,
        "non_embedding_params": enc + dec,
        "ffn_params": (m.num_layers + m.num_decoder_layers) * ffn,
        "flops_per_input_token": flops_in,
        "flops_per_target_token": flops_tgt,
    }


def training_flops_per_example(shapes: dict, inputs_length: int, targets_length: int) -> int:
    """Training FLOPs of one example from param_counts' shapes: 3 x the forward pass (backward is ~2x forward)."""
    forward = (
        shapes["flops_per_input_token"] * inputs_length + shapes["flops_per_target_token"] * targets_length
    )
    return 3 * forward


def training_flops_per_step(cfg, ffn: str = "relu") -> float:
    """Training FLOPs of one optimizer step of a composed config (its model, data lengths and batch) with FFN
    `ffn`, from the shapes alone: what the GPU budget and the data benchmark measure against."""
    from glu_study.data.spans import compute_input_and_target_lengths

    d = cfg.data
    _, targets = compute_input_and_target_lengths(d.inputs_length, d.noise_density, d.mean_noise_span_length)
    shapes = param_counts(cfg.model, get_variant(ffn), d.vocab_size + d.extra_ids, d.inputs_length, targets)
    return training_flops_per_example(shapes, d.inputs_length, targets) * cfg.trainer.batch_size


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Counted on a built model (tied weights once)."""
    total = sum(p.numel() for p in model.parameters())
    return {"params": total, "non_embedding_params": total - model.shared.weight.numel()}
