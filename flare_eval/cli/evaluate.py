"""``flare-eval evaluate``: every team tarball run, scored, ranked and reported, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from flare_eval.errors import EXIT_OK, EXIT_PARTIAL

if TYPE_CHECKING:
    from rich.console import Console

    from flare_eval.organizer import Evaluation

__all__ = ["register", "run_evaluate"]

DESCRIPTION = """\
The organizer's pipeline. For each SUBMISSIONS/<team>.tar (or .tar.gz, made by 'docker save';
the team is the file name), load the image and run every IMAGES/<id>_0000.nii.gz in a fresh
container (as 'flare-eval run': one case and one container at a time, teams one after another,
so timings are fair), then score the predictions against LABELS/<id>.nii.gz (as 'flare-eval
score', on --workers local processes, also with --scheduler), rank every team
with the bootstrap and significance tests (as 'flare-eval rank') and write the report.
Writes into OUT:
  manifest.json           configuration and inputs (tarball SHA-256, file names and sizes)
  status.json             'complete': false until the leaderboard and report are final
  results/<team>/         run outputs (predictions/, efficiency/, runs.csv...) and score
                          outputs (per_case.csv, scores.txt...) side by side
  results/ranking/        rank outputs (leaderboard.csv...), once every team is complete
  report.html, figures/   the report, idem
  failures.csv            every failed load, run and scored case: team, case, stage, status
Crash safe: after a kill or a reboot, run the same command again: it continues where it
stopped and never reruns a finished case. Other options or inputs with the same OUT are
refused (to re-rank finished results differently, use 'flare-eval rank OUT/results').

With --slots, cases run side by side, one container per slot, each pinned to its slot's cores
and GPU (by UUID) and sampling that GPU only; by default the teams go in order, each team's
cases spread over the (identical) slots; --interleave-teams queues one case of each team in
turn. runs.csv records each case's host, slot, cores and GPU. With --scheduler, the cases run
on a dask cluster of slot workers on many hosts (each worker one slot: --resources SLOT=1 and
FLARE_EVAL_SLOT, its own docker engine), and each case's results come back into OUT.
--calibration checks that the slots (or the cluster's slot workers) are alike before anything
runs; the report shows where each team's cases ran and the calibration table.

examples:
  flare-eval evaluate --submissions tarballs --images test/images --labels test/labels \\
      --out eval23 --slots auto --timeout 600
  flare-eval evaluate --submissions tarballs --images test/images --labels test/labels \\
      --out eval23 --timeout 600 --scheduler tcp://10.0.0.5:8786
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` verb."""
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import SLOTS_HELP, add_preset_option, gpu_index

    p = subparsers.add_parser(
        "evaluate", help="run, score, rank and report every team tarball (resumable)",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    p.add_argument("--submissions", required=True, type=Path, metavar="DIR",
                   help="folder of <team>.tar / <team>.tar.gz docker save tarballs")
    p.add_argument("--images", required=True, type=Path, metavar="DIR",
                   help="hidden test images <id>_0000.nii.gz")
    p.add_argument("--labels", required=True, type=Path, metavar="DIR",
                   help="their references <id>.nii.gz")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="kill a case's container after this long (default: no limit, as officially)")
    p.add_argument("--gpu", type=gpu_index, default=None, metavar="INDEX",
                   help="GPU given to every container and sampled; none if unset")
    p.add_argument("--slots", metavar="SPEC", default=None, help=SLOTS_HELP)
    p.add_argument("--interleave-teams", action="store_true",
                   help="with --slots: queue one case of each team in turn (default: team after "
                        "team, a team's cases spread over the slots)")
    p.add_argument("--calibration", metavar="FILE|run", default=None,
                   help="with --slots or --scheduler: refuse slots (a cluster's: its slot workers) "
                        "that differ by more than the tolerance in this 'flare-eval calibrate' "
                        "table, or calibrate them first (run); kept as OUT/calibration.csv and "
                        "shown in the report")
    p.add_argument("--allow-uneven-slots", action="store_true",
                   help="warn about uneven slots instead of refusing them")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="dask.distributed scheduler (tcp://HOST:PORT) to run the containers on "
                        "(slot workers with --resources SLOT=1, docs/scale-out.md); the scoring "
                        "stays here, on --workers")
    p.add_argument("--workers", type=int, default=1,
                   help="local scoring processes")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap samples of the ranking (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    add_preset_option(p, "scoring and ranking rules")
    from flare_eval.cli.score import add_scoring_options

    add_scoring_options(p)
    p.add_argument("--memory", default=None, metavar="SIZE",
                   help="container memory limit, swap included (default: the official 28g, or "
                        "the slot's share of the engine host's RAM where that is less: RAM x the "
                        "slot's cores / the host's; more than the share is refused)")
    p.add_argument("--shm-size", default=None, metavar="SIZE",
                   help="container /dev/shm size (default as --memory)")
    p.add_argument("--pids-limit", type=int, default=None, metavar="N",
                   help="most processes and threads of a container (default: the runner's, "
                   "docs/security.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(handler=run_evaluate)


def _print_summary(console: Console, result: Evaluation) -> None:
    from rich.markup import escape
    from rich.table import Table

    board = Table(title="leaderboard")
    for column in ("rank", "team", "mean_rank"):
        board.add_column(column, justify="left" if column == "team" else "right")
    for row in result.leaderboard.itertuples(index=False):
        board.add_row(str(row.rank), escape(str(row.team)), f"{row.mean_rank:.3f}")
    console.print(board)
    if result.failures.empty:
        console.print("no failures: every team ran and was scored on every case")
    else:
        failures = Table(title="failures per team (all in failures.csv)")
        for column in ("team", "stage", "status", "cases"):
            failures.add_column(column)
        counts = result.failures.groupby(["team", "stage", "status"], sort=True)["case"]
        for (team, stage, status), cases in counts:
            # Team and case names are shown as they are, never read as rich markup.
            failures.add_row(escape(str(team)), str(stage), str(status),
                             escape(", ".join(str(c) for c in cases if c)) or "(all)")
        console.print(failures)
        _print_stderr_tails(console, result)
    console.print(f"report: {result.report}")


def _print_stderr_tails(console: Console, result: Evaluation) -> None:
    """The last lines of stderr of each team's first failed run: what a team needs first (a
    missing module, a traceback's last line), without opening its logs."""
    from rich.markup import escape

    from flare_eval.cli.run import last_lines

    runs = result.failures[result.failures["stage"] == "run"]
    for team, failed in runs.groupby("team", sort=True):
        case = str(failed["case"].iloc[0])
        lines = last_lines(result.out_dir / "results" / str(team) / "logs" / f"{case}.stderr.txt")
        if lines:
            console.print(escape(f"{team}, {case} ({failed['status'].iloc[0]}), last lines of "
                                 "stderr:"), soft_wrap=True)
            for line in lines:
                console.print(escape(f"    | {line}"), soft_wrap=True)


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``flare-eval evaluate``."""
    import contextlib
    import warnings

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from flare_eval.cli.progress import lazy_progress
    from flare_eval.cli.score import scoring_options
    from flare_eval.runner.slots import parse_slots
    from flare_eval.organizer import evaluate
    from flare_eval.runner import DockerOptions
    from flare_eval.runner.sampler import check_gpu

    console = Console(stderr=True)
    preset = scoring_options(args, args.preset)
    if args.gpu is not None:
        check_gpu(args.gpu)  # before any team runs, not after every case failed
    columns = (TextColumn("{task.fields[stage]:<8}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    with contextlib.ExitStack() as stack:
        bar = None if args.no_progress else stack.enter_context(
            lazy_progress(*columns, console=console))

        def progress(stage: str, done: int, total: int, text: str) -> None:
            if bar is not None:
                bar(done, total, escape(text), task=stage, stage=stage)

        stack.enter_context(warnings.catch_warnings())
        # One plain line per warning (no GPU, no NVML...) instead of a source location.
        warnings.showwarning = lambda message, *_, **__: console.print(
            f"flare-eval evaluate: warning: {message}", soft_wrap=True)
        result = evaluate(
            args.submissions, args.images, args.labels, args.out, timeout_s=args.timeout,
            gpu_index=args.gpu, slots=parse_slots(args.slots) if args.slots is not None else None,
            interleave_teams=args.interleave_teams, calibration=args.calibration,
            allow_uneven_slots=args.allow_uneven_slots, preset=preset,
            container=DockerOptions(memory=args.memory, shm_size=args.shm_size,
                                    **({} if args.pids_limit is None
                                       else {"pids_limit": args.pids_limit})),
            n_bootstrap=args.bootstrap, seed=args.seed, workers=args.workers,
            scheduler=args.scheduler, progress=progress,
        )
    _print_summary(console, result)
    return EXIT_PARTIAL if not result.failures.empty else EXIT_OK
