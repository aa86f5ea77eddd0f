"""The tokenizer: a SentencePiece unigram model with T5's ids, trained on the training split (or an existing one
used as is); the token streams it produces are glu_study.data.shards'.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

from glu_study.data.corpora import read_texts, verify_corpus
from glu_study.data.spans import EOS_ID, PAD_ID, UNK_ID
from glu_study.errors import DamagedCacheError, DataError
from glu_study.files import atomic_dir, file_digest, fingerprint, write_text_atomic

SPM_SEED = 20200212  # the sentence sample's seed
TOKENIZER_VERSION = 2  # 2: the sample drawn by sample_sentences (1: by SentencePiece, not reproducible)


def sample_sentences(train_jsonl: Path, limit: int) -> list[str]:
    """The training split's non-empty lines, or `limit` of them drawn uniformly (reservoir sampling, one pass,
    memory for `limit` lines) with a fixed seed, kept in corpus order: the same file gives the same sample."""
    rng = random.Random(SPM_SEED)
    kept: list[tuple[int, str]] = []
    seen = 0
    for text in read_texts(train_jsonl):
        for line in text.split("\n"):
            line = line.strip()
            if not line:
                continue
            if len(kept) < limit:
                kept.append((seen, line))
            else:
                j = rng.randrange(seen + 1)
                if j < limit:
                    kept[j] = (seen, line)
            seen += 1
    return [line for _, line in sorted(kept)]


def train_tokenizer(corpus_dir: Path, cfg, log=print) -> Path:
    """Train (or reuse) spiece.model on the training split: pad 0, eos 1, unk 2, no BOS, like T5's.

    The 100 sentinels are not pieces of the model: HF's T5Tokenizer adds `<extra_id_0..99>` on top, counting
    down from the top of the vocabulary, so the model's vocab is vocab_size + extra_ids.
    """
    import sentencepiece as spm

    if cfg.get("tokenizer_path"):
        return existing_tokenizer(Path(cfg.tokenizer_path))
    key = fingerprint(
        "spm",
        TOKENIZER_VERSION,
        corpus_dir.name,
        cfg.vocab_size,
        cfg.tokenizer_max_sentences,
        cfg.tokenizer_threads,
    )
    final = Path(cfg.cache_dir) / "tokenizer" / f"spm-{key}"
    if (final / "spiece.model").exists():
        return verified_tokenizer(final / "spiece.model")

    verify_corpus(corpus_dir)
    log(
        f"data: training the SentencePiece tokenizer ({cfg.vocab_size:,} pieces, up to "
        f"{cfg.tokenizer_max_sentences:,} sentences of {corpus_dir.name}): first run only, about a minute for the "
        "embedded corpus on 2 cores"
    )
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            # The sample is drawn here, not by SentencePiece: its own sampling and shuffling gave a different
            # model in every fresh process whatever spm.set_random_generator_seed said (the seed is
            # thread-local), so the same corpus gave another token stream, unigram floor and test set on
            # every new machine. Given the same sentences in the same order and the same thread count,
            # its training is deterministic.
            sentence_iterator=iter(sample_sentences(corpus_dir / "train.jsonl", cfg.tokenizer_max_sentences)),
            model_writer=model,
            model_type="unigram",
            vocab_size=cfg.vocab_size,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            character_coverage=0.9995,
            input_sentence_size=0,  # every sentence given: the sample above
            shuffle_input_sentence=False,
            num_threads=cfg.tokenizer_threads,  # part of the model: the EM sums per thread (so part of the key)
            minloglevel=2,
        )
    except RuntimeError as e:  # e.g. a vocabulary larger than the corpus supports
        raise DataError(f"SentencePiece training failed for data.vocab_size={cfg.vocab_size}: {e}") from None
    with atomic_dir(final) as tmp:
        (tmp / "spiece.model").write_bytes(model.getvalue())
        (tmp / DIGEST).write_text(hashlib.sha256(model.getvalue()).hexdigest() + "\n")
    return final / "spiece.model"


DIGEST = "spiece.model.sha256"  # beside a trained model in its cache entry: its SHA-256 when it was trained


def verified_tokenizer(spiece_model: Path) -> Path:
    """A cached spiece.model once it matches the SHA-256 recorded when it was trained (an entry from before the
    digest was recorded gets it now, if the model loads), else DamagedCacheError naming the file."""
    import sentencepiece as spm

    rebuild = f"remove {spiece_model.parent} and run the same command again to retrain it"
    digest = spiece_model.with_name(DIGEST)
    actual = file_digest(spiece_model)
    if digest.is_file():
        if digest.read_text().strip() != actual:
            raise DamagedCacheError(
                f"{spiece_model} is damaged (it does not match the SHA-256 recorded when it was trained): {rebuild}"
            )
        return spiece_model
    try:
        spm.SentencePieceProcessor(model_file=str(spiece_model))
    except Exception as e:  # sentencepiece raises RuntimeError / OSError for a file that is not a model
        raise DamagedCacheError(f"{spiece_model} is damaged ({e}): {rebuild}") from None
    write_text_atomic(digest, actual + "\n")
    return spiece_model


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


def tokenizer_fingerprint(spiece_model: Path) -> str:
    """The first 16 hex digits of the model file's SHA-256: what a run tokenised with, whoever trained it."""
    return hashlib.sha256(Path(spiece_model).read_bytes()).hexdigest()[:16]


def tokenizer_id(spiece_model: Path) -> str:
    """A name for the tokenizer in cache keys: its cache entry's, or the content hash of a user's model file."""
    if spiece_model.parent.name.startswith("spm-"):
        return spiece_model.parent.name
    return "file-" + tokenizer_fingerprint(spiece_model)


def load_hf_tokenizer(spiece_model: str | Path):
    """The tokenizer users load from an export.

    transformers 5 converts a SentencePiece file only in `from_pretrained` (a directory holding
    spiece.model); `T5Tokenizer(vocab_file=...)` there silently builds a 104-token placeholder vocabulary.
    """
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(str(Path(spiece_model).parent), extra_ids=100)
