"""Scale-out: scoring through a real dask.distributed cluster (a scheduler and two workers on
loopback, each its own process, as ``dask scheduler`` / ``dask worker`` start them)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import pytest

from flare_eval.cli.main import main
from flare_eval.phantoms import write_phantom_set
from tests.conftest import require_module

require_module("distributed")
pytestmark = [pytest.mark.dask, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    dask = shutil.which("dask")
    if dask is None:
        pytest.skip("the dask command line is not installed")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("dask")
    logs = [open(log / name, "w") for name in ("s.log", "w0.log", "w1.log")]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=logs[0], stderr=subprocess.STDOUT)]
    from distributed import Client

    deadline = time.time() + 60
    while True:
        try:
            Client(address, timeout="2s").close()
            break
        except OSError:
            if time.time() > deadline:
                raise RuntimeError((log / "s.log").read_text())
            time.sleep(0.5)
    for k in range(2):
        procs.append(subprocess.Popen(
            [dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
             "--name", f"w{k}"], stdout=logs[k + 1], stderr=subprocess.STDOUT))
    with Client(address, timeout="10s") as client:
        client.wait_for_workers(2, timeout=60)
    yield address
    for proc in procs[::-1]:
        proc.terminate()
        proc.wait(timeout=30)
    for handle in logs:
        handle.close()


def test_scores_through_the_cluster_equal_the_local_run(cluster, tmp_path):
    from distributed import Client

    write_phantom_set(tmp_path / "c", cases=4, seed=21, shape=(56, 56, 36), spacing_mm=(6.0, 6.0, 8.0),
                      prediction_quality="fair", missing_predictions=1)
    args = ["score", "--pred", str(tmp_path / "c" / "predictions"), "--gt", str(tmp_path / "c" / "labels")]
    assert main([*args, "--out", str(tmp_path / "local")]) == 4
    with Client(cluster) as client:
        before = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.transition_log))
    assert main([*args, "--out", str(tmp_path / "dask"), "--scheduler", cluster]) == 4
    with Client(cluster) as client:  # the scheduler really saw the work
        after = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.transition_log))
    assert after > before
    for name in ("scores.txt", "per_case.csv", "metrics_long.csv", "cases.csv", "lesions.csv",
                 "lesions_per_case.csv"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()


def test_unreachable_scheduler_is_a_clear_error(tmp_path, capsys):
    write_phantom_set(tmp_path / "c", cases=1, seed=3, shape=(32, 32, 24), spacing_mm=(10.0, 10.0, 12.0))
    code = main(["score", "--pred", str(tmp_path / "c" / "labels"), "--gt", str(tmp_path / "c" / "labels"),
                 "--out", str(tmp_path / "o"), "--scheduler", f"tcp://127.0.0.1:{free_port()}"])
    assert code == 2
    assert "no dask scheduler answers" in capsys.readouterr().err
