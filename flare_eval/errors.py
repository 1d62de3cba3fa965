"""The error hierarchy of flare-eval and the command-line exit codes.

Each error carries a one-line message that names the argument or file, what was expected and
what came, plus a hint; the CLI prints both without a traceback. A traceback is only shown
for real bugs (any other exception).
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_BUG",
    "EXIT_USAGE",
    "EXIT_INPUT",
    "EXIT_PARTIAL",
    "FlareEvalError",
    "InputError",
    "ConfigError",
    "RunnerError",
    "IncompleteRunError",
]

EXIT_OK = 0
#: An unexpected exception: a bug in flare-eval, reported with its traceback.
EXIT_BUG = 1
#: Wrong arguments or configuration.
EXIT_USAGE = 2
#: A bad input file stopped the run (``--strict``, or nothing could be scored).
EXIT_INPUT = 3
#: The run finished and wrote its tables, but some cases failed (listed in the outputs).
EXIT_PARTIAL = 4


class FlareEvalError(Exception):
    """Base class of the errors flare-eval reports to users.

    Parameters
    ----------
    message
        What went wrong: the file or argument, what was expected and what came.
    hint
        What the user can do about it.
    """

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class InputError(FlareEvalError, ValueError):
    """An input file or array is unusable: shape mismatch, corrupt gzip, NaN, bad spacing..."""

    exit_code = EXIT_INPUT


class ConfigError(FlareEvalError, ValueError):
    """A preset, option or configuration value is invalid or inconsistent."""

    exit_code = EXIT_USAGE


class RunnerError(FlareEvalError, RuntimeError):
    """The container engine or a submission cannot be used at all (not a per-case failure)."""

    exit_code = EXIT_INPUT


class IncompleteRunError(FlareEvalError, RuntimeError):
    """Results of an unfinished or mixed run were asked for as if they were final."""

    exit_code = EXIT_INPUT
