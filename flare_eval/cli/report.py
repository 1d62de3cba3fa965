"""``flare-eval report``: one self-contained HTML report of a ranked challenge."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "run_report"]

_DESCRIPTION = """\
Write one self-contained HTML file (figures embedded as PNG, inline CSS, nothing fetched):
the leaderboard, every figure (accuracy against efficiency, radar, Kendall's tau, bootstrap
blob plot, ranking heatmap, podium, significance maps, per-organ and lesion plots), the
missing and failed cases, where each team's cases ran (host, slot, cores, GPU and count, from
runs.csv), the slots' calibration (with --calibration), the configuration and the software
versions.

RESULTS_DIR holds one folder per team with its 'flare-eval score' outputs (and optionally its
'flare-eval run' runs.csv) and RESULTS_DIR/ranking/ with the outputs of
'flare-eval rank RESULTS_DIR --out RESULTS_DIR/ranking'.

examples:
  flare-eval report results --out report.html --figures figures
  flare-eval report eval23/results --out report.html --calibration eval23/calibration.csv"""


def register(subparsers: Any) -> None:
    """Add the ``report`` verb."""
    from flare_eval.cli.main import HelpFormatter

    parser = subparsers.add_parser(
        "report", help="self-contained HTML report with every figure",
        description=_DESCRIPTION, formatter_class=HelpFormatter,
    )
    parser.add_argument("results", metavar="RESULTS_DIR", type=Path,
                        help="team folders and a ranking/ folder")
    parser.add_argument("--out", required=True, type=Path, metavar="HTML", help="report file")
    parser.add_argument("--figures", type=Path, default=None, metavar="DIR",
                        help="also save every figure there as PNG, SVG and CSV")
    parser.add_argument("--top", type=int, default=5,
                        help="teams shown in the radar chart and the per-team plots")
    parser.add_argument("--title", default="flare-eval challenge report", help="page title")
    parser.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                        help="a 'flare-eval calibrate' table to show (evaluate --calibration "
                             "keeps its own as OUT/calibration.csv)")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Handler of ``flare-eval report``."""
    from flare_eval.errors import EXIT_OK, ConfigError
    from flare_eval.report import write_report

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    path = write_report(args.results, args.out, figures_dir=args.figures, top=args.top,
                        title=args.title, calibration=args.calibration)
    print(f"wrote {path}")
    return EXIT_OK
