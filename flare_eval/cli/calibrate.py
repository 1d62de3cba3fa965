"""``flare-eval calibrate``: time a fixed reference workload on every slot, alone and together."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_eval.errors import EXIT_OK

__all__ = ["register"]

DESCRIPTION = """\
Fairness is measured, not assumed: run a fixed reference workload on every slot alone, then
on all slots at once, and write a tidy table to OUT (host, slot, cpuset, cpu_model, gpu_name,
gpu_uuid, workload cpu|gpu, mode alone|together, seconds, ratio to the fastest slot, note).
The slots are this host's --slots, or with --scheduler every slot worker of a dask cluster
(each worker one slot of its host: --resources SLOT=1 and FLARE_EVAL_SLOT; the slot is the
worker's name), across hosts. CPU: a pure-Python loop, one process per core of the slot, each
pinned to its core. GPU (slots with a GPU): a short torch matmul loop that sees only the
slot's GPU, skipped with a note where torch or CUDA is absent. Give the table to 'flare-eval
evaluate --calibration OUT' (with the same --slots, or the same --scheduler): it refuses
slots that differ by more than the tolerance (or warns, with --allow-uneven-slots), and the
report shows it.

examples:
  flare-eval calibrate --slots 0:0-7,1:8-15 --out calibration.csv
  flare-eval calibrate --scheduler tcp://10.0.0.5:8786 --out calibration.csv
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` verb."""
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import SLOTS_HELP

    p = subparsers.add_parser(
        "calibrate", help="time a reference workload on every slot, alone and together",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--slots", metavar="SPEC", help=SLOTS_HELP)
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="dask.distributed scheduler (tcp://HOST:PORT): calibrate each of its "
                            "slot workers (docs/scale-out.md)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="the table to write (CSV)")
    p.add_argument("--loops", type=int, default=None,
                   help="iterations of the reference CPU loop (default: the reference workload's, "
                        "about 0.3 s of one core)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    """Handler of ``flare-eval calibrate``."""
    import contextlib

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from flare_eval.cli.progress import lazy_progress, scheduler_client
    from flare_eval.errors import ConfigError
    from flare_eval.io import write_table
    from flare_eval.presets import SLOT_TOLERANCE
    from flare_eval.runner.calibrate import (CPU_LOOPS, calibrate, calibrate_cluster,
                                             check_calibration)
    from flare_eval.runner.slots import parse_slots

    if args.loops is not None and args.loops < 1:
        raise ConfigError(f"--loops must be 1 or more, got {args.loops}")
    loops = CPU_LOOPS if args.loops is None else args.loops
    console = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        bar = None if args.no_progress else stack.enter_context(lazy_progress(
            TextColumn("calibrate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=console))

        def progress(done: int, total: int, text: str) -> None:
            if bar is not None:
                bar(done, total, text)

        if args.scheduler is not None:
            client = stack.enter_context(scheduler_client(args.scheduler))
            table = calibrate_cluster(client, loops=loops, progress=progress)
            slots = None
        else:
            slots = parse_slots(args.slots)
            table = calibrate(slots, loops=loops, progress=progress)
    write_table(table, args.out)
    for row in table.itertuples():
        seconds = "-" if row.seconds != row.seconds else f"{row.seconds:.3f} s"
        ratio = "" if row.ratio != row.ratio else f" x{row.ratio:.3f}"
        note = f" ({row.note})" if row.note else ""
        console.print(f"slot {row.slot} on {row.host} [{row.cpuset}] {row.workload} {row.mode}: "
                      f"{seconds}{ratio}{note}", soft_wrap=True, markup=False, highlight=False)
    try:
        check_calibration(table, slots, source=str(args.out))  # a cluster's: the table's slots
        console.print(f"flare-eval calibrate: slots alike within {SLOT_TOLERANCE:.0%}; table in "
                      f"{args.out}", soft_wrap=True, markup=False, highlight=False)
    except ConfigError as err:
        console.print(f"flare-eval calibrate: {err.message}", soft_wrap=True, markup=False,
                      highlight=False)
    return EXIT_OK
