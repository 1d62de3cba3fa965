"""``flare-eval grand-challenge evaluate``: the evaluation method of a grand-challenge.org phase."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_eval.errors import EXIT_OK, EXIT_PARTIAL

__all__ = ["register"]

DESCRIPTION = """\
Run as a grand-challenge.org evaluation method (the container's command, no arguments needed):
read INPUT/predictions.json (the submission's algorithm jobs, in any order), take each job's
output image from INPUT/<pk>/output/<relative_path>/, match it to the reference by the name of
the job's input image (<id>_0000.* -> <id>), score every reference case exactly as
'flare-eval score' does (a job without output is a failed case), and write OUTPUT/metrics.json:
  results     one object per case: case, input_image, job_pk, status, message, runtime_s
              (the job's exec_duration), then the per_case.csv columns
  aggregates  the scores.txt values, Runtime_mean_s, Runtime_max_s
Undefined values are written as null (JSON has no NaN; the platform drops a submission whose
ranked value is not a number).

example (the Dockerfile template: examples/grand-challenge/Dockerfile):
  ENTRYPOINT ["flare-eval", "grand-challenge", "evaluate"]
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import add_preset_option
    from flare_eval.cli.score import add_scoring_options
    from flare_eval.platforms.paths import GC_GROUND_TRUTH, GC_INPUT, GC_OUTPUT

    p = subparsers.add_parser(
        "grand-challenge", help="evaluation method of a grand-challenge.org phase",
        description="Evaluation methods for grand-challenge.org.", formatter_class=HelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = actions.add_parser("evaluate", help="score a submission's jobs, write metrics.json",
                           description=DESCRIPTION, formatter_class=HelpFormatter)
    e.add_argument("--input", type=Path, default=GC_INPUT, metavar="DIR",
                   help="folder of predictions.json and the jobs' outputs")
    e.add_argument("--ground-truth", type=Path, default=GC_GROUND_TRUTH, metavar="DIR",
                   help="folder of references <id>.nii.gz (or .mha, .nii, .nrrd)")
    e.add_argument("--output", type=Path, default=GC_OUTPUT, metavar="DIR",
                   help="folder of metrics.json")
    e.add_argument("--output-interface", default=None, metavar="SLUG",
                   help="slug of the jobs' segmentation output (default: their only image output)")
    add_preset_option(e, "scoring rules")
    add_scoring_options(e)
    e.add_argument("--workers", type=int, default=1, help="scoring processes")
    e.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from flare_eval.cli.score import scoring_options
    from flare_eval.platforms.grand_challenge import evaluate_submission
    from flare_eval.scoring.batch import ScoreOptions

    console = Console(stderr=True, soft_wrap=True)  # whole lines: logs stay greppable
    preset = scoring_options(args, args.preset)
    metrics = evaluate_submission(
        args.input, args.ground_truth, args.output,
        options=ScoreOptions(preset=preset),
        output_interface=args.output_interface, workers=args.workers,
    )
    failed = [r for r in metrics["results"] if r["status"] != "ok"]
    for result in failed:
        console.print(f"[yellow]warning[/]: {escape(result['case'] + ': ' + result['status'] + ': ' + result['message'])}")
    console.print(f"{len(metrics['results'])} cases, {len(failed)} failed; "
                  f"{escape(str(args.output / 'metrics.json'))} written")
    return EXIT_PARTIAL if failed else EXIT_OK
