"""``flare-eval evaluate --scheduler``: cases run on dask slot workers, results kept by the
organizer; a worker, the organizer or the scheduler killed midway changes nothing but where a
case ran.

Two ``dask worker`` processes on loopback (``--resources SLOT=1``, one core each through
``FLARE_EVAL_SLOT``, both on the shared docker engine) run 2 teams x 3 cases; a worker is
SIGKILLed while its container runs, or the organizer or the scheduler once two records
arrived (then the same command runs again, on a fresh scheduler and workers where the
scheduler died). The oracle is the sequential run of the same inputs without a scheduler: the
same leaderboard (the FLARE23 runtime floor of 15 s makes every run of these tiny cases tie;
the raw runtime column is wall time and differs), the same predictions byte for byte, each
case recorded exactly once; what ran again is what the docker engine's own events say started.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.errors import RunnerError
from flare_eval.runner.docker_backend import CONTAINER_LABEL
from flare_eval.runner.fleet import STRANDED_CHECK_S, tarball_image_ids
from tests.conftest import require_module, skip_or_fail, slot_worker
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


@pytest.fixture(scope="module")
def sequential(challenge, tmp_path_factory) -> Path:
    """The oracle: the same evaluation without a scheduler, one case at a time."""
    out = tmp_path_factory.mktemp("sequential") / "out"
    assert main(_args(challenge, out)) == 4  # finished, bravo's crash failed
    return out


def _assert_as_sequential(sequential: Path, out: Path, cases: list[str]) -> None:
    """The leaderboard, failures, predictions and logs of the sequential run; every case
    recorded exactly once."""
    boards = [pd.read_csv(o / "results" / "ranking" / "leaderboard.csv").drop(columns="runtime")
              for o in (sequential, out)]
    pd.testing.assert_frame_equal(*boards)
    assert (sequential / "failures.csv").read_bytes() == (out / "failures.csv").read_bytes()
    for team in ("alpha", "bravo"):
        table = pd.read_csv(out / "results" / team / "runs.csv", dtype=str)
        assert sorted(table["case"]) == cases  # every case exactly once
        records = sorted(p.name for p in (out / "results" / team / "efficiency").iterdir())
        assert records == [f"{c}_0000.json" for c in cases]
        for name in ("predictions", "logs"):
            a, b = sequential / "results" / team / name, out / "results" / team / name
            assert ({p.name: p.read_bytes() for p in a.iterdir()} ==
                    {p.name: p.read_bytes() for p in b.iterdir()}), (team, name)


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


def test_a_file_that_is_no_one_image_tarball_is_refused_by_its_path(tmp_path):
    # run --scheduler (--image) and evaluate (--submissions) both read tarballs: the message
    # names the file, not one of the two options
    bogus = tmp_path / "team.tar"
    bogus.write_bytes(b"not a tarball\n" * 64)
    with pytest.raises(RunnerError) as refused:
        tarball_image_ids(bogus)
    assert refused.value.message.startswith(f"{bogus}: not a docker save tarball (")
    two = tmp_path / "two.tar"
    with tarfile.open(two, "w") as archive:
        manifest = json.dumps([{"Config": "a.json"}, {"Config": "b.json"}]).encode()
        member = tarfile.TarInfo("manifest.json")
        member.size = len(manifest)
        archive.addfile(member, io.BytesIO(manifest))
    with pytest.raises(RunnerError) as refused:
        tarball_image_ids(two)
    assert refused.value.message == (f"{two}: expected a docker save tarball of exactly one "
                                     "image, its manifest.json lists 2")


def test_killed_worker_leaves_the_sequential_leaderboard(challenge, sequential, tmp_path,
                                                         docker_client):
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

    _assert_as_sequential(sequential, out, challenge.cases)
    runs = pd.concat([pd.read_csv(out / "results" / team / "runs.csv", dtype=str).assign(team=team)
                      for team in ("alpha", "bravo")])
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
    image = challenge.images / f"{challenge.cases[0]}_0000.nii.gz"
    task = CaseTask(str(tmp_path), "alpha", challenge.cases[0],
                    str(challenge.submissions / "alpha.tar"), frozenset({claimed}), image.name,
                    image.read_bytes(), DockerOptions(), 30.0, 0.0, 0.1, 1 << 20, OutputLimits())
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



def _scheduler(folder: Path) -> tuple[subprocess.Popen, str]:
    """A ``dask scheduler`` process on loopback (a port of its own) and its address."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "scheduler.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not file.is_file() or not file.read_text().strip():
        assert process.poll() is None and time.monotonic() < deadline, "no scheduler started"
        time.sleep(0.05)
    return process, json.loads(file.read_text())["address"]


def _wait_for_workers(address: str, n: int) -> None:
    with distributed.Client(address, timeout="30s") as client:
        client.wait_for_workers(n, timeout=60)


def _organizer(challenge, out: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flare_eval", *_args(challenge, out), "--scheduler", address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _records(out: Path) -> dict[tuple[str, str], bytes]:
    """``(team, case)``: the bytes of each case's record (efficiency JSON) under ``out``."""
    return {(path.parent.parent.name, path.name[: -len("_0000.json")]): path.read_bytes()
            for path in out.glob("**/efficiency/*_0000.json")}


def _wait_for_records(out: Path, organizer: subprocess.Popen, n: int) -> None:
    deadline = time.monotonic() + 120
    while len(_records(out)) < n:
        assert organizer.poll() is None, organizer.stderr.read().decode()
        assert time.monotonic() < deadline, "no case arrived"
        time.sleep(0.05)


def _starts(docker_client, challenge, since: float, until: float) -> Counter:
    """``(team, case)``: container starts of the teams' images between the Unix times, as the
    engine reports its own events (the oracle of what ran)."""
    teams = {image_id: team for team in ("alpha", "bravo")
             for image_id in tarball_image_ids(challenge.submissions / f"{team}.tar")}
    events = docker_client.events(since=int(since) - 1, until=int(until) + 1, decode=True,
                                  filters={"type": "container", "event": "start",
                                           "label": CONTAINER_LABEL})
    return Counter((teams[e["Actor"]["Attributes"]["image"]],
                    e["Actor"]["Attributes"]["flare-eval.case"]) for e in events
                   if e["timeNano"] > since * 1e9 and e["Actor"]["Attributes"]["image"] in teams)


def _stop(processes: list[subprocess.Popen]) -> None:
    """Kill the test's schedulers, workers and organizers, whatever failed."""
    for process in processes:
        process.kill()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def _not_final(out: Path) -> None:
    """What a killed evaluation leaves says it is not finished, and no table claims to be."""
    assert json.loads((out / "status.json").read_text())["complete"] is False
    assert not (out / "results" / "ranking").exists() and not (out / "report.html").exists()


@pytest.mark.parametrize("kill", ["organizer", "scheduler"])
def test_a_killed_organizer_or_scheduler_resumes_without_rerunning_a_finished_case(
        kill, challenge, sequential, tmp_path, docker_client):
    """SIGKILL the organizer (or the scheduler) once two records arrived, run the same command
    again (on a fresh scheduler and workers when the scheduler died): the cases recorded before
    the kill keep their record byte for byte and no container of theirs starts again (the
    engine's events), each case is recorded once, and the results are the sequential run's."""
    out = tmp_path / "fleet"
    processes: list[subprocess.Popen] = []
    try:
        scheduler, address = _scheduler(tmp_path / "s1")
        processes.append(scheduler)  # killed below whatever fails next
        processes += [slot_worker(address, "w0", "cpu:0"), slot_worker(address, "w1", "cpu:1")]
        _wait_for_workers(address, 2)
        organizer = _organizer(challenge, out, address)
        processes.append(organizer)
        _wait_for_records(out, organizer, 2)
        (organizer if kill == "organizer" else scheduler).kill()
        killed_at = time.time()
        if kill == "scheduler":
            # the organizer sees its scheduler gone and stops, with the arrived cases kept
            assert organizer.wait(timeout=120) == 3, organizer.stderr.read().decode()
            scheduler, address = _scheduler(tmp_path / "s2")
            processes.append(scheduler)
            # the same slots again (a team resumes on the slots its cases ran on)
            processes += [slot_worker(address, "w0", "cpu:0"), slot_worker(address, "w1", "cpu:1")]
            _wait_for_workers(address, 2)
        organizer.wait(timeout=60)
        before = _records(out)
        assert 2 <= len(before) < 2 * len(challenge.cases)
        _not_final(out)
        again = _organizer(challenge, out, address)
        processes.append(again)
        assert again.wait(timeout=180) == 4, again.stderr.read().decode()
        finished_at = time.time()
    finally:
        _stop(processes)
    after = _records(out)
    assert {key: after[key] for key in before} == before  # the finished cases kept their record
    starts = _starts(docker_client, challenge, killed_at, finished_at)
    assert not set(starts) & set(before), starts  # and none of them ran again
    assert set(starts) | set(before) == set(after)
    _assert_as_sequential(sequential, out, challenge.cases)


def test_a_team_whose_slot_workers_all_left_stops_loudly_and_resumes(
        challenge, sequential, tmp_path):
    """The only slot worker dies under a case: dask would hold the teams' cases for its
    address forever (a worker started again has another). The organizer stops within a
    check or two, naming the team and the worker's address, with nothing final; the worker
    started again under its name, the same command ends as the sequential run."""
    out = tmp_path / "fleet"
    processes: list[subprocess.Popen] = []
    try:
        scheduler, address = _scheduler(tmp_path / "s")
        processes.append(scheduler)
        worker = slot_worker(address, "w0", "cpu:0")
        processes.append(worker)
        _wait_for_workers(address, 1)
        organizer = _organizer(challenge, out, address)
        processes.append(organizer)
        _wait_for_records(out, organizer, 1)
        worker.kill()
        killed = time.monotonic()
        assert organizer.wait(timeout=4 * STRANDED_CHECK_S + 60) == 3
        waited = time.monotonic() - killed
        message = organizer.stderr.read().decode()
        assert re.search(r"team (alpha|bravo): none of the slot workers its cases run on "
                         r"\(tcp://127\.0\.0\.1:\d+\) is in the cluster any more", message), message
        assert waited < 2 * STRANDED_CHECK_S + 30  # a case takes 1 s: not an endless wait
        _not_final(out)
        processes.append(slot_worker(address, "w0", "cpu:0"))
        _wait_for_workers(address, 1)
        again = _organizer(challenge, out, address)
        processes.append(again)
        assert again.wait(timeout=180) == 4, again.stderr.read().decode()
    finally:
        _stop(processes)
    _assert_as_sequential(sequential, out, challenge.cases)


class _Killed(BaseException):
    """The organizer's process dying (no ``except Exception`` stops it)."""


def test_a_case_killed_between_its_files_runs_again(challenge, sequential, tmp_path, monkeypatch):
    """The organizer dies right after the first file of a case lands in ``--out``: its
    prediction, not its record (written last), so the same command runs the case again and
    the results are the sequential run's. With the record written first it would be skipped,
    without its prediction."""
    from flare_eval.organizer import evaluate
    import flare_eval.io.atomic as atomic

    monkeypatch.delenv("FLARE_EVAL_SLOT", raising=False)
    case = challenge.cases[0]
    out = tmp_path / "fleet"
    team_dir = (out / "results" / "alpha").resolve()
    replace = os.replace

    def dying(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        target = Path(dst).resolve()
        if target.parent.parent == team_dir and target.name.startswith(case):
            raise _Killed(f"killed after {target}")

    arguments = dict(submissions_dir=challenge.submissions, images_dir=challenge.images,
                     labels_dir=challenge.labels, out_dir=out, timeout_s=30.0, n_bootstrap=20,
                     seed=3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  resources={"SLOT": 1}, dashboard_address=":0") as cluster:
        monkeypatch.setattr(atomic.os, "replace", dying)
        with pytest.raises(_Killed):
            evaluate(**arguments, scheduler=cluster.scheduler_address)
        monkeypatch.setattr(atomic.os, "replace", replace)
        _not_final(out)
        assert (team_dir / "predictions" / f"{case}.nii.gz").is_file()
        assert not (team_dir / "efficiency" / f"{case}_0000.json").exists()
        evaluate(**arguments, scheduler=cluster.scheduler_address)
    _assert_as_sequential(sequential, out, challenge.cases)


def test_two_tries_of_a_case_on_one_host_run_one_after_the_other(challenge, tmp_path,
                                                                monkeypatch):
    """A case tried again on the host where an earlier try still runs (its organizer or
    scheduler was killed, the worker's thread cannot be stopped) waits for that try to end,
    instead of failing on the case's staging folder it holds."""
    from flare_eval.runner.docker_backend import DockerOptions
    from flare_eval.runner.fleet import CaseTask, run_case_task
    from flare_eval.runner.intake import OutputLimits

    monkeypatch.delenv("FLARE_EVAL_SLOT", raising=False)
    tarball = challenge.submissions / "alpha.tar"
    image = challenge.images / f"{challenge.cases[0]}_0000.nii.gz"
    task = CaseTask(str(tmp_path), "alpha", challenge.cases[0], str(tarball),
                    tarball_image_ids(tarball), image.name, image.read_bytes(), DockerOptions(),
                    30.0, 0.0, 0.1, 1 << 20, OutputLimits())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  resources={"SLOT": 1}, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        tries = [client.submit(run_case_task, task, resources={"SLOT": 1}, pure=False)
                 for _ in range(2)]
        results = client.gather(tries)
    records = [result.document["record"] for result in results]
    assert [r["status"] for r in records] == ["ok", "ok"]
    (a0, a1), (b0, b1) = sorted((pd.Timestamp(r["started_at"]), pd.Timestamp(r["finished_at"]))
                                for r in records)
    assert a1 <= b0  # one after the other


def test_run_with_a_scheduler_gives_evaluate_s_results_and_resumes(challenge, sequential,
                                                                    tmp_path, monkeypatch, capsys):
    """``flare-eval run --scheduler``: one team's cases on the cluster, the same predictions,
    logs and statuses as the sequential evaluation's; the same command again runs nothing
    (every record kept byte for byte); local-only options are refused in one line."""
    monkeypatch.delenv("FLARE_EVAL_SLOT", raising=False)
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  resources={"SLOT": 1}, dashboard_address=":0") as cluster:
        args = ["run", "--image", str(challenge.submissions / "bravo.tar"), "--inputs",
                str(challenge.images), "--out", str(out), "--timeout", "30", "--no-progress",
                "--scheduler", cluster.scheduler_address]
        assert main(args) == 4  # bravo crashes on its last case
        assert f"  {challenge.cases[2]}: crash: predict.sh exited with 3" in capsys.readouterr().err
        before = _records(tmp_path)
        assert main(args) == 4
        assert _records(tmp_path) == before  # resumed: nothing ran again
        for extra in (["--slots", "2"], ["--per-process-gpu"]):
            assert main([*args, *extra]) == 2
            assert f"--scheduler and {extra[0]}: on a cluster" in capsys.readouterr().err
        named = [*args[:2], "busybox:latest", *args[3:]]
        assert main(named) == 2
        assert "--image must be a docker save tarball" in capsys.readouterr().err
    team, oracle = out / "bravo", sequential / "results" / "bravo"
    for name in ("predictions", "logs"):
        assert ({p.name: p.read_bytes() for p in (oracle / name).iterdir()} ==
                {p.name: p.read_bytes() for p in (team / name).iterdir()}), name
    runs, expected = (pd.read_csv(t / "runs.csv", dtype=str) for t in (team, oracle))
    assert list(runs["case"]) == challenge.cases
    assert list(runs["status"]) == list(expected["status"]) == ["ok", "ok", "crash"]


def _hidden_worker(address: str, name: str, slot: str, hidden: Path,
                   no_mount: Path) -> subprocess.Popen:
    """A slot worker in a mount namespace of its own, where ``hidden`` is an empty tmpfs.

    A tmpfs the worker mounted in its namespace would be invisible to dockerd, so the output
    tmpfs of each case is left out (``no_mount`` holds a ``mount`` that fails, first on its
    PATH): the runner holds the output space as it does without root.
    """
    env = {**os.environ, "FLARE_EVAL_SLOT": slot}
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs none "$1" && PATH="$2:$PATH" && shift 2 && exec "$@"', "sh",
         str(hidden), str(no_mount), sys.executable, "-m", "dask", "worker", address, "--name",
         name, "--nthreads", "1", "--no-nanny", "--resources", "SLOT=1", "--no-dashboard"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_workers_that_see_none_of_the_organizer_s_files(challenge, sequential, tmp_path,
                                                        tmp_path_factory, docker_client):
    """Workers whose view of the file system hides every folder of the test session (the
    tarballs, the test images, --out) and whose engine lacks the teams' images: the
    organizer ships the tarballs and each case's image, and the results are the sequential
    run's."""
    import docker.errors

    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        skip_or_fail(f"no mount namespace for a worker here ({probe.stderr.decode().strip()})")
    for team in ("alpha", "bravo"):  # loaded by the sequential run
        for image_id in tarball_image_ids(challenge.submissions / f"{team}.tar"):
            try:
                docker_client.images.remove(image_id, force=True)
            except docker.errors.ImageNotFound:
                pass
    hidden = tmp_path_factory.getbasetemp()
    out = tmp_path / "fleet"
    cluster = distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                       host="127.0.0.1", dashboard_address=":0")
    no_mount = Path(tempfile.mkdtemp(prefix="flare-eval-no-mount-"))  # outside ``hidden``
    (no_mount / "mount").write_text("#!/bin/sh\nexit 1\n")
    (no_mount / "mount").chmod(0o755)
    workers = [_hidden_worker(cluster.scheduler_address, f"w{k}", f"cpu:{k}", hidden, no_mount)
               for k in range(2)]
    try:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            sees = client.run(lambda: (challenge.images.exists(), challenge.submissions.exists()))
            assert list(sees.values()) == [(False, False)] * 2  # the workers' view is blind
        assert main([*_args(challenge, out), "--scheduler", cluster.scheduler_address]) == 4
    finally:
        for process in workers:
            process.kill()
            process.wait(timeout=30)
        cluster.close()
        shutil.rmtree(no_mount)
    _assert_as_sequential(sequential, out, challenge.cases)
