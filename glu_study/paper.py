"""Published figures we compare against, copied from Shazeer (2020), arXiv:2002.05202 (facts, not results).

Table 1: held-out C4 log-perplexity on span filling, T5-base size, compute matched.
  65,536 steps: mean and standard deviation over 4 runs; 524,288 steps: one run.
Tables 2-4 (dev-set averages after fine-tuning on an examples-proportional GLUE/SuperGLUE/SQuAD mix).
"""

from __future__ import annotations

SOURCE = "Shazeer 2020, GLU Variants Improve Transformer, arXiv:2002.05202"

# variant: (65k mean, 65k std, 524k)
TABLE1: dict[str, tuple[float, float, float]] = {
    "relu": (1.997, 0.005, 1.677),
    "gelu": (1.983, 0.005, 1.679),
    "swish": (1.994, 0.003, 1.683),
    "glu": (1.982, 0.006, 1.663),
    "bilinear": (1.960, 0.005, 1.648),
    "geglu": (1.942, 0.004, 1.633),
    "swiglu": (1.944, 0.010, 1.636),
    "reglu": (1.953, 0.003, 1.645),
}

# variant: (GLUE average, SuperGLUE average, SQuAD EM, SQuAD F1)
FINETUNE: dict[str, tuple[float, float, float, float]] = {
    "relu": (83.80, 72.76, 83.18, 90.87),
    "gelu": (83.86, 72.98, 83.09, 90.79),
    "swish": (83.60, 72.40, 83.25, 90.76),
    "glu": (84.20, 73.95, 82.88, 90.69),
    "geglu": (84.12, 73.96, 83.55, 91.12),
    "bilinear": (83.79, 73.81, 83.82, 91.06),
    "swiglu": (84.36, 74.56, 83.42, 91.03),
    "reglu": (84.67, 73.66, 83.53, 91.18),
}
RAFFEL_2019 = (83.28, 71.36, 80.88, 88.81)
RAFFEL_2019_STD = (0.235, 0.416, 0.343, 0.226)
