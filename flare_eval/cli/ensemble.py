"""``flare-eval ensemble``: voxel-wise majority vote of several submissions' predictions."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_eval.errors import EXIT_OK

__all__ = ["register"]

DESCRIPTION = """\
Combine the predictions of several submissions by voxel-wise majority vote, as the FLARE23
paper did for its top-3 and top-5 ensembles. Files are paired by name (<id>.nii.gz) across
the --pred folders and must share shape and affine. At each voxel the label with the most
votes wins; a tie goes to the lowest label id, so any tie involving background gives
background. A case missing from a folder is an error unless --allow-missing, where the
missing prediction votes background everywhere.

example:
  flare-eval ensemble --pred results/t1/predictions results/t2/predictions \\
      results/t3/predictions --out ensembles/top3
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import add_preset_option

    p = subparsers.add_parser(
        "ensemble", help="majority-vote ensemble of several prediction folders",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    p.add_argument("--pred", required=True, nargs="+", type=Path, metavar="DIR",
                   help="two or more folders of predictions <id>.nii.gz")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output folder for the ensemble's <id>.nii.gz")
    add_preset_option(p, "label map (its class ids may be voted)")
    p.add_argument("--allow-missing", action="store_true",
                   help="a case missing from a folder votes background instead of stopping")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from flare_eval.cli.progress import lazy_progress
    from flare_eval.ensemble import ensemble_folders
    from flare_eval.presets import get_preset

    console = Console(stderr=True, soft_wrap=True)  # whole lines: logs stay greppable
    preset = get_preset(args.preset)
    columns = (TextColumn("voting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.description}"))
    with lazy_progress(*columns, console=console) as bar:

        def progress(done: int, total: int, name: str) -> None:
            bar(done, total, name)

        written = ensemble_folders(args.pred, args.out, labels=preset.labels,
                                   allow_missing=args.allow_missing, progress=progress)
    console.print(f"{len(written)} cases: majority vote of {len(args.pred)} folders in {args.out}")
    return EXIT_OK
