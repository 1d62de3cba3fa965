"""Entry point of ``flare-eval``: builds the parser from the verb modules and maps errors to exit codes.

Each verb lives in its own module ``flare_eval.cli.<verb>`` (``-`` spelled ``_``) exposing ``register(subparsers)``;
the module sets ``handler`` on its parser, a function ``(args) -> int`` (an exit code).
Verb modules import their heavy dependencies inside the handler so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from flare_eval import __version__
from flare_eval.cli.parser import ArgumentParser, HelpFormatter
from flare_eval.errors import EXIT_BUG, FlareEvalError

__all__ = ["VERBS", "HelpFormatter", "build_parser", "main"]

#: Verb modules, in the order ``--help`` lists them.
VERBS: tuple[str, ...] = ("score", "phantoms", "run", "ensemble", "rank", "report", "evaluate",
                          "calibrate", "demo", "presets", "bundle", "grand-challenge")

_EPILOG = """\
exit codes: 0 done; 1 a bug in flare-eval (traceback shown); 2 wrong arguments;
3 bad input stopped the run; 4 finished, but some cases failed (see the outputs);
141 the output was closed early (e.g. piped into head).
Run 'flare-eval VERB -h' for the options of each verb."""


def build_parser() -> argparse.ArgumentParser:
    """The full ``flare-eval`` parser with every verb registered."""
    parser = ArgumentParser(
        prog="flare-eval",
        description="Score, time and rank submissions to FLARE-style abdominal CT segmentation "
        "challenges (FLARE 2023 rules by default).",
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flare-eval {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        importlib.import_module(f"flare_eval.cli.{verb.replace('-', '_')}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flare-eval``; returns the exit code (also the process's, through the script)."""
    try:
        try:
            return _run(argv)
        finally:
            # here, not at interpreter exit, where a closed pipe would print "Exception ignored"
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (``flare-eval demo | head -1``): stop quietly. Later writes, the
        # interpreter's last flush included, go to devnull. 141 (128 + SIGPIPE) is what the shell
        # reports for a C tool stopped this way, so ``set -o pipefail`` scripts see the same.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _run(argv: Sequence[str] | None) -> int:
    """:func:`main` but for a closed standard output."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except FlareEvalError as err:
        print(f"flare-eval {args.verb}: error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"  hint: {err.hint}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"flare-eval {args.verb}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # not a bug: main handles it
        raise
    except Exception:  # a bug: show everything
        traceback.print_exc()
        print(f"flare-eval {args.verb}: internal error (a bug, please report it with the "
              "traceback above)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
