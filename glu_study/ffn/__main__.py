"""`python -m glu_study.ffn [--model t5_base] [--all]`: the compute-matching table of the FFN variants.

For each variant: HF's `feed_forward_proj`, d_ff, non-embedding parameters (and their difference from FFN_ReLU),
total parameters and forward GFLOP per token, all from shapes (glu_study.model.param_counts), so t5_base needs
no instantiation.
"""

from __future__ import annotations

import argparse
import sys

from glu_study.config import MODEL_SIZES
from glu_study.ffn.variants import PAPER_VARIANTS, VARIANTS, get_variant
from glu_study.model import param_counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m glu_study.ffn",
        description="Compute-matching table of every FFN variant.",
        epilog="example: python -m glu_study.ffn --model t5_base --all",
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
    sys.exit(main())
