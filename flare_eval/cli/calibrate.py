"""``flare-eval calibrate``: time a fixed reference workload on every slot, alone and together."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_eval.errors import EXIT_OK

__all__ = ["register"]

DESCRIPTION = """\
Fairness is measured, not assumed: run a fixed reference workload on every slot of --slots
alone, then on all slots at once, and write a tidy table to OUT (slot, cpuset, gpu_uuid,
workload cpu|gpu, mode alone|together, seconds, ratio to the fastest slot, note). CPU: a
pure-Python loop, one process per core of the slot, each pinned to its core. GPU (slots with a
GPU): a short torch matmul loop that sees only the slot's GPU, skipped with a note where torch
or CUDA is absent. Give the table to 'flare-eval evaluate --slots SPEC --calibration OUT': it
refuses slots that differ by more than the tolerance (or warns, with --allow-uneven-slots).

example:
  flare-eval calibrate --slots 0:0-7,1:8-15 --out calibration.csv
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` verb."""
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import SLOTS_HELP

    p = subparsers.add_parser(
        "calibrate", help="time a reference workload on every slot, alone and together",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    p.add_argument("--slots", required=True, metavar="SPEC", help=SLOTS_HELP)
    p.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="the table to write (CSV)")
    p.add_argument("--loops", type=int, default=None,
                   help="iterations of the reference CPU loop (default: the reference workload's, "
                        "about 0.3 s of one core)")
    p.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    """Handler of ``flare-eval calibrate``."""
    import sys

    from flare_eval.errors import ConfigError
    from flare_eval.io import write_table
    from flare_eval.presets import SLOT_TOLERANCE
    from flare_eval.runner.calibrate import CPU_LOOPS, calibrate, check_calibration
    from flare_eval.runner.slots import parse_slots

    if args.loops is not None and args.loops < 1:
        raise ConfigError(f"--loops must be 1 or more, got {args.loops}")
    slots = parse_slots(args.slots)
    table = calibrate(slots, loops=CPU_LOOPS if args.loops is None else args.loops)
    write_table(table, args.out)
    for row in table.itertuples():
        seconds = "-" if row.seconds != row.seconds else f"{row.seconds:.3f} s"
        ratio = "" if row.ratio != row.ratio else f" x{row.ratio:.3f}"
        note = f" ({row.note})" if row.note else ""
        print(f"slot {row.slot} [{row.cpuset}] {row.workload} {row.mode}: {seconds}{ratio}{note}",
              file=sys.stderr)
    try:
        check_calibration(table, slots, source=str(args.out))
        print(f"flare-eval calibrate: slots alike within {SLOT_TOLERANCE:.0%}; table in "
              f"{args.out}", file=sys.stderr)
    except ConfigError as err:
        print(f"flare-eval calibrate: {err.message}", file=sys.stderr)
    return EXIT_OK
