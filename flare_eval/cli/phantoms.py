"""``flare-eval phantoms``: write a synthetic FLARE-style challenge (built-in demo data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_eval.errors import EXIT_OK

__all__ = ["register"]

DESCRIPTION = """\
Write CT-like phantoms with FLARE23 labels: OUT/images/<id>_0000.nii.gz (HU, int16),
OUT/labels/<id>.nii.gz (13 organs + lesions), and with --prediction-quality a simulated
team's OUT/predictions/<id>.nii.gz. Deterministic for a seed; case k uses seed SEED + k.

example:
  flare-eval phantoms --out demo --cases 4 --seed 0 --prediction-quality good --missing 1
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.presets import PHANTOM_QUALITY_PROFILES, PHANTOM_SHAPE, PHANTOM_SPACING_MM

    p = subparsers.add_parser(
        "phantoms", help="write synthetic CT phantoms with labels (demo data)",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--cases", type=int, default=4, help="number of cases")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case")
    p.add_argument("--shape", type=int, nargs=3, default=list(PHANTOM_SHAPE), metavar=("X", "Y", "Z"),
                   help="voxels per axis")
    p.add_argument("--spacing", type=float, nargs=3, default=list(PHANTOM_SPACING_MM),
                   metavar=("X", "Y", "Z"), help="voxel size in mm")
    p.add_argument("--prediction-quality", choices=sorted(PHANTOM_QUALITY_PROFILES), default=None,
                   help="also write a simulated team's predictions of this quality")
    p.add_argument("--missing", type=int, default=0,
                   help="leave out the predictions of the last N cases (a team that failed them)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.progress import track

    from flare_eval.errors import ConfigError
    from flare_eval.phantoms import write_phantom_set

    if args.cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {args.cases}")
    for k in track(range(args.cases), description="phantoms", transient=True):
        write_phantom_set(
            args.out, cases=1, seed=args.seed + k, shape=tuple(args.shape),
            spacing_mm=tuple(args.spacing), prediction_quality=args.prediction_quality,
            missing_predictions=int(k >= args.cases - args.missing),
        )
    print(f"wrote {args.cases} phantom cases to {args.out}")
    return EXIT_OK
