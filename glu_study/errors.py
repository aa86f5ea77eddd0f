"""What can go wrong, and what the command line says when it does.

Every command keeps one contract (the README's "Exit codes"): bad input is one `error:` line on stderr and exit 2,
after whatever the command created has been removed; a non-finite training loss is exit 3 (its diagnostic
checkpoint is kept). Each bad-input error below derives from `BadInputError`, so a command catches one type.
"""

from __future__ import annotations

import contextlib
import sys

EXIT_BAD_INPUT, EXIT_NONFINITE = 2, 3
EXIT_ENVIRONMENT = (
    4  # a fault of the machine, not of the input: a cache or disk that cannot be written or read back
)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): the shell's 128 + 2, so scripts and sweeps stop too


class BadInputError(ValueError):
    """A setting, file or name the user gave that cannot work; raised before anything is written."""


class ConfigError(BadInputError):
    """A configuration value outside what the code supports (trainer settings, model sizes, ...)."""


class DataError(BadInputError):
    """Bad data settings or input files (corpora, task splits, exports)."""


class UnknownVariantError(ConfigError):
    """`ffn=` names no registered FFN variant."""


class UnknownTaskError(ConfigError):
    """`task=` names no fine-tuning task or mixture."""


class DirectoryBusyError(ConfigError):
    """Another process is writing this run directory (it holds the lock); nothing of it may be touched."""


class EnvironmentFault(RuntimeError):
    """The machine, not the input: a cache directory that cannot be written, a cached file damaged since it was
    built, a disk that filled up. Its message names the file and what to do; exit EXIT_ENVIRONMENT."""


class DamagedCacheError(EnvironmentFault):
    """A cached file (token stream, counts, tokenizer, corpus) that does not match what was recorded when it was
    built, or cannot be read: it is never used."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


@contextlib.contextmanager
def cli_exit_codes(cleanup=lambda: None):
    """The command-line contract around a command's body: BadInputError -> `cleanup()` (remove what this
    invocation created; never when another process owns the directory), one `error:` line, exit 2;
    NonFiniteLossError -> one `error:` line, exit 3; EnvironmentFault -> `cleanup()`, one `error:` line, exit 4;
    Ctrl-C outside the training loop (which checkpoints first,
    glu_study.training.loop.StopSignals) or a second Ctrl-C inside it -> one `error:` line, exit 130, and nothing
    removed (everything kept is complete: files are written whole or not at all)."""
    try:
        yield
    except KeyboardInterrupt:
        print(
            "error: interrupted (Ctrl-C); what was finished is kept (the last checkpoint, finished cache pieces): "
            "run the same command to continue",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_INTERRUPTED) from None
    except BadInputError as e:
        if not isinstance(e, DirectoryBusyError):
            cleanup()
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_NONFINITE) from None
    except EnvironmentFault as e:
        cleanup()
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_ENVIRONMENT) from None


def exit_status(body) -> int:
    """`body()` (returning an exit status) under cli_exit_codes, for a command's `main()`: its status, or that of
    the error whose one line cli_exit_codes printed. `sys.exit(main())` then ends the process with it."""
    try:
        with cli_exit_codes():
            return body()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
