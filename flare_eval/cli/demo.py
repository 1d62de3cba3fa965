"""``flare-eval demo``: a whole synthetic challenge, scored, ranked and reported."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "run_demo_verb"]

_DESCRIPTION = """\
Build a synthetic challenge with no data and no docker: CT-like phantoms, simulated teams
with different error and efficiency profiles (one fails a case or two), score every team,
rank them with the bootstrap and write DIR/report.html.

DIR gets challenge/ (phantoms), submissions/<team>/, results/<team>/ (score outputs and a
simulated runs.csv), results/ranking/ (rank outputs), figures/ and report.html.

example:
  flare-eval demo --out demo && xdg-open demo/report.html   (macOS: open; Windows: start)"""


def register(subparsers: Any) -> None:
    """Add the ``demo`` verb."""
    from flare_eval.cli.main import HelpFormatter

    parser = subparsers.add_parser(
        "demo", help="synthetic challenge end to end: phantoms, teams, scores, ranking, report",
        description=_DESCRIPTION, formatter_class=HelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--cases", type=int, default=8, help="phantom cases")
    parser.add_argument("--teams", type=int, default=5, help="simulated teams (1 to 8)")
    parser.add_argument("--bootstrap", type=int, default=200, metavar="N",
                        help="bootstrap samples of the ranking")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.set_defaults(handler=run_demo_verb)


def run_demo_verb(args: argparse.Namespace) -> int:
    """Handler of ``flare-eval demo``: runs the demo, prints the leaderboard and how to open
    the report."""
    import pandas as pd

    from flare_eval.cli.progress import lazy_progress
    from flare_eval.demo import run_demo
    from flare_eval.errors import EXIT_OK
    from flare_eval.report.figures_ranking import leaderboard_text
    from flare_eval.io.layout import RANKING_FOLDER

    from rich.console import Console

    # the bar on stderr: stdout holds only the leaderboard and the report path (pipe-friendly)
    with lazy_progress(transient=True, console=Console(stderr=True)) as bar:
        path = run_demo(args.out, cases=args.cases, teams=args.teams, n_bootstrap=args.bootstrap,
                        seed=args.seed,
                        progress=lambda stage, done, total: bar(done, total, stage, stage))
    board = leaderboard_text(pd.read_csv(args.out / "results" / RANKING_FOLDER / "leaderboard.csv"))
    # plain text, not a rich table: a rich table squeezes its columns into the terminal width
    print("Leaderboard (lower mean rank is better):")
    print(board.to_string(index=False))
    print(f"wrote {path} (figures as PNG, SVG and CSV in {args.out / 'figures'}); open it with\n"
          f"  Linux:   xdg-open {path}\n"
          f"  macOS:   open {path}\n"
          f'  Windows: start "" "{path}"')
    return EXIT_OK
