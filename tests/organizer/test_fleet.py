"""``flare-eval evaluate --scheduler``: cases run on dask slot workers, results kept by the
organizer; a worker killed midway changes nothing but where a case ran.

Two ``dask worker`` processes on loopback (``--resources SLOT=1``, one core each through
``FLARE_EVAL_SLOT``, both on the shared docker engine) run 2 teams x 3 cases; one worker is
SIGKILLed while its container runs. The oracle is the sequential run of the same inputs
without a scheduler: the same leaderboard (the FLARE23 runtime floor of 15 s makes every
run of these tiny cases tie; the raw runtime column is wall time and differs), the same
predictions byte for byte, each case recorded exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.runner.docker_backend import CONTAINER_LABEL
from flare_eval.runner.fleet import tarball_image_ids
from tests.conftest import require_module, slot_worker
from tests.organizer.conftest import Team, build_challenge, remove_tags

require_module("psutil")
distributed = require_module("distributed")
pytest.importorskip("matplotlib")  # the report
pytestmark = [pytest.mark.docker, pytest.mark.slow]

CASE_S = 1.0  # each case sleeps this long: the window to kill a worker in


@pytest.fixture(scope="module")
def challenge(docker_client, tmp_path_factory):
    """3 cases, alpha (excellent) and bravo (good, crashes on the last case)."""
    root = tmp_path_factory.mktemp("fleet")
    built = build_challenge(docker_client, root, cases=3, teams=lambda cases: (
        Team("alpha", "excellent", slow_s=CASE_S),
        Team("bravo", "good", crash=cases[2], slow_s=CASE_S)))
    yield built
    remove_tags(docker_client, built.tags)


def _args(challenge, out: Path) -> list[str]:
    return ["evaluate", "--submissions", str(challenge.submissions), "--images",
            str(challenge.images), "--labels", str(challenge.labels), "--out", str(out),
            "--timeout", "30", "--bootstrap", "20", "--seed", "3", "--no-progress"]


def _running_on_core(docker_client, core: str) -> list:
    return [c for c in docker_client.containers.list(filters={"label": CONTAINER_LABEL})
            if c.attrs["HostConfig"].get("CpusetCpus") == core]


def test_tarball_image_id_is_the_engine_s(challenge, docker_client):
    # the oracle is the engine itself: the ID it gives the image it loads from the tarball
    tarball = challenge.submissions / "alpha.tar"
    with tarball.open("rb") as stream:
        (loaded,) = docker_client.images.load(stream)
    assert loaded.id in tarball_image_ids(tarball)


def test_killed_worker_leaves_the_sequential_leaderboard(challenge, tmp_path, docker_client):
    sequential = tmp_path / "sequential"
    assert main(_args(challenge, sequential)) == 4  # finished, bravo's crash failed

    cluster = distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                       host="127.0.0.1", dashboard_address=":0")
    workers = {"w0": slot_worker(cluster.scheduler_address, "w0", "cpu:0"),
               "w1": slot_worker(cluster.scheduler_address, "w1", "cpu:1")}
    out = tmp_path / "fleet"
    try:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
        organizer = subprocess.Popen(
            [sys.executable, "-m", "flare_eval", *_args(challenge, out),
             "--scheduler", cluster.scheduler_address],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        # kill w0 (core 0) while a container of its case runs, with most cases left
        while not _running_on_core(docker_client, "0"):
            assert organizer.poll() is None, organizer.stderr.read().decode()
            assert time.monotonic() < deadline, "no case ever ran on w0"
            time.sleep(0.05)
        held = _running_on_core(docker_client, "0")[0]
        in_flight = (next(t for t in ("alpha", "bravo") if held.attrs["Image"] in
                          tarball_image_ids(challenge.submissions / f"{t}.tar")),
                     held.labels["flare-eval.case"])
        workers["w0"].kill()
        workers["w0"].wait(timeout=30)
        assert organizer.wait(timeout=120) == 4, organizer.stderr.read().decode()
        organizer.stderr.close()
    finally:
        for process in workers.values():
            process.kill()
            process.wait(timeout=30)
        cluster.close()

    boards = [pd.read_csv(o / "results" / "ranking" / "leaderboard.csv").drop(columns="runtime")
              for o in (sequential, out)]
    pd.testing.assert_frame_equal(*boards)
    assert ((sequential / "failures.csv").read_bytes() == (out / "failures.csv").read_bytes())
    runs = []
    for team in ("alpha", "bravo"):
        table = pd.read_csv(out / "results" / team / "runs.csv", dtype=str)
        assert sorted(table["case"]) == challenge.cases  # every case exactly once
        records = sorted(p.name for p in (out / "results" / team / "efficiency").iterdir())
        assert records == [f"{c}_0000.json" for c in challenge.cases]
        for name in ("predictions", "logs"):
            a, b = sequential / "results" / team / name, out / "results" / team / name
            assert ({p.name: p.read_bytes() for p in a.iterdir()} ==
                    {p.name: p.read_bytes() for p in b.iterdir()}), (team, name)
        runs.append(table.assign(team=team))
    runs = pd.concat(runs)
    # the case w0 held when it died ran again on w1, and w1 ran whatever w0 did not finish
    retried = runs[(runs["team"] == in_flight[0]) & (runs["case"] == in_flight[1])]
    assert list(retried["slot"]) == ["w1"]
    assert set(runs["slot"]) <= {"w0", "w1"}
    assert set(zip(runs["slot"], runs["cpuset"])) <= {("w0", "0"), ("w1", "1")}
    runner = json.loads((out / "results" / "alpha" / "runner.json").read_text())
    assert runner["runner"] == "cluster"


def test_a_tarball_that_loads_as_another_image_is_refused(challenge, tmp_path, monkeypatch):
    """The worker's copy of the tarball differs from the organizer's: the case is ``error``,
    naming both IDs, and nothing runs."""
    from flare_eval.runner.docker_backend import DockerOptions
    from flare_eval.runner.fleet import CaseTask, run_case_task
    from flare_eval.runner.intake import OutputLimits

    monkeypatch.delenv("FLARE_EVAL_SLOT", raising=False)
    claimed = "sha256:" + "0" * 64
    task = CaseTask(str(tmp_path), "alpha", challenge.cases[0],
                    str(challenge.submissions / "alpha.tar"), frozenset({claimed}),
                    str(challenge.images), DockerOptions(), 30.0, 0.0, 0.1, 1 << 20,
                    OutputLimits())
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  resources={"SLOT": 1}, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        result = client.submit(run_case_task, task, resources={"SLOT": 1}).result()
    record = result.document["record"]
    assert record["status"] == "error" and result.prediction is None
    real = tarball_image_ids(challenge.submissions / "alpha.tar")
    assert any(f"loads as image {i}, but the organizer's copy is image {claimed}: the copies "
               "differ" in record["message"] for i in real), record["message"]
    assert record["slot"] == "0" and record["cpuset"]  # the worker's name, the whole host
