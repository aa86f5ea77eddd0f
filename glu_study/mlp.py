"""A one-minute comparison of the FFN variants before committing hours to pretraining.

    python -m glu_study.mlp                                  # scikit-learn's bundled digits, every variant x 3 seeds
    python -m glu_study.mlp --fashion-mnist DIR              # Fashion-MNIST from local IDX files (.gz or raw)

The classifier is input projection -> one T5 feed-forward layer (HF's `T5LayerFF`: RMS norm, the variant's FFN,
residual — the block pretraining uses, built from the registry, gated d_ff = 2/3 of the base) -> linear head.
Writes reports/mlp/results.md (test accuracy mean ± std, final training loss) and loss_curves.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5LayerFF

from glu_study.config import ROOT
from glu_study.errors import DataError
from glu_study.ffn import PAPER_VARIANTS, VARIANTS, Variant, get_variant
from glu_study.reporting.figures import pyplot, savefig

# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str

    @property
    def n_classes(self) -> int:
        return int(self.y_train.max()) + 1


def load_digits_split(limit: int | None = None) -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)  # bundled with scikit-learn: no download
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.2, random_state=0, stratify=y)
    if limit:
        x_tr, y_tr, x_te, y_te = x_tr[:limit], y_tr[:limit], x_te[:limit], y_te[:limit]
    return Split(
        torch.tensor(x_tr, dtype=torch.float32),
        torch.tensor(y_tr),
        torch.tensor(x_te, dtype=torch.float32),
        torch.tensor(y_te),
        "digits (scikit-learn)",
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST / Fashion-MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} bytes of data")
    return data.reshape(dims)


FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def load_fashion_mnist(directory: Path, limit: int | None = None) -> Split:
    if not directory.is_dir():
        raise DataError(f"--fashion-mnist {directory}: no such directory")
    paths = {}
    for key, stem in FASHION_FILES.items():  # all four present before reading any
        candidates = [directory / f"{stem}.gz", directory / stem]
        paths[key] = next((c for c in candidates if c.is_file()), None)
        if paths[key] is None:
            raise DataError(
                f"{directory}: missing {stem}[.gz] (expected {', '.join(FASHION_FILES.values())})"
            )
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for part in ("train", "test"):
        if len(arrays[f"x_{part}"]) != len(arrays[f"y_{part}"]):
            raise DataError(f"{directory}: {part} images and labels differ in count")
    if limit:
        arrays = {k: v[:limit] for k, v in arrays.items()}

    def images(a):
        return torch.tensor(a.reshape(len(a), -1), dtype=torch.float32) / 255.0

    return Split(
        images(arrays["x_train"]),
        torch.tensor(arrays["y_train"], dtype=torch.long),
        images(arrays["x_test"]),
        torch.tensor(arrays["y_test"], dtype=torch.long),
        "Fashion-MNIST",
    )


# ---------------------------------------------------------------------------------------------------------
# Model and training
# ---------------------------------------------------------------------------------------------------------


class FFNClassifier(nn.Module):
    def __init__(self, d_in: int, n_classes: int, variant: Variant, d_model: int = 64, d_ff: int = 256):
        super().__init__()
        self.proj = nn.Linear(d_in, d_model)
        cfg = T5Config(
            d_model=d_model,
            d_ff=variant.d_ff(d_ff),
            feed_forward_proj=variant.feed_forward_proj,
            dropout_rate=0.0,
        )
        self.ffn = T5LayerFF(cfg)  # the T5 block itself: norm, FFN variant, residual
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x):
        return self.head(self.ffn(self.proj(x)))


@dataclass
class MLPResult:
    variant: str
    seed: int
    test_accuracy: float
    final_loss: float
    losses: list[float]  # mean training loss per epoch
    params: int


def train_one(split: Split, variant: str, seed: int, epochs: int, batch_size: int, lr: float) -> MLPResult:
    torch.manual_seed(seed)
    model = FFNClassifier(split.x_train.shape[1], split.n_classes, get_variant(variant))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(split.x_train)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(split.x_train[idx]), split.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
    with torch.no_grad():
        acc = float((model(split.x_test).argmax(-1) == split.y_test).float().mean())
    return MLPResult(variant, seed, acc, losses[-1], losses, sum(p.numel() for p in model.parameters()))


def save_records(results: list[MLPResult], dataset: str, settings: str, path: Path) -> None:
    """The raw records every figure in results.md and loss_curves.png is rendered from."""
    with open(path, "w") as f:
        f.write(json.dumps({"dataset": dataset, "settings": settings}) + "\n")
        for r in results:
            f.write(json.dumps(asdict(r)) + "\n")


def load_records(path: Path) -> tuple[list[MLPResult], str, str]:
    with open(path) as f:
        head, *rows = [json.loads(line) for line in f if line.strip()]
    return [MLPResult(**r) for r in rows], head["dataset"], head["settings"]


def write_results(results: list[MLPResult], dataset: str, out: Path, settings: str) -> None:
    plt = pyplot()

    out.mkdir(parents=True, exist_ok=True)
    variants = list(dict.fromkeys(r.variant for r in results))
    lines = [
        f"# FFN variants on {dataset}",
        "",
        f"{settings}. Test accuracy and final training loss: mean ± std over seeds "
        f"{sorted({r.seed for r in results})}. Generated by `python -m glu_study.mlp` from runs.jsonl beside it "
        "(`python -m glu_study.mlp --render` re-renders).",
        "",
        "| variant | gated | d_ff | params | test accuracy | final train loss |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for v in variants:
        rs = [r for r in results if r.variant == v]
        acc = np.array([r.test_accuracy for r in rs])
        loss = np.array([r.final_loss for r in rs])
        var = get_variant(v)
        lines.append(
            f"| {var.paper_name} | {'yes' if var.is_gated_act else 'no'} | {var.d_ff(256)} | {rs[0].params:,} | "
            f"{100 * acc.mean():.2f}% ± {100 * acc.std(ddof=1) if len(rs) > 1 else 0:.2f} | "
            f"{loss.mean():.4f} ± {loss.std(ddof=1) if len(rs) > 1 else 0:.4f} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")

    groups = [
        ("paper variants", [v for v in variants if v in PAPER_VARIANTS]),
        ("extras", [v for v in variants if v not in PAPER_VARIANTS]),
    ]
    groups = [g for g in groups if g[1]]
    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 4.5), squeeze=False)
    for ax, (title, vs) in zip(axes[0], groups, strict=True):
        for v in vs:
            curve = np.mean([r.losses for r in results if r.variant == v], axis=0)
            ax.plot(
                range(1, len(curve) + 1),
                curve,
                "-" if get_variant(v).is_gated_act else "--",
                label=get_variant(v).paper_name,
            )
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (mean over seeds)")
        ax.set_title(f"{dataset}: {title} (dashed: non-gated)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    savefig(fig, out / "loss_curves.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m glu_study.mlp", description=__doc__.split("\n\n")[0])
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
    if args.render:
        try:
            results, dataset, settings = load_records(args.out / "runs.jsonl")
        except (OSError, ValueError, KeyError) as e:
            print(f"error: cannot read {args.out / 'runs.jsonl'}: {e}", file=sys.stderr)
            return 2
        write_results(results, dataset, args.out, settings)
        return 0
    try:
        names = (
            list(VARIANTS)
            if args.variants == "all"
            else list(PAPER_VARIANTS)
            if args.variants == "paper"
            else [get_variant(v.strip()).name for v in args.variants.split(",")]
        )
        seeds = [int(s) for s in args.seeds.split(",")]
        split = (
            load_fashion_mnist(args.fashion_mnist, args.limit)
            if args.fashion_mnist
            else load_digits_split(args.limit)
        )
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
