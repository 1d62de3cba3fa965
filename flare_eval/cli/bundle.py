"""``flare-eval bundle codabench``: a Codabench / CodaLab scoring program for a preset."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_eval.errors import EXIT_OK

__all__ = ["register"]

DESCRIPTION = """\
Write what a hosting platform needs to score submissions with flare-eval.

codabench: OUT/scoring_program/ (metadata.yaml whose command runs score.py, score.py, the
preset's settings; zip the folder's contents as the task's scoring program) and
OUT/competition.yaml (a 'leaderboards' section whose column keys are the keys of the program's
scores.json: merge it into the competition bundle). The competition's docker image must have
flare-eval installed. The program reads /app/input/ref (references <id>.nii.gz, or .mha, .nii,
.nrrd) and /app/input/res (the submission's files, named alike), scores them as
'flare-eval score' does, and writes /app/output/scores.json, scores.txt and
detailed_results.html (undefined values as null; JSON has no NaN).

example:
  flare-eval bundle codabench --preset flare23 --out bundle
  (cd bundle/scoring_program && zip -r ../scoring_program.zip .)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import add_preset_option

    p = subparsers.add_parser("bundle", help="scoring program bundles for hosting platforms",
                              description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("platform", choices=("codabench",), help="the platform")
    add_preset_option(p, "scoring rules")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from flare_eval.platforms.codabench import write_bundle
    from flare_eval.presets import get_preset

    for path in write_bundle(get_preset(args.preset), args.out):
        print(path)
    return EXIT_OK
