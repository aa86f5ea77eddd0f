"""Build the data a run needs, once, before any training job starts: `python -m glu_study.prepare [overrides]`.

The same overrides as `python -m glu_study.train` (the same conf/ tree; only `data.*` matters): the corpus, the
tokenizer and the memory-mapped token shards go into the cache (glu_study.data.prepared), and the last line
printed is the prepared token directory. Run it once on a CPU node before a GPU sweep; a second `prepare` or
`train` on the same entry waits for this one (saying for whom) and then reuses what it built. A killed `prepare`
resumes at the first shard it had not finished.
"""

from __future__ import annotations

import sys

from glu_study.cli import check_overrides
from glu_study.config import check_data, compose
from glu_study.data import PretrainData
from glu_study.data.prepared import prepare_data
from glu_study.data.pretrain import OVERLAP_N
from glu_study.data.spans import validate_span_settings
from glu_study.errors import exit_status

EXAMPLE = "python -m glu_study.prepare experiment=table1_paper data.num_proc=32   (before a GPU sweep)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(f"usage: python -m glu_study.prepare [overrides]\n\n{__doc__.strip()}\n\nexample: {EXAMPLE}")
        return 0
    check_overrides("config", argv)  # a mistyped key or group: one error line, exit 2

    def body() -> int:
        data = compose(argv).data
        check_data(data)
        validate_span_settings(data.inputs_length, data.noise_density, data.mean_noise_span_length)
        prepared = prepare_data(data, log=lambda m: print(m, file=sys.stderr))
        # the test set's overlap with training, once per (corpus, tokenizer, test set), so that no training job
        # of a sweep computes it (glu_study.data.pretrain.ngram_overlap)
        overlap = PretrainData(data, log=lambda m: None).test_overlap()
        print(f"corpus {prepared.corpus_dir}\ntokenizer {prepared.spiece_model}")
        print(
            f"test-set overlap {overlap:.4f} (share of the test set's {OVERLAP_N}-token windows seen in training)"
        )
        print(prepared.tokens_dir)
        return 0

    return exit_status(body)


if __name__ == "__main__":
    sys.exit(main())
