"""Slots benchmark: N teams x M cases of a fixed-length container on 1 slot against 2 slots.

    python benchmarks/bench_slots.py [--teams 3] [--cases 4] [--loops 250000]

Needs a docker engine (``DOCKER_HOST``), busybox and two cores. Every team runs the same
busybox image through the organizer's own path (:class:`~flare_eval.runner.run.TeamRun`
per team, :func:`~flare_eval.runner.pool.schedule`, :func:`~flare_eval.runner.pool.run_on_slots`),
so the figures include create, start, output checks, records and removal.

1. A 1 s ``sleep`` case: wall clock of the whole fleet on the default slot (one container at a
   time, the whole host) against ``--slots cpu:0,cpu:1``; the ratio is the speed-up (2 at
   most).
2. A CPU-bound case (a busybox ``sh`` loop of ``--loops`` iterations): the same two walls.
3. The per-case time spread of the CPU-bound case on two slots side by side, pinned
   (``cpu:0``, ``cpu:1``) against two unpinned slots (two containers at a time, the kernel
   placing them): coefficient of variation (sd / mean) and (max - min) / median.

The machine's load average is printed with each figure: on a shared machine other users'
processes slow some cases and not others, so the spread is an upper bound of the runner's own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_runner import _image  # the busybox image of the runner benchmark (run from here)

from flare_eval.presets import FLARE23
from flare_eval.runner import DockerBackend, DockerOptions, OFFICIAL_PERIOD_S
from flare_eval.runner.intake import OutputLimits
from flare_eval.runner.pool import run_on_slots, schedule
from flare_eval.runner.run import TeamRun, resolve_slots
from flare_eval.runner.slots import Slot, parse_slots

COPY = 'f=$(ls /workspace/inputs); cp "/workspace/inputs/$f" "/workspace/outputs/${f%_0000.nii.gz}.nii.gz"'
SLEEP = f"sleep 1; {COPY}"


def _busy(loops: int) -> str:
    return f"i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; {COPY}"


def fleet(client, image: str, script: str, inputs: Path, out: Path, n_teams: int,
          slots: list[Slot]) -> tuple[float, list[float]]:
    """Wall seconds of every team's cases over ``slots``, and every case's recorded time."""
    backend = DockerBackend(client, image, DockerOptions(memory="64m", shm_size="8m",
                                                         command=("sh", "-c", script)))
    with contextlib.ExitStack() as held:
        runs = [held.enter_context(TeamRun(
            backend, inputs, out, team=f"team{k}", timeout_s=120, gpu_index=None, slots=slots,
            gpu_tolerance_mib=FLARE23.gpu_tolerance_mib, period_s=OFFICIAL_PERIOD_S, log_cap_bytes=1 << 20,
            limits=OutputLimits(), retry_failed=False)) for k in range(n_teams)]
        t0 = time.monotonic()
        run_on_slots(schedule([run.jobs() for run in runs]), slots, period_s=OFFICIAL_PERIOD_S)
        wall = time.monotonic() - t0
        records = [r for run in runs for r in run.finish()]
    bad = {r["status"] for r in records} - {"ok"}
    if bad:
        raise SystemExit(f"bench_slots: cases ended {sorted(bad)}; see {out}")
    return wall, [r["time_s"] for r in records]


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=3)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--loops", type=int, default=250_000,
                        help="busy-loop iterations of the CPU-bound case (~0.8 s a core here)")
    args = parser.parse_args()
    import docker
    import nibabel as nib

    client = docker.from_env()
    client.ping()
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("busybox") is None:
        raise SystemExit("bench_slots: needs two cores and busybox")
    image = _image(client)
    one = resolve_slots(None, None)
    two = parse_slots("cpu:0,cpu:1")
    unpinned = [Slot(str(k), one[0].cpus, pinned=False) for k in range(2)]
    n = args.teams * args.cases
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            inputs = root / "inputs"
            inputs.mkdir()
            for i in range(args.cases):
                nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)),
                         inputs / f"case{i}_0000.nii.gz")
            for name, script in (("1 s sleep", SLEEP), (f"CPU-bound ({args.loops} loops)",
                                                        _busy(args.loops))):
                wall1, _ = fleet(client, image, script, inputs, root / f"{name[:3]}1",
                                 args.teams, one)
                wall2, _ = fleet(client, image, script, inputs, root / f"{name[:3]}2",
                                 args.teams, two)
                print(f"{name}, {args.teams} teams x {args.cases} cases ({n}): 1 slot "
                      f"{wall1:.1f} s, 2 slots {wall2:.1f} s; speed-up {wall1 / wall2:.2f}x "
                      f"({_load()})")
            for label, slots in (("pinned cpu:0,cpu:1", two), ("unpinned, 2 at a time", unpinned)):
                _, times = fleet(client, image, _busy(args.loops), inputs,
                                 root / label.split()[0], args.teams, slots)
                mean, median = statistics.fmean(times), statistics.median(times)
                print(f"CPU-bound per-case time on 2 slots, {label}: median {median:.2f} s, "
                      f"cv {statistics.stdev(times) / mean:.3f}, (max-min)/median "
                      f"{(max(times) - min(times)) / median:.3f} ({_load()})")
    finally:
        client.images.remove(image, force=True)


if __name__ == "__main__":
    main()
