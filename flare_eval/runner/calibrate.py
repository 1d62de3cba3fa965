"""Calibration: slots are measured alike, not assumed alike.

:func:`calibrate` runs a fixed reference workload on every slot alone, then on all slots at
once, and returns a tidy table; :func:`check_calibration` refuses (or warns about) slots whose
times differ by more than :data:`~flare_eval.presets.SLOT_TOLERANCE`.

CPU workload: a pure-Python loop of fixed length (no library whose build could differ between
hosts), one process per core of the slot, each pinned to its core (``os.sched_setaffinity`` in
the child); the slot's time is its slowest process. GPU workload: a short float32 matmul loop
with torch in a child that sees only the slot's GPU (``CUDA_VISIBLE_DEVICES`` = its UUID);
skipped with a note where torch or CUDA is absent.

Table columns (:data:`CALIBRATION_COLUMNS`): ``slot``, ``cpuset``, ``gpu_uuid``, ``workload``
(``cpu`` or ``gpu``), ``mode`` (``alone`` or ``together``), ``seconds``, ``ratio`` (to the
fastest slot of the same workload and mode), ``note``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flare_eval.errors import ConfigError, InputError
from flare_eval.presets import SLOT_TOLERANCE
from flare_eval.runner.slots import Slot

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CALIBRATION_COLUMNS", "CPU_LOOPS", "UnevenSlotsWarning", "calibrate",
           "check_calibration", "read_calibration"]

CALIBRATION_COLUMNS: tuple[str, ...] = ("slot", "cpuset", "gpu_uuid", "workload", "mode",
                                        "seconds", "ratio", "note")
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


def _start_cpu(slot: Slot, loops: int) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, "-c", _CPU_CHILD, str(core), str(loops)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for core in sorted(slot.cpus)]


def _start_gpu(slot: Slot) -> list[subprocess.Popen[str]]:
    if slot.gpu is None:
        raise ValueError(f"slot {slot.name} has no GPU to calibrate")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": slot.gpu.device_id,
           "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return [subprocess.Popen([sys.executable, "-c", _GPU_CHILD], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)]


def _seconds(children: list[subprocess.Popen[str]]) -> tuple[float | None, str]:
    """The slowest child's time, or ``None`` and why not."""
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


def calibrate(slots: Sequence[Slot], *, loops: int = CPU_LOOPS) -> pd.DataFrame:
    """Time the reference workloads on each slot alone, then on all slots at once.

    Parameters
    ----------
    slots
        The slots to measure (:func:`~flare_eval.runner.slots.parse_slots`).
    loops
        Iterations of the CPU loop.

    Returns
    -------
    pandas.DataFrame
        The table of the module docs: per slot, workload and mode one row.
    """
    import pandas as pd

    rows = []
    gpu_note = "" if _has_torch() else "torch is not installed"
    workloads = [("cpu", lambda s: _start_cpu(s, loops))]
    if any(s.gpu is not None for s in slots):
        workloads.append(("gpu", _start_gpu))
    for workload, start in workloads:
        measured = [s for s in slots if workload == "cpu" or s.gpu is not None]
        results: dict[tuple[str, str], tuple[float | None, str]] = {}
        for slot in measured:
            results[(slot.name, "alone")] = (
                (None, gpu_note) if workload == "gpu" and gpu_note else _seconds(start(slot)))
        if workload == "gpu" and gpu_note:
            together = {s.name: (None, gpu_note) for s in measured}
        else:
            started = {s.name: start(s) for s in measured}  # all at once, then collected
            together = {name: _seconds(children) for name, children in started.items()}
        for slot in measured:
            results[(slot.name, "together")] = together[slot.name]
        for (name, mode), (seconds, note) in results.items():
            slot = next(s for s in measured if s.name == name)
            rows.append({"slot": name, "cpuset": slot.cpuset,
                         "gpu_uuid": None if slot.gpu is None else slot.gpu.uuid,
                         "workload": workload, "mode": mode, "seconds": seconds, "note": note})
    table = pd.DataFrame(rows)
    fastest = table.groupby(["workload", "mode"])["seconds"].transform("min")
    table["ratio"] = table["seconds"] / fastest
    return table[list(CALIBRATION_COLUMNS)]


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
    table = pd.read_csv(path, dtype={"slot": str, "cpuset": str})
    missing = [c for c in CALIBRATION_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"--calibration {path}: expected columns {list(CALIBRATION_COLUMNS)}, "
                         f"missing {missing}", hint="write it with flare-eval calibrate")
    return table


def check_calibration(table: pd.DataFrame, slots: Sequence[Slot], *,
                      tolerance: float = SLOT_TOLERANCE, allow_uneven: bool = False,
                      source: str = "--calibration") -> None:
    """Refuse slots whose calibrated times differ by more than ``tolerance``.

    Every slot must be in the table with the same cores; for each workload and mode the
    slowest slot may take at most ``1 + tolerance`` times the fastest.

    Raises
    ------
    ConfigError
        A slot missing from the table or calibrated with other cores; or slots that differ by
        more than the tolerance (unless ``allow_uneven``: then an :class:`UnevenSlotsWarning`).
    """
    calibrated = {str(row.slot): str(row.cpuset) for row in table.itertuples()}
    for slot in slots:
        if calibrated.get(slot.name) != slot.cpuset:
            raise ConfigError(
                f"{source}: slot {slot.name} (cores {slot.cpuset}) is not in the table "
                f"(it has {calibrated or 'no slot'})",
                hint="calibrate the same --slots: flare-eval calibrate --slots SPEC")
    names = {slot.name for slot in slots}
    timed = table[table["slot"].astype(str).isin(names) & table["seconds"].notna()]
    for (workload, mode), group in timed.groupby(["workload", "mode"], sort=True):
        spread = group["seconds"].max() / group["seconds"].min() - 1
        if spread > tolerance:
            slow = group.loc[group["seconds"].idxmax()]
            fast = group.loc[group["seconds"].idxmin()]
            message = (f"{source}: slots differ by {spread:.0%} on the {workload} workload "
                       f"({mode}): slot {slow['slot']} {slow['seconds']:.3f} s, slot "
                       f"{fast['slot']} {fast['seconds']:.3f} s; the tolerance is {tolerance:.0%}")
            if not allow_uneven:
                raise ConfigError(message, hint="use alike slots, or --allow-uneven-slots to "
                                  "run anyway (the timings are then not comparable)")
            warnings.warn(message, UnevenSlotsWarning, stacklevel=2)
