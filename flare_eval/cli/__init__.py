"""The ``flare-eval`` command line: one program, verb subcommands, no scoring logic of its own."""

from __future__ import annotations

from flare_eval.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
