"""Efficiency measures against values computed by hand (in the comments)."""

from __future__ import annotations

import math

import pytest

from flare_eval.errors import InputError
from flare_eval.runner.efficiency import (
    EFFICIENCY_COLUMNS,
    efficiency_row,
    max_memory,
    official_auc,
    tolerance_auc,
    trapezoid_auc,
)


def test_official_auc_sums_samples_times_nominal_period():
    # (1000 + 2000 + 3000 + 4001) * 0.1 = 1000.1 -> 1000
    assert official_auc([1000, 2000, 3000, 4001]) == 1000
    # 5 + 10 + 10 = 25 -> 25 * 0.1 = 2.5 -> half to even: 2
    assert official_auc([5, 10, 10]) == 2
    # 35 * 0.1 = 3.5 -> 4 (half to even)
    assert official_auc([35]) == 4
    assert official_auc([]) == 0
    # a different period: 300 * 0.5 = 150
    assert official_auc([100, 200], period_s=0.5) == 150


def test_official_auc_ignores_timestamps_where_trapezoid_does_not():
    # Samples at 0, 0.1, 0.5 s (a late sample): official sums 3 * 100 * 0.1 = 30,
    # trapezoid: 0.1 * 100 + 0.4 * 100 = 50 MiB*s.
    assert official_auc([100, 100, 100]) == 30
    assert trapezoid_auc([0.0, 0.1, 0.5], [100, 100, 100]) == pytest.approx(50.0)


def test_trapezoid_auc_by_hand():
    # (0.5 - 0) * (0 + 1000) / 2 = 250; (2.0 - 0.5) * (1000 + 3000) / 2 = 3000 -> 3250
    assert trapezoid_auc([0.0, 0.5, 2.0], [0, 1000, 3000]) == pytest.approx(3250.0)
    assert trapezoid_auc([1.0], [500]) == 0.0
    assert trapezoid_auc([], []) == 0.0


def test_tolerance_auc_by_hand():
    # excess over 4096: 904, 0, 2000, 4; held 0.2, 0.1, 0.3 s and the last one period 0.1:
    # 904 * 0.2 + 0 + 2000 * 0.3 + 4 * 0.1 = 180.8 + 600 + 0.4 = 781.2
    t = [0.0, 0.2, 0.3, 0.6]
    m = [5000, 4000, 6096, 4100]
    assert tolerance_auc(t, m, tolerance=4096) == pytest.approx(781.2)
    # FLARE22's 2048 MiB tolerance: 2952*0.2 + 1952*0.1 + 4048*0.3 + 2052*0.1
    # = 590.4 + 195.2 + 1214.4 + 205.2 = 2205.2
    assert tolerance_auc(t, m, tolerance=2048) == pytest.approx(2205.2)
    # Tolerance 0 on a regular 0.1 s grid is the official sum before rounding:
    # (5000 + 4000 + 6096 + 4100) * 0.1 = 19196 * 0.1 = 1919.6
    grid = [0.0, 0.1, 0.2, 0.3]
    assert tolerance_auc(grid, m, tolerance=0) == pytest.approx(1919.6)
    assert tolerance_auc([], [], tolerance=4096) == 0.0


def test_max_memory_rounds_and_refuses_empty():
    assert max_memory([12.0, 3561.6, 100.0]) == 3562
    with pytest.raises(InputError, match="at least one sample"):
        max_memory([])


@pytest.mark.parametrize(
    "times, samples, match",
    [([0.0, 0.1], [1.0], "same length"), ([0.0, 0.2, 0.1], [1, 2, 3], "non-decreasing"),
     ([0.0, 0.1], [1.0, math.nan], "finite")],
)
def test_bad_sample_lists_raise(times, samples, match):
    with pytest.raises(InputError, match=match):
        trapezoid_auc(times, samples)


def test_negative_tolerance_raises():
    with pytest.raises(InputError, match="tolerance must be >= 0"):
        tolerance_auc([0.0], [1.0], tolerance=-1)


def test_efficiency_row_by_hand():
    row = efficiency_row(
        "FLARETs_0001_0000.nii.gz",
        8.6049,
        [1000.0, 3000.4, 3561.6],
        [[10.0, 5.0, 80.0], [50.0, 10.0, 35.5], [1.0, 1.0, 97.0]],
        [2048.123, 4096.456, 3000.0],
    )
    assert list(row) == list(EFFICIENCY_COLUMNS)
    assert row["Name"] == "FLARETs_0001_0000.nii.gz"
    assert row["Time"] == 8.6
    assert row["MaxGPU_Mem"] == 3562
    # (1000 + 3000.4 + 3561.6) * 0.1 = 756.2 -> 756
    assert row["AUC_GPU_Time"] == 756
    # busy = 100 - idle: 20, 64.5, 3 -> max 64.5, sum * 0.1 = 8.75
    assert row["MaxCPU_Utilization"] == 64.5
    assert row["AUC_CPU_Time"] == pytest.approx(8.75)
    assert row["MaxRAM"] == 4096.46
    # (2048.123 + 4096.456 + 3000) * 0.1 = 914.4579 -> 914
    assert row["AUC_RAM_Time"] == 914


def test_efficiency_row_without_gpu_leaves_gpu_columns_empty():
    row = efficiency_row("c_0000.nii.gz", 1.0, None, [[1.0, 1.0, 98.0]], [10.0])
    assert row["MaxGPU_Mem"] is None and row["AUC_GPU_Time"] is None
    assert row["MaxCPU_Utilization"] == 2.0
