"""The activation gallery (same activations as the registry) and the quick MLP comparison."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from glu_study import gallery, mlp
from glu_study.ffn import activation_fn

SQ = math.sqrt(2 / math.pi)
# f(x), f'(x) written out by hand
FORMULAS = {
    "sigmoid": (lambda x: 1 / (1 + torch.exp(-x)), lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))),
    "tanh": (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
    "relu": (lambda x: torch.clamp(x, min=0), lambda x: (x > 0).float()),
    "leaky_relu": (lambda x: torch.where(x > 0, x, 0.01 * x), lambda x: torch.where(x > 0, 1.0, 0.01)),
    "elu": (
        lambda x: torch.where(x > 0, x, torch.exp(x) - 1),
        lambda x: torch.where(x > 0, 1.0, torch.exp(x)),
    ),
    "gelu_erf": (
        lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
        lambda x: (
            0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
        ),
    ),
    "gelu": (
        lambda x: 0.5 * x * (1 + torch.tanh(SQ * (x + 0.044715 * x**3))),
        lambda x: (
            0.5 * (1 + torch.tanh(SQ * (x + 0.044715 * x**3)))
            + 0.5 * x * (1 - torch.tanh(SQ * (x + 0.044715 * x**3)) ** 2) * SQ * (1 + 3 * 0.044715 * x**2)
        ),
    ),
    "swish": (
        lambda x: x / (1 + torch.exp(-x)),
        lambda x: torch.sigmoid(x) + x * torch.sigmoid(x) * (1 - torch.sigmoid(x)),
    ),
    "mish": (
        lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),
        lambda x: (
            torch.tanh(torch.log1p(torch.exp(x)))
            + x * (1 - torch.tanh(torch.log1p(torch.exp(x))) ** 2) * torch.sigmoid(x)
        ),
    ),
    "relu2": (lambda x: torch.clamp(x, min=0) ** 2, lambda x: 2 * torch.clamp(x, min=0)),
    # xIELU (arXiv 2411.13010) at its initial scalars alpha_p = alpha_n = 0.8, beta = 0.5 (eps = -1e-6 is
    # between the test points' grid and 0, so it does not show here)
    "xielu": (
        lambda x: torch.where(x > 0, 0.8 * x * x + 0.5 * x, 0.8 * (torch.expm1(x) - x) + 0.5 * x),
        lambda x: torch.where(x > 0, 1.6 * x + 0.5, 0.8 * torch.expm1(x) + 0.5),
    ),
}
# transformers stores xIELU's scalars in bf16 (as softplus inverses): alpha_p comes out 0.8008, alpha_n 0.8027
TOLERANCE = {"xielu": dict(rtol=5e-3, atol=5e-3)}


def test_gallery_covers_the_background_activations():
    assert {v for _, v in gallery.ACTIVATIONS} == set(FORMULAS)
    assert gallery.GATED == ["glu", "bilinear", "reglu", "geglu", "swiglu", "reglu2", "xieluglu"]


@pytest.mark.parametrize("variant", list(FORMULAS))
def test_each_curve_matches_its_formula(variant):
    x = torch.tensor([-4.5, -2.0, -0.7, -0.1, 0.3, 1.0, 2.5, 4.9], dtype=torch.float64)
    y, dy = gallery.curve(variant, x)
    f, df = FORMULAS[variant]
    torch.testing.assert_close(y, f(x), **TOLERANCE.get(variant, dict(rtol=1e-6, atol=1e-7)))
    torch.testing.assert_close(dy, df(x).to(x.dtype), **TOLERANCE.get(variant, dict(rtol=1e-5, atol=1e-6)))


def test_gated_surfaces_and_gelu_difference():
    a = torch.tensor([-2.0, 0.5, 1.5])
    b = torch.tensor([3.0, -1.0, 2.0])
    torch.testing.assert_close(gallery.gated_surface("glu", a, b), torch.sigmoid(a) * b)
    torch.testing.assert_close(gallery.gated_surface("bilinear", a, b), a * b)
    torch.testing.assert_close(gallery.gated_surface("reglu", a, b), torch.relu(a) * b)
    torch.testing.assert_close(gallery.gated_surface("swiglu", a, b), a * torch.sigmoid(a) * b)
    torch.testing.assert_close(gallery.gated_surface("reglu2", a, b), torch.relu(a) ** 2 * b)
    err, at = gallery.gelu_tanh_vs_erf_max_diff()
    assert 1e-4 < err < 1e-3 and 2 < abs(at) < 3.5  # the well-known ~4.7e-4 gap
    assert type(activation_fn("gelu")) is type(activation_fn("geglu"))  # the two paper GELUs are one function


def test_gallery_renders_headless(tmp_path):
    assert gallery.main(["--out", str(tmp_path)]) == 0
    for name in ("activations.png", "gated_units.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_committed_figures_and_mlp_comparison_regenerate_byte_for_byte(tmp_path):
    """What `make report` renders besides the studies: the gallery from the code, the MLP comparison from its
    committed records (every registered variant), whose ANOVA reading recomputes with scipy."""
    import json

    from scipy.stats import f_oneway

    from glu_study.ffn import VARIANTS
    from tests.helpers import ROOT

    assert gallery.main(["--out", str(tmp_path / "figures")]) == 0
    for name in ("activations.png", "gated_units.png"):
        assert (tmp_path / "figures" / name).read_bytes() == (
            ROOT / "reports" / "figures" / name
        ).read_bytes()
    out = tmp_path / "mlp"
    out.mkdir()
    (out / "runs.jsonl").write_bytes((ROOT / "reports" / "mlp" / "runs.jsonl").read_bytes())
    assert mlp.main(["--render", "--out", str(out)]) == 0
    for name in ("results.md", "loss_curves.png"):
        assert (out / name).read_bytes() == (ROOT / "reports" / "mlp" / name).read_bytes(), name
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()[1:]]
    assert {r["variant"] for r in rows} == set(VARIANTS)
    groups = [[r["test_accuracy"] for r in rows if r["variant"] == v] for v in VARIANTS]
    assert f"gives p = {f_oneway(*groups).pvalue:.2g}:" in (out / "results.md").read_text()


def test_mlp_two_variants_tiny_subset(tmp_path):
    out = tmp_path / "mlp"
    assert (
        mlp.main(
            [
                "--variants",
                "relu,swiglu",
                "--seeds",
                "0,1",
                "--epochs",
                "3",
                "--limit",
                "300",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = (out / "results.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| FFN_")]
    assert [r.split("|")[1].strip() for r in rows] == ["FFN_ReLU", "FFN_SwiGLU"]
    for r in rows:
        acc = float(r.split("|")[5].split("%")[0])
        assert 30 < acc <= 100  # far above 10% chance after 3 epochs
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    # the table and figure are rendered from the raw records written beside them, and re-render identically
    first = {n: (out / n).read_bytes() for n in ("results.md", "loss_curves.png")}
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1 + 4
    assert mlp.main(["--render", "--out", str(out)]) == 0
    assert {n: (out / n).read_bytes() for n in first} == first


def test_mlp_blocks_are_compute_matched():
    split = mlp.load_digits_split(limit=50)
    r1 = mlp.train_one(split, "relu", 0, epochs=1, batch_size=16, lr=1e-3)
    r2 = mlp.train_one(split, "swiglu", 0, epochs=1, batch_size=16, lr=1e-3)
    ffn_relu, ffn_swiglu = 2 * 64 * 256, 3 * 64 * 168
    assert r1.params - r2.params == ffn_relu - ffn_swiglu


def _write_idx(path, array: np.ndarray):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_loader(tmp_path):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 40), ("t10k", 20)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    split = mlp.load_fashion_mnist(tmp_path)
    assert split.x_train.shape == (40, 784) and split.x_test.shape == (20, 784)
    assert 0 <= float(split.x_train.min()) and float(split.x_train.max()) <= 1
    assert (
        mlp.main(
            [
                "--fashion-mnist",
                str(tmp_path),
                "--variants",
                "glu",
                "--seeds",
                "0",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )


def test_bad_dataset_path_clear_error(tmp_path, capsys):
    assert mlp.main(["--fashion-mnist", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04 not idx")
    assert mlp.main(["--fashion-mnist", str(tmp_path)]) == 2
    assert "missing train-labels" in capsys.readouterr().err
    for stem in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")
    assert mlp.main(["--fashion-mnist", str(tmp_path)]) == 2
    assert "bad magic number" in capsys.readouterr().err
    assert mlp.main(["--variants", "swigluu"]) == 2
    assert "Valid names" in capsys.readouterr().err


def test_gallery_bad_out_is_one_error_line(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert gallery.main(["--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "is not a directory" in err and target.read_text() == "x"
