"""Calibration: the reference workload's table, and slots refused (or warned about) when their
times differ by more than the tolerance."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.errors import ConfigError, InputError
from flare_eval.presets import SLOT_TOLERANCE
from flare_eval.runner.calibrate import (CALIBRATION_COLUMNS, UnevenSlotsWarning, calibrate,
                                         check_calibration, read_calibration)
from flare_eval.runner.slots import Gpu, Slot, parse_slots

SLOTS = [Slot("0", frozenset({0})), Slot("1", frozenset({1}))]
HOST = socket.gethostname()


def _table(alone: tuple[float, float], together: tuple[float, float]) -> pd.DataFrame:
    rows = [{"host": HOST, "slot": str(k), "cpuset": str(k), "cpu_model": "X", "gpu_name": None,
             "gpu_uuid": None, "workload": "cpu", "mode": mode, "seconds": times[k],
             "ratio": math.nan, "note": ""}
            for mode, times in (("alone", alone), ("together", together)) for k in (0, 1)]
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))


def test_the_tolerance_is_ten_percent():
    assert SLOT_TOLERANCE == 0.10


def test_slots_within_the_tolerance_pass():
    # together: 1.09 / 1.00 - 1 = 9 % <= 10 %
    check_calibration(_table((1.0, 1.05), (1.0, 1.09)), SLOTS)


def test_slots_beyond_the_tolerance_are_refused_naming_both_and_the_spread():
    # together: 1.12 / 1.00 - 1 = 12 % > 10 %; alone 2 % would pass
    table = _table((1.0, 1.02), (1.0, 1.12))
    with pytest.raises(ConfigError, match=rf"--calibration: slots differ by 12% on the cpu "
                       rf"workload \(together\): slot 1 on {HOST} 1\.120 s, slot 0 on {HOST} "
                       rf"1\.000 s; the tolerance is 10%"):
        check_calibration(table, SLOTS)
    with pytest.warns(UnevenSlotsWarning, match="slots differ by 12%"):
        check_calibration(table, SLOTS, allow_uneven=True)


def test_a_slot_missing_or_calibrated_on_other_cores_is_refused():
    table = _table((1.0, 1.0), (1.0, 1.0))
    with pytest.raises(ConfigError, match=rf"slot 2 \(host {HOST}, cores 2\) is not in the table"):
        check_calibration(table, [*SLOTS, Slot("2", frozenset({2}))])
    with pytest.raises(ConfigError, match=r"slot 1 \(host .*, cores 1-2\) is not in the table"):
        check_calibration(table, [SLOTS[0], Slot("1", frozenset({1, 2}))])
    # a cluster's slot calibrated on another host than the one it runs on now
    with pytest.raises(ConfigError, match=rf"slot 1 \(host elsewhere, cores 1\) is not in the "
                       rf"table \(it has 0 \({HOST}, cores 0\), 1 \({HOST}, cores 1\)\)"):
        check_calibration(table, SLOTS, hosts={"0": HOST, "1": "elsewhere"})


def test_calibrate_times_every_slot_alone_and_together(tmp_path):
    slots = parse_slots("cpu:0,cpu:1") if len(parse_slots("2")) == 2 else parse_slots("cpu:0")
    table = calibrate(slots, loops=200_000)
    assert list(table.columns) == list(CALIBRATION_COLUMNS)
    assert sorted(zip(table["slot"], table["mode"])) == sorted(
        (s.name, mode) for s in slots for mode in ("alone", "together"))
    assert set(table["host"]) == {HOST}
    # the CPU model as Linux names it for these cores
    models = {line.split(":", 1)[1].strip() for line in
              Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")}
    assert len(models) > 1 or set(table["cpu_model"]) == models
    assert (table["seconds"] > 0).all() and (table["workload"] == "cpu").all()
    # the fastest of each mode has ratio 1, the others above
    assert table.groupby("mode")["ratio"].min().tolist() == [1.0, 1.0]
    assert (table["ratio"] >= 1).all()


def test_a_gpu_slot_without_cuda_is_skipped_with_a_note():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: the GPU workload runs")
    table = calibrate([Slot("0", frozenset({0}), Gpu(0, "GPU-x"))], loops=10_000)
    gpu = table[table["workload"] == "gpu"]
    assert len(gpu) == 2 and gpu["seconds"].isna().all()
    assert set(gpu["note"]) == {"CUDA is not available to torch"}
    check_calibration(table, [Slot("0", frozenset({0}), Gpu(0, "GPU-x"))])  # NaN: not compared


def test_cli_writes_the_table_and_evaluate_reads_it(tmp_path, capsys):
    out = tmp_path / "calibration.csv"
    assert main(["calibrate", "--slots", "cpu:0", "--out", str(out), "--loops", "100000"]) == 0
    table = read_calibration(out)
    assert list(table["mode"]) == ["alone", "together"] and list(table["cpuset"]) == ["0", "0"]
    assert f"slot 0 on {HOST} [0] cpu alone:" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"--calibration .*nope.csv: expected a file"):
        read_calibration(tmp_path / "nope.csv")
