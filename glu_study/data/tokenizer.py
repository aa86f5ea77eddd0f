"""The tokenizer: a SentencePiece unigram model with T5's ids, trained on the training split (or an existing one
used as is); the token streams it produces are glu_study.data.shards'.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from glu_study.data.corpora import read_texts
from glu_study.data.spans import EOS_ID, PAD_ID, UNK_ID
from glu_study.errors import DataError
from glu_study.files import atomic_dir, fingerprint

SPM_SEED = 20200212


def train_tokenizer(corpus_dir: Path, cfg) -> Path:
    """Train (or reuse) spiece.model on the training split: pad 0, eos 1, unk 2, no BOS, like T5's.

    The 100 sentinels are not pieces of the model: HF's T5Tokenizer adds `<extra_id_0..99>` on top, counting
    down from the top of the vocabulary, so the model's vocab is vocab_size + extra_ids.
    """
    import sentencepiece as spm

    if cfg.get("tokenizer_path"):
        return existing_tokenizer(Path(cfg.tokenizer_path))
    key = fingerprint("spm", corpus_dir.name, cfg.vocab_size, cfg.tokenizer_max_sentences, SPM_SEED)
    final = Path(cfg.cache_dir) / "tokenizer" / f"spm-{key}"
    if (final / "spiece.model").exists():
        return final / "spiece.model"

    def sentences():
        for text in read_texts(corpus_dir / "train.jsonl"):
            for line in text.split("\n"):
                if line.strip():
                    yield line.strip()

    model = io.BytesIO()
    # SentencePiece samples and shuffles input sentences with a random seed of its own: fix it, so the same
    # corpus and settings always give the same tokenizer (and so the same token stream and eval set).
    spm.set_random_generator_seed(SPM_SEED)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_writer=model,
            model_type="unigram",
            vocab_size=cfg.vocab_size,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            character_coverage=0.9995,
            input_sentence_size=cfg.tokenizer_max_sentences,
            shuffle_input_sentence=True,
            num_threads=cfg.tokenizer_threads,
            minloglevel=2,
        )
    except RuntimeError as e:  # e.g. a vocabulary larger than the corpus supports
        raise DataError(f"SentencePiece training failed for data.vocab_size={cfg.vocab_size}: {e}") from None
    with atomic_dir(final) as tmp:
        (tmp / "spiece.model").write_bytes(model.getvalue())
    return final / "spiece.model"


def existing_tokenizer(path: Path) -> Path:
    """`data.tokenizer_path`: a SentencePiece model used as is (no training; the export's spiece.model is this
    file byte for byte). It must load and keep T5's ids for padding and end of sequence."""
    import sentencepiece as spm

    if not path.is_file():
        raise DataError(f"data.tokenizer_path={path}: no such file")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except Exception as e:  # sentencepiece raises RuntimeError / OSError for a file that is not a model
        raise DataError(f"data.tokenizer_path={path}: not a SentencePiece model ({e})") from None
    if sp.pad_id() != PAD_ID or sp.eos_id() != EOS_ID:
        raise DataError(
            f"data.tokenizer_path={path}: pad id {sp.pad_id()} and eos id {sp.eos_id()}, T5 needs {PAD_ID} and {EOS_ID}"
        )
    return path.resolve()


def tokenizer_id(spiece_model: Path) -> str:
    """A name for the tokenizer in cache keys: its cache entry's, or the content hash of a user's model file."""
    if spiece_model.parent.name.startswith("spm-"):
        return spiece_model.parent.name
    return "file-" + hashlib.sha256(spiece_model.read_bytes()).hexdigest()[:16]


def load_hf_tokenizer(spiece_model: str | Path):
    """The tokenizer users load from an export.

    transformers 5 converts a SentencePiece file only in `from_pretrained` (a directory holding
    spiece.model); `T5Tokenizer(vocab_file=...)` there silently builds a 104-token placeholder vocabulary.
    """
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(str(Path(spiece_model).parent), extra_ids=100)
