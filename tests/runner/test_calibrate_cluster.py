"""Calibration across hosts: ``flare-eval calibrate --scheduler`` on the slot workers of a dask
cluster, and ``evaluate --scheduler --calibration`` refusing a cluster whose slots differ.

Two ``dask worker`` processes on a loopback scheduler, ``FLARE_EVAL_SLOT=cpu:0`` and ``cpu:1``.
The slow slot is made slow for real: w1 runs at niceness 10 and a busy loop of niceness 0 is
pinned to its core, so the kernel gives w1's reference loop about a tenth of core 1 (CFS
weights 110 against 1024; the oracle is the kernel's share, not our timing code). A bare busy
loop would not do on a shared machine: the kernel moves other work off the busy core, onto
w0's. The refusals need no container engine: they come before anything runs.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.phantoms import write_phantom_set
from flare_eval.runner.slots import host_cpus
from tests.conftest import require_module, slot_worker

distributed = require_module("distributed")
pytestmark = pytest.mark.slow

HOST = socket.gethostname()
HOG = "import os\nos.sched_setaffinity(0, {1})\nwhile True:\n    pass\n"


@pytest.fixture(scope="module")
def cluster():
    """A loopback scheduler with slot workers w0 (core 0) and w1 (core 1, niceness 10)."""
    if not {0, 1} <= host_cpus():
        pytest.skip(f"needs cores 0 and 1, this process may use {sorted(host_cpus())}")
    local = distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                     host="127.0.0.1", dashboard_address=":0")
    workers = [slot_worker(local.scheduler_address, "w0", "cpu:0"),
               slot_worker(local.scheduler_address, "w1", "cpu:1", nice=10)]
    try:
        with distributed.Client(local) as client:
            client.wait_for_workers(2, timeout=60)
        yield local.scheduler_address
    finally:
        for process in workers:
            process.kill()
            process.wait(timeout=30)
        local.close()


@pytest.fixture(scope="module")
def challenge(tmp_path_factory) -> Path:
    """One phantom case and a team whose tarball is no image (nothing needs an engine)."""
    root = tmp_path_factory.mktemp("calibrate-cluster")
    write_phantom_set(root / "test", cases=1, seed=3, shape=(16, 16, 8), prefix="hidden")
    (root / "submissions").mkdir()
    (root / "submissions" / "alpha.tar").write_bytes(b"not a docker image")
    return root


def _evaluate(challenge: Path, out: Path, address: str, *extra: str) -> list[str]:
    return ["evaluate", "--submissions", str(challenge / "submissions"),
            "--images", str(challenge / "test" / "images"),
            "--labels", str(challenge / "test" / "labels"), "--out", str(out),
            "--bootstrap", "0", "--no-progress", "--scheduler", address, *extra]


def _table(seconds: dict[str, float], *, slots: tuple[str, ...] = ("w0", "w1")) -> str:
    rows = ["host,slot,cpuset,cpu_model,gpu_name,gpu_uuid,workload,mode,seconds,ratio,note"]
    rows += [f"{HOST},{slot},{slot[1:]},X,,,cpu,{mode},{seconds[slot]},,"
             for mode in ("alone", "together") for slot in slots]
    return "\n".join(rows) + "\n"


def test_calibrate_finds_the_throttled_slot_and_evaluate_refuses_it(cluster, challenge, tmp_path,
                                                                   capsys):
    hog = subprocess.Popen([sys.executable, "-c", HOG])
    try:
        table_path = tmp_path / "calibration.csv"
        assert main(["calibrate", "--scheduler", cluster, "--out", str(table_path),
                     "--loops", "1000000", "--no-progress"]) == 0
        calibrate_err = capsys.readouterr().err
        out = tmp_path / "out"
        assert main(_evaluate(challenge, out, cluster, "--calibration", "run")) == 2
        evaluate_err = capsys.readouterr().err
    finally:
        hog.kill()
        hog.wait(timeout=30)
    table = pd.read_csv(table_path, dtype={"slot": str, "cpuset": str})
    # every slot worker, alone and together, on the host and core its FLARE_EVAL_SLOT names
    assert sorted(zip(table["host"], table["slot"], table["cpuset"], table["mode"])) == [
        (HOST, "w0", "0", "alone"), (HOST, "w0", "0", "together"),
        (HOST, "w1", "1", "alone"), (HOST, "w1", "1", "together")]
    assert (table["workload"] == "cpu").all() and table["seconds"].notna().all()
    alone = table[table["mode"] == "alone"].set_index("slot")["seconds"]
    # w1 has a tenth of a core: about 10x; far above the 10 % tolerance on a loaded machine
    assert alone["w1"] / alone["w0"] > 2
    assert re.search(rf"slots differ by \d+% on the cpu workload \(alone\): slot w1 on {HOST}",
                     calibrate_err), calibrate_err
    # evaluate measured the cluster itself and refused it in one line naming the slow slot
    lines = [line for line in evaluate_err.splitlines() if "slot w1" in line]
    assert len(lines) == 1, evaluate_err
    assert re.fullmatch(rf"flare-eval evaluate: error: --calibration run \(table in .*\): slots "
                        rf"differ by \d+% on the cpu workload \(alone\): slot w1 on {HOST} "
                        rf"[\d.]+ s, slot w0 on {HOST} [\d.]+ s; the tolerance is 10%", lines[0])
    kept = pd.read_csv(out / "calibration.csv", dtype={"slot": str})
    assert sorted(kept["slot"]) == ["w0", "w0", "w1", "w1"]
    assert not (out / "manifest.json").exists() and not (out / "results").exists()


def test_an_edited_table_is_refused_naming_the_slow_slot(cluster, challenge, tmp_path, capsys):
    table = tmp_path / "calibration.csv"
    table.write_text(_table({"w0": 1.5, "w1": 1.0}))  # w0: 50 % slower
    assert main(_evaluate(challenge, tmp_path / "out", cluster, "--calibration", str(table))) == 2
    err = capsys.readouterr().err
    assert (f"flare-eval evaluate: error: --calibration {table}: slots differ by 50% on the cpu "
            f"workload (alone): slot w0 on {HOST} 1.500 s, slot w1 on {HOST} 1.000 s; the "
            "tolerance is 10%\n") in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_table_without_a_worker_of_the_cluster_is_refused(cluster, challenge, tmp_path, capsys):
    table = tmp_path / "calibration.csv"
    table.write_text(_table({"w0": 1.0, "w2": 1.0}, slots=("w0", "w2")))
    assert main(_evaluate(challenge, tmp_path / "out", cluster, "--calibration", str(table))) == 2
    assert (f"slot w1 (host {HOST}, cores 1) is not in the table (it has w0 ({HOST}, cores 0), "
            f"w2 ({HOST}, cores 2))") in capsys.readouterr().err


# as a user runs it: the warning printed, not raised (as -W error would)
@pytest.mark.filterwarnings("default::flare_eval.runner.calibrate.UnevenSlotsWarning")
def test_allow_uneven_slots_warns_and_the_report_shows_the_calibration(cluster, challenge,
                                                                      tmp_path, capsys):
    table = tmp_path / "calibration.csv"
    table.write_text(_table({"w0": 1.0, "w1": 1.25}))
    out = tmp_path / "out"
    # the team's tarball is no image: it ran nowhere, and was scored as missing on every case
    assert main(_evaluate(challenge, out, cluster, "--calibration", str(table),
                          "--allow-uneven-slots")) == 4
    err = capsys.readouterr().err
    assert (f"flare-eval evaluate: warning: --calibration {table}: slots differ by 25% on the cpu "
            f"workload (alone): slot w1 on {HOST} 1.250 s") in err
    report = (out / "report.html").read_text()
    section = report[report.index('<h2 id="calibration">'):]
    assert "slots differ by 25.0% (slot w1 slowest, slot w0 fastest), beyond the tolerance" in section
    assert "<td>w1</td>" in section and "<td>1.250</td>" in section
