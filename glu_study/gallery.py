"""The activation-function background of the study, drawn with the very activations the models run.

    python -m glu_study.gallery [--out reports/figures]

activations.png: each activation and its derivative (by autograd) on [-5, 5] — sigmoid, tanh, ReLU, LeakyReLU,
ELU, GELU (exact erf and the tanh approximation), Swish/SiLU, Mish, and the later challengers squared ReLU and
xIELU (at its initial scalars; they are learned per block). gated_units.png: the response surface phi(a) * b of
GLU, Bilinear, ReGLU, GEGLU, SwiGLU, ReGLU² and xIELUGLU, where a = xW and b = xV are the two projections.
Every curve comes from `glu_study.ffn.activation_fn`, i.e. the HF ACT2FN object the T5 block applies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from glu_study.config import ROOT
from glu_study.errors import DataError, exit_status
from glu_study.ffn import activation_fn, get_variant
from glu_study.reporting.figures import pyplot, savefig

# (label, registry variant whose activation is drawn)
ACTIVATIONS = [
    ("sigmoid", "sigmoid"),
    ("tanh", "tanh"),
    ("ReLU", "relu"),
    ("LeakyReLU (0.01)", "leaky_relu"),
    ("ELU", "elu"),
    ("GELU, exact erf", "gelu_erf"),
    ("GELU, tanh approx.", "gelu"),
    ("Swish / SiLU", "swish"),
    ("Mish", "mish"),
    ("ReLU² (Primer)", "relu2"),
    ("xIELU, initial scalars", "xielu"),
]
GATED = ["glu", "bilinear", "reglu", "geglu", "swiglu", "reglu2", "xieluglu"]
COLUMNS = 4  # panels per row in both figures


def curve(variant: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x), f'(x)) of a variant's activation, the derivative by autograd."""
    x = x.clone().requires_grad_(True)
    y = activation_fn(variant)(x)
    (dy,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), dy


def gelu_tanh_vs_erf_max_diff(lo: float = -5.0, hi: float = 5.0, n: int = 100_001) -> tuple[float, float]:
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    diff = (activation_fn("gelu")(x) - activation_fn("gelu_erf")(x)).abs()
    i = int(diff.argmax())
    return float(diff[i]), float(x[i])


def gated_surface(variant: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """phi(a) * b: the gated unit's output for gate pre-activation a and linear branch b."""
    return activation_fn(variant)(a).detach() * b  # xIELU: its scalars are parameters


def plot_activations(path: Path) -> None:
    plt = pyplot()

    # float64: float32 kernels (erf, exp) differ by CPU instruction set in the last bits, enough to move a few
    # anti-aliased pixels; in double the figure is the same PNG on every machine
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    rows = -(-len(ACTIVATIONS) // COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(3.7 * COLUMNS, 3 * rows), sharex=True)
    for ax in axes.flat[len(ACTIVATIONS) :]:
        ax.set_axis_off()
    for ax, (label, variant) in zip(axes.flat, ACTIVATIONS, strict=False):
        y, dy = curve(variant, x)
        ax.plot(x.numpy(), y.numpy(), label="f(x)")
        ax.plot(x.numpy(), dy.numpy(), "--", label="f'(x)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(f"{label}  [{get_variant(variant).dense_act_fn}]", fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    err, at = gelu_tanh_vs_erf_max_diff()
    fig.suptitle(
        f"Activations and derivatives on [-5, 5]; |GELU_tanh - GELU_erf| <= {err:.2e} (at x = {at:.3f})"
    )
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)


def plot_gated_units(path: Path) -> None:
    plt = pyplot()

    g = torch.linspace(-3, 3, 241, dtype=torch.float64)  # as plot_activations: the same PNG on every machine
    a, b = torch.meshgrid(g, g, indexing="xy")
    rows = -(-len(GATED) // COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(4 * COLUMNS, 3.8 * rows))
    for ax in axes.flat[len(GATED) :]:
        ax.set_axis_off()
    for ax, v in zip(axes.flat, GATED, strict=False):
        z = gated_surface(v, a, b).numpy()
        lim = float(abs(z).max())
        im = ax.pcolormesh(a.numpy(), b.numpy(), z, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
        ax.contour(a.numpy(), b.numpy(), z, levels=9, colors="k", linewidths=0.4)
        ax.set_title(f"{get_variant(v).paper_name}: phi(a)·b")
        ax.set_xlabel("a = xW (gate)")
        ax.set_ylabel("b = xV")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m glu_study.gallery",
        description="Activation and gated-unit figures.",
        epilog="example: python -m glu_study.gallery --out /tmp/figures",
    )
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "figures")
    args = p.parse_args(argv)
    return exit_status(lambda: render(args.out))  # bad input: one error line, exit 2, nothing written


def render(out: Path) -> int:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    plot_activations(out / "activations.png")
    plot_gated_units(out / "gated_units.png")
    err, at = gelu_tanh_vs_erf_max_diff()
    print(f"max |GELU tanh approximation - GELU exact erf| on [-5, 5]: {err:.3e} at x = {at:.4f}")
    print(f"wrote {out / 'activations.png'} and {out / 'gated_units.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
