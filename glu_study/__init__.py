"""glu-study: reproduce Shazeer (2020), "GLU Variants Improve Transformer", on a T5 encoder-decoder."""

__version__ = "0.1.0"
