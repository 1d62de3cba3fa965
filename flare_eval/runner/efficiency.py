"""Efficiency measures of one container run: memory-time areas, maxima and the official CSV row.

Pure functions on the sample lists a :class:`~flare_eval.runner.sampler.ResourceSampler`
collects. The official FLARE definitions assume a fixed 0.1 s period and ignore the real
timestamps; the trapezoid and tolerance variants use the timestamps, so a late or skipped
sample weighs what it really lasted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flare_eval.errors import InputError

__all__ = [
    "OFFICIAL_PERIOD_S",
    "EFFICIENCY_COLUMNS",
    "official_auc",
    "trapezoid_auc",
    "tolerance_auc",
    "max_memory",
    "cpu_utilisation_percent",
    "efficiency_row",
]

#: The sampling period the official harness assumed when it summed samples.
OFFICIAL_PERIOD_S = 0.1

#: Columns of the official ``<team>_Efficiency.csv``, in order.
EFFICIENCY_COLUMNS: tuple[str, ...] = (
    "Name",
    "Time",
    "MaxGPU_Mem",
    "AUC_GPU_Time",
    "MaxCPU_Utilization",
    "AUC_CPU_Time",
    "MaxRAM",
    "AUC_RAM_Time",
)


def _as_1d(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InputError(f"{name} must be a 1-D sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} must hold finite numbers, got {array[~np.isfinite(array)][:3]}")
    return array


def _checked_times(times_s: Sequence[float], samples: np.ndarray, name: str) -> np.ndarray:
    times = _as_1d(times_s, "times_s")
    if times.shape != samples.shape:
        raise InputError(
            f"times_s and {name} must have the same length, got {times.size} and {samples.size}"
        )
    if np.any(np.diff(times) < 0):
        raise InputError("times_s must be non-decreasing (monotonic clock readings)")
    return times


def official_auc(samples: Sequence[float], *, period_s: float = OFFICIAL_PERIOD_S) -> int:
    """The official area under a memory-time curve: every sample counts one nominal period.

    Parameters
    ----------
    samples
        Memory samples, e.g. GPU MiB, in the order taken.
    period_s
        The nominal sampling period in seconds.

    Returns
    -------
    int
        ``round(sum(samples) * period_s)`` (MiB*s for GPU MiB); 0 for no samples.

    Notes
    -----
    .. math:: \\mathrm{AUC} = \\operatorname{round}\\Big(\\Delta t \\sum_i m_i\\Big)

    with the rounding of ``np.round`` (half to even), as the official ``load_json.py``.

    Examples
    --------
    >>> official_auc([100, 200, 300])
    60
    """
    array = _as_1d(samples, "samples")
    return int(np.round(array.sum() * period_s))


def trapezoid_auc(times_s: Sequence[float], samples: Sequence[float]) -> float:
    """Area under the memory-time curve on the real sample timestamps (trapezoid rule).

    Parameters
    ----------
    times_s
        Monotonic timestamps of the samples, in seconds (any origin).
    samples
        The samples, e.g. GPU MiB, one per timestamp.

    Returns
    -------
    float
        :math:`\\sum_i (t_{i+1} - t_i)(m_i + m_{i+1}) / 2`, e.g. in MiB*s; 0 for fewer than
        two samples.

    Raises
    ------
    InputError
        When the lengths differ or the timestamps decrease.

    Examples
    --------
    >>> trapezoid_auc([0.0, 0.5, 1.5], [100, 300, 300])
    400.0
    """
    values = _as_1d(samples, "samples")
    times = _checked_times(times_s, values, "samples")
    if values.size < 2:
        return 0.0
    return float(np.sum(np.diff(times) * (values[1:] + values[:-1]) / 2.0))


def tolerance_auc(
    times_s: Sequence[float],
    samples: Sequence[float],
    *,
    tolerance: float,
    period_s: float = OFFICIAL_PERIOD_S,
) -> float:
    """Area of the memory-time curve above a tolerance, each sample held until the next.

    Parameters
    ----------
    times_s
        Monotonic timestamps of the samples, in seconds.
    samples
        The samples, e.g. GPU MiB.
    tolerance
        Memory that is free, in the unit of ``samples`` (FLARE23: 4096 MiB; FLARE22: 2048).
    period_s
        How long the last sample is held (it has no successor).

    Returns
    -------
    float
        :math:`\\sum_i \\max(0, m_i - \\mathrm{tol})\\,\\Delta t_i` with
        :math:`\\Delta t_i = t_{i+1} - t_i` and :math:`\\Delta t_{n-1}` = ``period_s``.
        On exactly periodic timestamps with ``tolerance=0`` this equals the official sum
        before rounding.

    Raises
    ------
    InputError
        When the lengths differ, the timestamps decrease or the tolerance is negative.

    Examples
    --------
    >>> tolerance_auc([0.0, 0.5, 1.5], [5000, 4000, 6096], tolerance=4096, period_s=0.25)
    952.0
    """
    if not tolerance >= 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance}")
    values = _as_1d(samples, "samples")
    times = _checked_times(times_s, values, "samples")
    if values.size == 0:
        return 0.0
    held_s = np.append(np.diff(times), period_s)
    return float(np.sum(np.maximum(values - tolerance, 0.0) * held_s))


def max_memory(samples: Sequence[float]) -> int:
    """Largest sample, rounded to an integer (the official ``MaxGPU_Mem`` of FLARE23).

    Raises
    ------
    InputError
        For no samples: there is no maximum (report an empty value instead).

    Examples
    --------
    >>> max_memory([1.4, 3071.6, 12.0])
    3072
    """
    values = _as_1d(samples, "samples")
    if values.size == 0:
        raise InputError("max_memory needs at least one sample, got none")
    return int(np.round(values.max()))


def cpu_utilisation_percent(cpu_list: Sequence[Sequence[float]]) -> np.ndarray:
    """Busy CPU percentage of each ``[user, system, idle]`` sample: ``100 - idle``."""
    array = np.asarray(cpu_list, dtype=np.float64)
    if array.size == 0:
        return np.zeros(0)
    if array.ndim != 2 or array.shape[1] != 3:
        raise InputError(f"cpu_list must hold [user, system, idle] triples, got shape {array.shape}")
    return 100.0 - array[:, 2]


def efficiency_row(
    name: str,
    time_s: float,
    gpu_memory_mib: Sequence[float] | None,
    cpu_list: Sequence[Sequence[float]],
    ram_mib: Sequence[float],
    *,
    period_s: float = OFFICIAL_PERIOD_S,
) -> dict[str, object]:
    """One row of the official ``<team>_Efficiency.csv``.

    Parameters
    ----------
    name
        The input file name, ``<id>_0000.nii.gz``.
    time_s
        Wall time of the whole container run, in seconds.
    gpu_memory_mib
        Device-wide used GPU memory samples in MiB, or ``None`` when no GPU was sampled
        (the GPU columns are then ``None``, written as empty cells).
    cpu_list
        ``[user, system, idle]`` percentages per sample.
    ram_mib
        Host used RAM per sample, in MiB.
    period_s
        Nominal sampling period of the sums.

    Returns
    -------
    dict
        Keys :data:`EFFICIENCY_COLUMNS`. ``Time`` rounded to 2 places, ``MaxGPU_Mem``
        ``round(max)``, ``AUC_GPU_Time`` :func:`official_auc`, ``MaxCPU_Utilization`` and
        ``AUC_CPU_Time`` from ``100 - idle`` (2 places), ``MaxRAM`` (2 places) and
        ``AUC_RAM_Time`` (integer), all with ``np.round`` as the official ``load_json.py``.
        Columns without samples are ``None``.

    Examples
    --------
    >>> row = efficiency_row("c_0000.nii.gz", 1.234, [10, 30], [[5, 5, 90], [20, 10, 70]], [100, 200])
    >>> row["Time"], row["MaxGPU_Mem"], row["AUC_GPU_Time"], row["MaxCPU_Utilization"], row["AUC_CPU_Time"]
    (1.23, 30, 4, 30.0, 4.0)
    """
    used_cpu = cpu_utilisation_percent(cpu_list)
    ram = _as_1d(ram_mib, "ram_mib")
    has_gpu = gpu_memory_mib is not None and len(gpu_memory_mib) > 0
    return {
        "Name": name,
        "Time": float(np.round(time_s, 2)),
        "MaxGPU_Mem": max_memory(gpu_memory_mib) if has_gpu else None,
        "AUC_GPU_Time": official_auc(gpu_memory_mib, period_s=period_s) if has_gpu else None,
        "MaxCPU_Utilization": float(np.round(used_cpu.max(), 2)) if used_cpu.size else None,
        "AUC_CPU_Time": float(np.round(used_cpu.sum() * period_s, 2)) if used_cpu.size else None,
        "MaxRAM": float(np.round(ram.max(), 2)) if ram.size else None,
        "AUC_RAM_Time": int(np.round(ram.sum() * period_s)) if ram.size else None,
    }
