"""``flare-eval rank``: rank the teams of a results folder or a tidy table."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from flare_eval.ranking import Bootstrap

__all__ = ["register", "run_rank"]

_DESCRIPTION = """\
Rank teams by the FLARE 2023 rule (default): per case and metric (organ DSC/NSD, lesion DSC/NSD,
runtime, GPU AUC) all teams are ranked (ties min, a missing value worst); a team's score is the
mean of all its ranks. Then bootstrap stability (Kendall's tau-b of each sample's ranking with
the full one) and one-sided paired Wilcoxon tests between all teams (Holm-adjusted).

RESULTS is a folder RESULTS/<team>/ holding each team's 'flare-eval score' outputs (per_case.csv,
cases.csv) and optionally its 'flare-eval run' outputs (runs.csv), or a tidy CSV/Parquet table
with columns team, case, metric, value.

Writes into OUT: ranking_table.csv, case_ranks.csv, leaderboard.csv, bootstrap_kendall.csv,
bootstrap_ranks.csv, bootstrap_summary.csv, bootstrap_kendall_by_metric.csv (per-metric taus),
metric_ranks.csv (each metric ranked alone, challengeR's per-task ranking), significance.csv,
ranking.json; with --challenger-csv FILE also the table in challengeR's long format
(task, case, algorithm, value) for a cross-check in R.

Teams scored with different options (run.json: NSD threshold, lesion options...) are refused
unless --allow-mixed-options."""


def _na_treat(text: str) -> float | str:
    """``worst``, ``drop`` or a number (argparse type of ``--na-treat``)."""
    if text in ("worst", "drop"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected worst, drop or a number, got {text!r}") from None


def register(subparsers: Any) -> None:
    """Add the ``rank`` verb."""
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import add_preset_option
    # the definition's lists: cheap to import, so --help loads neither numpy nor scipy
    from flare_eval.definition import AGGREGATES, SCHEMES, TIE_METHODS

    parser = subparsers.add_parser(
        "rank",
        help="rank teams, bootstrap stability and pairwise significance",
        description=_DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("results", metavar="RESULTS",
                        help="results folder RESULTS/<team>/ or a tidy .csv/.parquet table")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_preset_option(parser, "metrics, directions, floors and failure penalties")
    parser.add_argument("--scheme", default=None, choices=SCHEMES,
                        help="flare: pooled rank-then-aggregate over cases and metrics; the "
                             "others are challengeR's per-metric schemes, combined by mean rank "
                             "(default: the preset's ranking_scheme, flare)")
    parser.add_argument("--aggregate", default=None, choices=AGGREGATES,
                        help="every criterion's aggregate of its cases, for rank-then-aggregate "
                             "and aggregate-then-rank (default: each criterion's in the preset, "
                             "mean)")
    parser.add_argument("--ties", default=None, choices=TIE_METHODS,
                        help="how tied values share ranks (default: the preset's, min)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap samples of the cases (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    parser.add_argument("--challenger-compat", action="store_true",
                        help="rank a case drawn m times as one block, as challengeR does "
                             "(inflates instability; for comparison with published results)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of the Wilcoxon tests (p <= alpha, as challengeR)")
    parser.add_argument("--p-adjust", default="holm", choices=["holm", "none"],
                        help="adjustment of the Wilcoxon p-values over the K(K-1) ordered pairs")
    parser.add_argument("--na-treat", type=_na_treat, default="worst", metavar="worst|drop|NUMBER",
                        help="aggregate-then-rank: a missing value is the metric's worst value, "
                             "dropped (na.rm), or this number (challengeR's na.treat)")
    parser.add_argument("--runtime-tolerance", type=float, default=None, metavar="SECONDS",
                        help="runtimes under this tie (preset: 15; 0 removes the floor)")
    parser.add_argument("--gpu-tolerance", type=float, default=None, metavar="MIB",
                        help="GPU tolerance the runs were measured with (preset: 4096); runs "
                             "measured with another are refused")
    parser.add_argument("--allow-mixed-options", action="store_true",
                        help="rank teams scored with different options instead of refusing")
    parser.add_argument("--challenger-csv", default=None, metavar="FILE",
                        help="also write the table as challengeR's long table "
                             "task, case, algorithm, value")
    parser.set_defaults(handler=run_rank)


def _print_leaderboard(leaderboard: pd.DataFrame, boot: Bootstrap | None, scheme: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"flare-eval rank ({scheme})")
    metric_columns = list(leaderboard.columns[3:])
    for column in ["rank", "team", "mean_rank", *metric_columns]:
        table.add_column(column, justify="left" if column == "team" else "right")
    summary = None
    if boot is not None:
        summary = boot.summary().set_index("team")
        for column in ("median rank [95%]", "winner %"):
            table.add_column(column, justify="right")
    for row in leaderboard.itertuples(index=False):
        cells = [str(row[0]), str(row[1]), f"{row[2]:.3f}"]
        cells += [f"{v:.4g}" for v in row[3:]]
        if summary is not None:
            s = summary.loc[row[1]]
            cells += [f"{s.median_rank:g} [{s.rank_q025:g}, {s.rank_q975:g}]",
                      f"{s.winner_frequency:.1%}"]
        table.add_row(*cells)
    console = Console()
    # piped output has no terminal width: give the table room instead of 80 columns
    (console if console.is_terminal else Console(width=160)).print(table)


def run_rank(args: argparse.Namespace) -> int:
    """Handler of ``flare-eval rank``."""
    import sys

    from flare_eval.errors import EXIT_OK
    from flare_eval.presets import get_preset
    from flare_eval.ranking.pipeline import rank_results

    overrides = {"runtime_tolerance_s": args.runtime_tolerance,
                 "gpu_tolerance_mib": args.gpu_tolerance}
    preset = get_preset(args.preset).with_overrides(
        **{k: v for k, v in overrides.items() if v is not None})
    outputs = rank_results(
        args.results, args.out, preset=preset, scheme=args.scheme,
        ties=args.ties, aggregate=args.aggregate, alpha=args.alpha, n_bootstrap=args.bootstrap,
        seed=args.seed, challenger_compat=args.challenger_compat, p_adjust=args.p_adjust,
        allow_mixed_options=args.allow_mixed_options, challenger_csv=args.challenger_csv,
        na_treat=args.na_treat,
    )
    for message in outputs.warnings:
        print(f"flare-eval rank: warning: {message}", file=sys.stderr)
    _print_leaderboard(outputs.leaderboard, outputs.bootstrap, args.scheme or preset.ranking_scheme)
    return EXIT_OK
