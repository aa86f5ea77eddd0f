"""Small image-classification sets for the one-minute MLP comparison (glu_study.mlp): scikit-learn's bundled
digits (no download) and Fashion-MNIST from local IDX files (gzipped or not), as float tensors in [0, 1]."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glu_study.errors import DataError


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
