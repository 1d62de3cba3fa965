"""Calibration: slots are measured alike, not assumed alike.

:func:`calibrate` runs a fixed reference workload on every slot of this host alone, then on
all slots at once, and returns a tidy table; :func:`calibrate_cluster` does the same on every
slot worker of a dask cluster (:mod:`flare_eval.runner.fleet`), across hosts;
:func:`check_calibration` refuses (or warns about) slots whose times differ by more than
:data:`~flare_eval.presets.SLOT_TOLERANCE`.

CPU workload: a pure-Python loop of fixed length (no library whose build could differ between
hosts), one process per core of the slot, each pinned to its core (``os.sched_setaffinity`` in
the child); the slot's time is its slowest process. GPU workload: a short float32 matmul loop
with torch in a child that sees only the slot's GPU (``CUDA_VISIBLE_DEVICES`` = its UUID);
skipped with a note where torch or CUDA is absent.

Table columns (:data:`CALIBRATION_COLUMNS`): ``host``, ``slot``, ``cpuset``, ``cpu_model``,
``gpu_name``, ``gpu_uuid``, ``workload`` (``cpu`` or ``gpu``), ``mode`` (``alone`` or
``together``), ``seconds``, ``ratio`` (to the fastest slot of the same workload and mode),
``note``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_eval.errors import ConfigError, InputError
from flare_eval.presets import SLOT_TOLERANCE
from flare_eval.runner.slots import Slot

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CALIBRATION_COLUMNS", "CPU_LOOPS", "UnevenSlotsWarning", "calibrate",
           "calibrate_cluster", "check_calibration", "read_calibration", "slot_spread"]

CALIBRATION_COLUMNS: tuple[str, ...] = ("host", "slot", "cpuset", "cpu_model", "gpu_name",
                                        "gpu_uuid", "workload", "mode", "seconds", "ratio",
                                        "note")
#: Iterations of the reference CPU loop (about 0.3 s of one core here).
CPU_LOOPS = 3_000_000

_CPU_CHILD = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
n = int(sys.argv[2])
t0 = time.perf_counter()
x = 0
for i in range(n):
    x += i * i
print(time.perf_counter() - t0)
"""

_GPU_CHILD = """
import time
import torch
if not torch.cuda.is_available():
    print("skip: CUDA is not available to torch")
    raise SystemExit
a = torch.randn(4096, 4096, device="cuda")
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(50):
    a = (a @ a).clamp_(-1, 1)
torch.cuda.synchronize()
print(time.perf_counter() - t0)
"""


class UnevenSlotsWarning(UserWarning):
    """Slots differ by more than the tolerance and ``--allow-uneven-slots`` was given."""


#: A reference workload started on a slot: its children, or why it cannot run there.
_Started = tuple[list["subprocess.Popen[str]"], str]


def _start(slot: Slot, workload: str, loops: int) -> _Started:
    """Start ``workload`` (``cpu`` or ``gpu``) on ``slot``; collect it with :func:`_seconds`."""
    if workload == "cpu":
        return [subprocess.Popen([sys.executable, "-c", _CPU_CHILD, str(core), str(loops)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for core in sorted(slot.cpus)], ""
    if slot.gpu is None:
        raise ValueError(f"slot {slot.name} has no GPU to calibrate")
    if not _has_torch():
        return [], "torch is not installed"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": slot.gpu.device_id,
           "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return [subprocess.Popen([sys.executable, "-c", _GPU_CHILD], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)], ""


def _seconds(started: _Started) -> tuple[float | None, str]:
    """The slowest child's time, or ``None`` and why not."""
    children, why_not = started
    if why_not:
        return None, why_not
    times, notes = [], []
    for child in children:
        out, err = child.communicate()
        text = out.strip()
        if child.returncode != 0:
            notes.append(f"failed ({err.strip().splitlines()[-1] if err.strip() else child.returncode})")
        elif text.startswith("skip:"):
            notes.append(text[len("skip:"):].strip())
        else:
            times.append(float(text))
    if notes:
        return None, "; ".join(sorted(set(notes)))
    return max(times), ""


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


#: ``progress(done, total, text)`` after each measurement.
Progress = Callable[[int, int, str], None]


def _workloads(slots: Sequence[Slot]) -> list[tuple[str, list[Slot]]]:
    """Each workload and the slots it runs on: the CPU loop on all, the GPU loop on GPU slots."""
    gpu = [s for s in slots if s.gpu is not None]
    return [("cpu", list(slots)), *([("gpu", gpu)] if gpu else [])]


def _counter(slots: Sequence[Slot], progress: Progress) -> Callable[[str], None]:
    """``step(text)``: one measurement done (each slot alone, then all together, per workload)."""
    total = sum(len(measured) + 1 for _, measured in _workloads(slots))
    done = 0

    def step(text: str) -> None:
        nonlocal done
        done += 1
        progress(done, total, text)

    return step


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The calibration table of measured rows (every column but ``ratio``), ratios added."""
    import pandas as pd

    table = pd.DataFrame(rows)
    fastest = table.groupby(["workload", "mode"])["seconds"].transform("min")
    table["ratio"] = table["seconds"] / fastest
    return table[list(CALIBRATION_COLUMNS)]


def _row(host: str, slot: Slot, model: str, workload: str, mode: str,
         measured: tuple[float | None, str]) -> dict[str, Any]:
    gpu = slot.gpu
    return {"host": host, "slot": slot.name, "cpuset": slot.cpuset, "cpu_model": model,
            "gpu_name": None if gpu is None else gpu.name,
            "gpu_uuid": None if gpu is None else gpu.uuid, "workload": workload, "mode": mode,
            "seconds": measured[0], "note": measured[1]}


def calibrate(slots: Sequence[Slot], *, loops: int = CPU_LOOPS,
              progress: Progress = lambda done, total, text: None) -> pd.DataFrame:
    """Time the reference workloads on each slot of this host alone, then on all at once.

    Parameters
    ----------
    slots
        The slots to measure (:func:`~flare_eval.runner.slots.parse_slots`).
    loops
        Iterations of the CPU loop.
    progress
        Called as ``progress(done, total, text)`` after each measurement.

    Returns
    -------
    pandas.DataFrame
        The table of the module docs: per slot, workload and mode one row.
    """
    import socket

    from flare_eval.runner.slot_workers import cpu_model

    host = socket.gethostname()
    step = _counter(slots, progress)
    rows = []
    for workload, measured in _workloads(slots):
        alone = {}
        for slot in measured:
            alone[slot.name] = _seconds(_start(slot, workload, loops))
            step(f"{workload} alone: slot {slot.name}")
        started = {s.name: _start(s, workload, loops) for s in measured}  # all, then collected
        together = {name: _seconds(children) for name, children in started.items()}
        step(f"{workload} together: {len(measured)} slots")
        for mode, results in (("alone", alone), ("together", together)):
            rows += [_row(host, s, cpu_model(s.cpus), workload, mode, results[s.name])
                     for s in measured]
    return _table(rows)


def _on_worker(workload: str, loops: int) -> tuple[Slot, tuple[float | None, str]]:
    """The reference workload on this dask worker's slot (a task of :func:`calibrate_cluster`):
    the slot it ran on, and its time or why none."""
    from distributed import get_worker

    from flare_eval.runner.fleet import worker_slot

    slot = worker_slot(str(get_worker().name))
    return slot, _seconds(_start(slot, workload, loops))


def calibrate_cluster(client: Any, *, loops: int = CPU_LOOPS,
                      progress: Progress = lambda done, total, text: None) -> pd.DataFrame:
    """Time the reference workloads on each slot worker of a dask cluster alone, then on all
    at once: the table of :func:`calibrate`, one row per worker (its ``slot`` is the worker's
    name, ``host`` its host).

    Each measurement is a task that needs the worker's ``SLOT`` resource, so none runs beside
    a case. Alone: one worker at a time; together: one task per worker, submitted at once.

    Parameters
    ----------
    client
        A ``distributed.Client`` of the cluster.
    loops
        Iterations of the CPU loop.
    progress
        Called as ``progress(done, total, text)`` after each measurement.

    Raises
    ------
    ConfigError
        The cluster has no slot worker (:func:`~flare_eval.runner.slot_workers.slot_workers`).
    """
    from flare_eval.runner.fleet import SLOT_RESOURCE
    from flare_eval.runner.slot_workers import slot_workers

    workers = slot_workers(client)
    by_name = {w.slot.name: w for w in workers}
    step = _counter([w.slot for w in workers], progress)

    def submit(worker_name: str, workload: str) -> Any:
        return client.submit(_on_worker, workload, loops, workers=[by_name[worker_name].address],
                             resources={SLOT_RESOURCE: 1}, pure=False)

    rows = []
    for workload, measured in _workloads([w.slot for w in workers]):
        alone = {}
        for slot in measured:
            alone[slot.name] = submit(slot.name, workload).result()
            step(f"{workload} alone: slot {slot.name} on {by_name[slot.name].host}")
        futures = {slot.name: submit(slot.name, workload) for slot in measured}
        together = {name: future.result() for name, future in futures.items()}
        step(f"{workload} together: {len(measured)} slots")
        for mode, results in (("alone", alone), ("together", together)):
            # each row names the slot the task measured, as the worker read it
            rows += [_row(by_name[name].host, ran_on, by_name[name].cpu_model, workload, mode,
                          seconds) for name, (ran_on, seconds) in results.items()]
    return _table(rows)


def read_calibration(path: Path) -> pd.DataFrame:
    """A calibration table written by ``flare-eval calibrate``.

    Raises
    ------
    InputError
        When the file is missing or lacks the table's columns.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--calibration {path}: expected a file written by 'flare-eval "
                         "calibrate', found none")
    text = ("host", "slot", "cpuset", "cpu_model", "gpu_name", "gpu_uuid", "note")
    table = pd.read_csv(path, dtype=dict.fromkeys(text, str))
    missing = [c for c in CALIBRATION_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"--calibration {path}: expected columns {list(CALIBRATION_COLUMNS)}, "
                         f"missing {missing}", hint="write it with flare-eval calibrate")
    return table.fillna({"note": ""})


def check_calibration(table: pd.DataFrame, slots: Sequence[Slot] | None, *,
                      hosts: Mapping[str, str] | None = None, tolerance: float = SLOT_TOLERANCE,
                      allow_uneven: bool = False, source: str = "--calibration") -> None:
    """Refuse slots whose calibrated times differ by more than ``tolerance``.

    Every slot must be in the table with the same host and cores; for each workload and mode
    the slowest slot may take at most ``1 + tolerance`` times the fastest.

    Parameters
    ----------
    table
        From :func:`calibrate`, :func:`calibrate_cluster` or :func:`read_calibration`.
    slots
        The slots the cases will run on; ``None``: every slot of the table.
    hosts
        Each slot's host, by slot name (a cluster's workers); ``None``: this host.
    tolerance
        Most relative difference, slowest / fastest - 1.
    allow_uneven
        Warn (:class:`UnevenSlotsWarning`) instead of refusing slots that differ.
    source
        Names the table in messages.

    Raises
    ------
    ConfigError
        A slot missing from the table or calibrated on another host or other cores; or slots
        that differ by more than the tolerance (unless ``allow_uneven``).
    """
    import socket

    here = socket.gethostname()
    calibrated = {str(row.slot): (str(row.host), str(row.cpuset)) for row in table.itertuples()}
    if slots is None:
        slots = []
        names = set(calibrated)
    else:
        names = {slot.name for slot in slots}
    host_of = {s.name: here for s in slots} if hosts is None else dict(hosts)
    for slot in slots:
        if calibrated.get(slot.name) != (host_of[slot.name], slot.cpuset):
            listed = ", ".join(f"{name} ({host}, cores {cores})"
                               for name, (host, cores) in sorted(calibrated.items()))
            raise ConfigError(
                f"{source}: slot {slot.name} (host {host_of[slot.name]}, cores {slot.cpuset}) "
                f"is not in the table (it has {listed or 'no slot'})",
                hint="calibrate the slots the cases run on: flare-eval calibrate --slots SPEC, "
                     "or --scheduler ADDRESS for a cluster")
    for spread in slot_spread(table[table["slot"].astype(str).isin(names)]).itertuples():
        if spread.spread > tolerance:
            message = (f"{source}: slots differ by {spread.spread:.0%} on the {spread.workload} "
                       f"workload ({spread.mode}): slot {spread.slowest} on {spread.slowest_host} "
                       f"{spread.slowest_s:.3f} s, slot {spread.fastest} on {spread.fastest_host} "
                       f"{spread.fastest_s:.3f} s; the tolerance is {tolerance:.0%}")
            if not allow_uneven:
                raise ConfigError(message, hint="use alike slots, or --allow-uneven-slots to "
                                  "run anyway (the timings are then not comparable)")
            warnings.warn(message, UnevenSlotsWarning, stacklevel=2)


def slot_spread(table: pd.DataFrame) -> pd.DataFrame:
    """How far apart the slots of a calibration table are, per workload and mode.

    Returns
    -------
    pandas.DataFrame
        ``workload, mode, spread`` (slowest / fastest - 1, what the tolerance bounds),
        ``slowest, slowest_host, slowest_s, fastest, fastest_host, fastest_s``; rows without a
        time (a skipped GPU workload) are left out.
    """
    import pandas as pd

    timed = table[table["seconds"].notna()]
    rows = []
    for (workload, mode), group in timed.groupby(["workload", "mode"], sort=True):
        slow = group.loc[group["seconds"].idxmax()]
        fast = group.loc[group["seconds"].idxmin()]
        rows.append({"workload": workload, "mode": mode,
                     "spread": slow["seconds"] / fast["seconds"] - 1,
                     "slowest": slow["slot"], "slowest_host": slow["host"],
                     "slowest_s": slow["seconds"], "fastest": fast["slot"],
                     "fastest_host": fast["host"], "fastest_s": fast["seconds"]})
    return pd.DataFrame(rows, columns=["workload", "mode", "spread", "slowest", "slowest_host",
                                       "slowest_s", "fastest", "fastest_host", "fastest_s"])
