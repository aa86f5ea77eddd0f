"""A one-minute comparison of the FFN variants before committing hours to pretraining.

    python -m glu_study.mlp                                  # scikit-learn's bundled digits, every variant x 3 seeds
    python -m glu_study.mlp --fashion-mnist DIR              # Fashion-MNIST from local IDX files (.gz or raw)

The classifier is input projection -> one T5 feed-forward layer -> linear head (glu_study.training.mlp), on an
image set from glu_study.data.images. Writes reports/mlp/results.md (test accuracy mean ± std, final training
loss) and loss_curves.png from the raw records runs.jsonl beside them (glu_study.reporting.mlp).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from glu_study.config import ROOT
from glu_study.data.images import load_digits_split, load_fashion_mnist
from glu_study.errors import ConfigError, exit_status
from glu_study.ffn import PAPER_VARIANTS, VARIANTS, get_variant
from glu_study.reporting.mlp import load_records, save_records, write_results
from glu_study.training.mlp import train_one


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m glu_study.mlp",
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m glu_study.mlp --variants paper --seeds 0,1",
    )
    p.add_argument("--fashion-mnist", type=Path, help="directory with the four Fashion-MNIST IDX files")
    p.add_argument("--variants", default="all", help="comma-separated names, 'paper', or 'all' (default)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--limit", type=int, help="use only the first N training and test examples")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "mlp")
    p.add_argument(
        "--render", action="store_true", help="only re-render the table and figure from OUT/runs.jsonl"
    )
    args = p.parse_args(argv)
    return exit_status(lambda: run(args))  # bad input: one error line, exit 2, nothing written


def run(args: argparse.Namespace) -> int:
    if args.render:
        results, dataset, settings = load_records(args.out / "runs.jsonl")
        write_results(results, dataset, args.out, settings)
        return 0
    names = (
        list(VARIANTS)
        if args.variants == "all"
        else list(PAPER_VARIANTS)
        if args.variants == "paper"
        else [get_variant(v.strip()).name for v in args.variants.split(",")]
    )
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds.replace(",", "").isdigit() else None
    if seeds is None:
        raise ConfigError(f"--seeds {args.seeds!r}: give comma-separated non-negative integers")
    split = (
        load_fashion_mnist(args.fashion_mnist, args.limit)
        if args.fashion_mnist
        else load_digits_split(args.limit)
    )
    torch.set_num_threads(1)  # tiny matrices: one thread is faster than two fighting over them
    results = []
    jobs = [(v, s) for v in names for s in seeds]
    for v, s in tqdm(jobs, desc="variants x seeds", dynamic_ncols=True):
        results.append(train_one(split, v, s, args.epochs, args.batch_size, args.lr))
    settings = (
        f"d_model 64, base d_ff 256 (gated 168), Adam lr {args.lr}, batch {args.batch_size}, "
        f"{args.epochs} epochs, {len(split.x_train)} training / {len(split.x_test)} test examples"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    save_records(results, split.name, settings, args.out / "runs.jsonl")
    write_results(results, split.name, args.out, settings)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
