"""What can go wrong, and what the command line says when it does.

Every command keeps one contract (the README's "Exit codes"): bad input is one `error:` line on stderr and exit 2,
after whatever the command created has been removed; a non-finite training loss is exit 3 (its diagnostic
checkpoint is kept). Each bad-input error below derives from `BadInputError`, so a command catches one type.
"""

from __future__ import annotations

import contextlib
import sys

EXIT_BAD_INPUT, EXIT_NONFINITE = 2, 3


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


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


@contextlib.contextmanager
def cli_exit_codes(cleanup=lambda: None):
    """The command-line contract around a command's body: BadInputError -> `cleanup()` (remove what this
    invocation created; never when another process owns the directory), one `error:` line, exit 2;
    NonFiniteLossError -> one `error:` line, exit 3."""
    try:
        yield
    except BadInputError as e:
        if not isinstance(e, DirectoryBusyError):
            cleanup()
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_NONFINITE) from None


def exit_status(body) -> int:
    """`body()` (returning an exit status) under cli_exit_codes, for a command's `main()`: its status, or that of
    the error whose one line cli_exit_codes printed. `sys.exit(main())` then ends the process with it."""
    try:
        with cli_exit_codes():
            return body()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
