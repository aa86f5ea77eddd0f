"""Everything a run's data needs, built once per cache entry: corpus -> tokenizer -> token shards.

`prepare_data` is what `python -m glu_study.prepare` runs, and what every training process runs before it
reads its data: one process builds (under a lock in the cache, across processes and machines that share it)
while any other waits and then finds every entry built. Under torchrun every rank calls it before the first
collective, so rank 0 (or whichever comes first) builds and the others wait on the lock, not on a collective.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from glu_study.data.corpora import prepare_corpus
from glu_study.data.shards import build_split
from glu_study.data.tokenizer import tokenizer_id, train_tokenizer
from glu_study.errors import EnvironmentFault
from glu_study.files import build_lock, fingerprint

SPLITS = ("train", "heldout")
NOT_PREPARATION = ("cache_dir", "num_proc", "eval_examples", "val_examples", "eval_seed")


@dataclass(frozen=True)
class Prepared:
    corpus_dir: Path  # train.jsonl, heldout.jsonl, stats.json
    spiece_model: Path
    tokens_dir: Path  # <split>.bin (memory-mapped by readers), <split>.counts.npy, <split>.json
    pieces: int  # SentencePiece pieces (the model adds the sentinels on top)


def processes(cfg) -> int:
    """`data.num_proc`, or (0) the CPUs this process may use."""
    return cfg.num_proc or len(os.sched_getaffinity(0))


def prepare_data(cfg, log=print) -> Prepared:
    """Build (or find) the corpus, the tokenizer and the token shards for a data config. A cache that cannot be
    written (not a directory, read-only, full) is an EnvironmentFault naming the path."""
    try:
        return build_or_find(cfg, log)
    except OSError as e:
        if e.errno not in CACHE_ERRNOS:  # e.g. a network error while streaming C4: said where it happens
            raise
        raise EnvironmentFault(cache_fault(e, Path(cfg.cache_dir))) from None


# What a cache directory that cannot be used looks like to the OS: no permission, a read-only file system, a file
# where a directory should be (or the reverse), a full disk or quota.
CACHE_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENOSPC,
    errno.EDQUOT,
}


def cache_fault(e: OSError, cache_dir: Path) -> str:
    """What went wrong with the cache, the file it concerns, and what to do."""
    path = e.filename or cache_dir
    if e.errno == errno.ENOSPC:
        return (
            f"no space left on the device writing {path}: free space, or set GLU_STUDY_CACHE to another disk"
        )
    if e.errno == errno.ENOTDIR:
        reason = "a part of the path is a file, not a directory"
    else:
        reason = e.strerror or type(e).__name__
    return (
        f"the data cache cannot be used at {path} ({reason}): set data.cache_dir or GLU_STUDY_CACHE to a "
        f"writable directory (now {cache_dir})"
    )


def build_or_find(cfg, log) -> Prepared:
    import sentencepiece as spm

    settings = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    key = fingerprint({k: v for k, v in settings.items() if k not in NOT_PREPARATION})
    with build_lock(Path(cfg.cache_dir) / "locks" / f"data-{key}.lock", "this data", log=log):
        corpus_dir = prepare_corpus(cfg, log=log)
        spiece_model = train_tokenizer(corpus_dir, cfg, log=log)
        pieces = spm.SentencePieceProcessor(model_file=str(spiece_model)).get_piece_size()
        tokens_dir = Path(cfg.cache_dir) / "tokens" / f"{corpus_dir.name}-{tokenizer_id(spiece_model)}"
        for split in SPLITS:
            build_split(
                corpus_dir / f"{split}.jsonl",
                spiece_model,
                pieces,
                tokens_dir,
                split,
                processes(cfg),
                log=log,
            )
    return Prepared(corpus_dir, spiece_model, tokens_dir, pieces)
