"""``flare-eval score``: score a folder of predictions against the references, FLARE23 rules."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_eval.errors import EXIT_OK, EXIT_PARTIAL

if TYPE_CHECKING:
    from flare_eval.presets import Preset

__all__ = ["register", "add_scoring_options", "scoring_options"]

DESCRIPTION = """\
Score every reference case: per-class DSC and NSD exactly as the official FLARE23 scorer
(plus HD95), lesion instance metrics, and the official tables.

Files are paired by name: GT/<id>.nii.gz with PRED/<id>.nii.gz. A missing or unreadable
prediction is a failed case (0 for every class present in the reference), listed in a
warning and in OUT/cases.csv, unless --strict. Writes into OUT:
  scores.txt            official summary, official key order
  per_case.csv          official columns: Name, 14 x <class>_DSC, 14 x <class>_NSD
  metrics_long.csv      tidy: case, name, label, class, metric (dsc|nsd|hd95), value, status
                        (also metrics_long.parquet with --parquet)
  cases.csv             case status (ok | missing_prediction | bad_prediction | bad_reference)
  lesions_per_case.csv  lesion counts, precision, recall, F1, PQ, volumes per case
  lesions.csv           one row per lesion instance
  run.json              preset, options, versions, failures
Re-running the same command resumes: finished cases are not scored again.

example:
  flare-eval phantoms --out demo --cases 4 --prediction-quality good
  flare-eval score --pred demo/predictions --gt demo/labels --out demo/scores
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import add_preset_option

    p = subparsers.add_parser(
        "score", help="score predictions against references (DSC, NSD, HD95, lesions)",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    p.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predictions <id>.nii.gz")
    p.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of references <id>.nii.gz")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--workers", type=int, default=1, help="scoring processes")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="dask.distributed scheduler (tcp://HOST:PORT) to score on instead of local processes")
    add_preset_option(p, "scoring rules")
    add_scoring_options(p)
    p.add_argument("--strict", action="store_true",
                   help="stop at the first missing or unreadable file instead of scoring it as failed")
    p.add_argument("--parquet", action="store_true",
                   help="also write the tidy table as metrics_long.parquet (needs pyarrow)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard scores already in OUT instead of resuming")
    p.set_defaults(handler=run)


def add_scoring_options(p: argparse.ArgumentParser) -> None:
    """The options that change a score, shared by ``score`` and ``evaluate``.

    Their defaults are None: unset, the definition's rule applies (its one place; the lesion
    options override its ``[lesions]`` table).
    """
    from flare_eval.cli.parser import iou_threshold
    from flare_eval.definition import CONNECTIVITIES, MATCH_MODES

    p.add_argument("--nsd-dsc-threshold", type=float, default=None, metavar="T",
                   help="NSD is 0 when DSC < T (preset: 0.1, the FLARE23 rule; 0.2 from March 2024)")
    p.add_argument("--single-slice", choices=("keep", "nan"), default=None,
                   help="aorta/IVC/esophagus reference on one slice (the official code crashes): "
                   "keep = score that slice, nan = report NaN (preset: keep)")
    p.add_argument("--lesion-connectivity", type=int, choices=CONNECTIVITIES, default=None,
                   help="voxel connectivity of lesion instances (preset: 26)")
    p.add_argument("--lesion-iou", type=iou_threshold, default=None, metavar="T",
                   help="a predicted lesion matches a reference lesion when IoU > T, 0 <= T < 1 "
                        "(preset: 0.5)")
    p.add_argument("--lesion-match", choices=MATCH_MODES, default=None,
                   help="match by IoU, or count any overlap as a detection (preset: iou)")


def scoring_options(args: argparse.Namespace, preset_name: str) -> Preset:
    """The preset with the command line's overrides, checked before anything is written (a
    refused option must not leave a resume cache behind; ``--lesion-iou`` is checked by its
    argparse type).

    Raises
    ------
    ConfigError
        A preset item out of range; a lesion option for a preset without a lesion class.
    """
    import dataclasses

    from flare_eval.errors import ConfigError
    from flare_eval.presets import get_preset

    preset = get_preset(preset_name)
    overrides: dict[str, Any] = {k: v for k, v in (
        ("nsd_dsc_threshold", args.nsd_dsc_threshold),
        ("single_slice_z_crop", args.single_slice)) if v is not None}
    lesion = {k: v for k, v in (
        ("connectivity", args.lesion_connectivity), ("iou_threshold", args.lesion_iou),
        ("match", args.lesion_match)) if v is not None}
    if lesion:
        if preset.lesions is None:
            given = {"connectivity": "--lesion-connectivity", "iou_threshold": "--lesion-iou",
                     "match": "--lesion-match"}
            raise ConfigError(f"{', '.join(given[k] for k in lesion)}: preset {preset.name!r} "
                              "has no lesion class (no lesion_label)")
        overrides["lesions"] = dataclasses.replace(preset.lesions, **lesion)
    return preset.with_overrides(**overrides)


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from flare_eval.cli.progress import lazy_progress, scheduler_executor
    from flare_eval.scoring.batch import ScoreOptions, score_folders

    console = Console(stderr=True, soft_wrap=True)  # whole lines: logs stay greppable
    preset = scoring_options(args, args.preset)
    options = ScoreOptions(preset=preset, strict=args.strict)
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.description}"))
    with scheduler_executor(args.scheduler) as executor, \
            lazy_progress(*columns, console=console) as bar:

        def progress(done: int, total: int, record) -> None:
            bar(done, total, record.case)

        result = score_folders(
            args.pred, args.gt, args.out, options=options, workers=args.workers,
            executor=executor, progress=progress, parquet=args.parquet, overwrite=args.overwrite,
        )
    for record in result.failed:
        console.print(f"[yellow]warning[/]: {escape(f'{record.case}: {record.status}: {record.message}')}")
    # scored cases with a note (affine mismatch, labels outside the map): the README promises
    # a warning on the console, not only in cases.csv
    for record in result.records:
        if record.status == "ok" and record.message:
            console.print(f"[yellow]warning[/]: {escape(f'{record.case}: {record.message}')}")
    s = result.summary
    means = []
    if preset.organ_labels:
        means.append(f"Organ DSC {s['Organ_DSC']:.4f}, Organ NSD {s['Organ_NSD']:.4f}")
    if preset.lesion_label is not None:  # the lesion column's name is the definition's
        name = preset.class_info(preset.lesion_label).name
        means.append(f"{escape(name)} (lesion) DSC {s[f'{name}_DSC']:.4f}, "
                     f"NSD {s[f'{name}_NSD']:.4f}")
    console.print(
        f"{len(result.records)} cases ({result.reused} reused from an earlier run), "
        f"{len(result.failed)} failed. {', '.join(means)}; tables in {args.out}"
    )
    undefined = json.loads((args.out / "run.json").read_text())["lesion_values_undefined"]
    if undefined:
        console.print(
            "lesion values undefined (zero denominator, NaN in lesions_per_case.csv, see "
            "docs/lesions.md): " + ", ".join(f"{k} in {v} cases" for k, v in undefined.items())
        )
    return EXIT_PARTIAL if result.failed else EXIT_OK
