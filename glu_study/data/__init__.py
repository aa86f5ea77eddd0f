"""Span-corruption pretraining data, as in T5 (Raffel et al. 2019) and the GLU-variants paper.

    spans.py      T5's span arithmetic: lengths, noise mask, sentinels (ported from t5/data/preprocessors.py)
    corpora.py    the embedded docstring corpus, local text files, C4 -> train / held-out JSON lines in the cache
    tokenizer.py  SentencePiece with T5's ids, trained on the training split or an existing model used as is
    shards.py     token streams written once as fixed-width shards (in parallel, resumably) and memory-mapped
    prepared.py   corpus -> tokenizer -> shards, once per cache entry (a lock: one builder, the others wait)
    pretrain.py   PretrainData: packed chunks -> (input_ids, labels) by a global example index
    loader.py     a DataLoader over those indices: batches built ahead of the step, in worker processes
    images.py     the MLP comparison's image sets

Everything written to the cache goes to a temporary path first and is renamed into place (glu_study.files), so
a killed process never leaves a half-written entry that a later run would trust.
"""

from glu_study.data.pretrain import PretrainData
from glu_study.data.spans import (
    EOS_ID,
    LABEL_PAD,
    PAD_ID,
    compute_input_and_target_lengths,
    random_spans_noise_mask,
    span_corrupt,
)
from glu_study.data.tokenizer import load_hf_tokenizer

__all__ = [
    "EOS_ID",
    "LABEL_PAD",
    "PAD_ID",
    "PretrainData",
    "compute_input_and_target_lengths",
    "load_hf_tokenizer",
    "random_spans_noise_mask",
    "span_corrupt",
]
