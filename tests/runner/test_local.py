"""The local backend: the test submission run under bubblewrap with the container contract."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from flare_eval.errors import RunnerError
from flare_eval.runner import LocalBackend, ResourceSampler, run_submission
from tests.conftest import require_module, skip_or_fail

# The sampler reads CPU and RAM through psutil (the "runner" extra).
require_module("psutil")


@pytest.fixture
def bwrap() -> None:
    if shutil.which("bwrap") is None:
        skip_or_fail("bubblewrap is not installed (apt-get install bubblewrap)")


def test_local_backend_runs_every_outcome(bwrap, tmp_path, make_inputs, submission):
    inputs = make_inputs(["ok1", "hang", "crash", "noout", "wrongname", "badshape", "readonly"])
    backend = LocalBackend(submission)
    records = run_submission(backend, inputs, tmp_path / "out", team="local", timeout_s=1.5,
                             progress=False)
    by_case = {r["case"]: r for r in records}
    assert {c: r["status"] for c, r in by_case.items()} == {
        "badshape": "bad_output", "crash": "crash", "hang": "timeout", "noout": "no_output",
        "ok1": "ok", "readonly": "crash", "wrongname": "no_output",
    }
    assert by_case["crash"]["exit_code"] == 3
    # /workspace/inputs is read-only: 'touch' failed and the script exited 9
    assert by_case["readonly"]["exit_code"] == 9
    # killed at the 1.5 s timeout, not after the script's 30 s sleep
    assert 1.5 <= by_case["hang"]["time_s"] < 5
    assert by_case["hang"]["exit_code"] is None
    team = tmp_path / "out" / "local"
    assert (team / "predictions" / "ok1.nii.gz").read_bytes() == (
        inputs / "ok1_0000.nii.gz").read_bytes()
    assert "boom on crash" in (team / "logs" / "crash.stderr.txt").read_text()
    assert (team / "logs" / "ok1.stdout.txt").read_text() == "running ok1\n"
    eff = pd.read_csv(team / "local_Efficiency.csv")
    assert len(eff) == 7 and eff["MaxGPU_Mem"].isna().all() and (eff["Time"] > 0).all()


def test_local_backend_sandbox_sees_the_contract_and_no_network(bwrap, tmp_path, make_inputs):
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "predict.sh").write_text(
        "ls /workspace > /workspace/outputs/listing.txt\n"
        "cat /proc/net/dev | grep -c : > /workspace/outputs/interfaces.txt\n"
    )
    inputs_dir, outputs_dir = make_inputs(["case1"]), tmp_path / "outdir"
    outputs_dir.mkdir()
    with ResourceSampler(None) as sampler:
        execution = LocalBackend(folder).run_case(inputs_dir, outputs_dir, timeout_s=10,
                                                  sampler=sampler, name="case1")
    assert execution.exit_code == 0
    assert (outputs_dir / "listing.txt").read_text().split() == ["inputs", "outputs", "predict.sh"]
    # only the loopback device in a fresh network namespace
    assert (outputs_dir / "interfaces.txt").read_text().strip() == "1"


def test_local_backend_passes_the_gpu_device_nodes_only_when_asked(bwrap, tmp_path, make_inputs):
    # No GPU here: plain files stand in for the NVIDIA device nodes (bwrap binds them the same way).
    dev = tmp_path / "dev"
    dev.mkdir()
    for node in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (dev / node).write_text(node)
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "predict.sh").write_text(
        "ls /dev | grep nvidia > /workspace/outputs/nodes.txt\n"
        "echo \"$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER\" > /workspace/outputs/env.txt\n"
        "test -d /sys/class && echo yes > /workspace/outputs/sys.txt\n"
        "exit 0\n"
    )
    inputs_dir = make_inputs(["case1"])
    seen = {}
    for gpu, uuid in ((None, None), (1, None), (1, "GPU-0d5a")):
        outputs_dir = tmp_path / f"out{gpu}{uuid}"
        outputs_dir.mkdir()
        with ResourceSampler(None) as sampler:
            execution = LocalBackend(folder, gpu_index=gpu, gpu_uuid=uuid, dev_root=dev).run_case(
                inputs_dir, outputs_dir, timeout_s=10, sampler=sampler, name="case1")
        assert execution.exit_code == 0
        seen[uuid or gpu] = {f.stem: f.read_text().split() for f in outputs_dir.iterdir()}
    assert seen[None] == {"nodes": [], "env": []}  # no sys.txt: /sys is hidden
    assert seen[1] == {"nodes": ["nvidia-uvm", "nvidia0", "nvidia1", "nvidiactl"],
                       "env": ["1", "PCI_BUS_ID"], "sys": ["yes"]}
    # a GPU known by UUID is shown to CUDA by UUID, as docker's --gpus device= is given it
    assert seen["GPU-0d5a"]["env"] == ["GPU-0d5a", "PCI_BUS_ID"]


def test_local_backend_asked_for_a_gpu_without_one_says_so(bwrap, tmp_path, submission):
    with pytest.raises(RunnerError, match="no NVIDIA device nodes"):
        LocalBackend(submission, gpu_index=0, dev_root=tmp_path)


def test_local_backend_refuses_a_folder_without_predict_sh(tmp_path):
    with pytest.raises(RunnerError, match="expected a folder with predict.sh"):
        LocalBackend(tmp_path)


def test_local_backend_without_bwrap_says_so(tmp_path, submission, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RunnerError, match="needs bubblewrap") as info:
        LocalBackend(submission)
    assert "apt-get install bubblewrap" in info.value.hint


@pytest.mark.slow
def test_a_killed_run_loses_only_the_case_in_flight(bwrap, tmp_path, make_inputs, submission):
    import psutil

    from flare_eval.runner.intake import case_folder

    inputs = make_inputs(["crash", "hang", "ok1"])  # run in this order
    out = tmp_path / "res"
    argv = [sys.executable, "-m", "flare_eval", "run", "--backend", "local", "--submission",
            str(submission), "--inputs", str(inputs), "--out", str(out), "--team", "t",
            "--no-progress"]
    runner = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = out / "t" / "efficiency" / "crash_0000.json"
    deadline = time.monotonic() + 30
    staging = case_folder(out / "t", "hang")
    while not (record.exists() and staging.exists()):
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)  # 'hang' is now sleeping inside its sandbox
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    time.sleep(0.3)
    # --die-with-parent took the sandbox down with the runner: nothing of ours still runs
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(staging) in part for part in (p.info["cmdline"] or []))]
    assert left == []
    assert not (out / "t" / "efficiency" / "hang_0000.json").exists()
    before = record.read_text()

    result = subprocess.run([*argv, "--timeout", "1"], capture_output=True, text=True)
    assert result.returncode == 4, result.stderr
    runs = pd.read_csv(out / "t" / "runs.csv")
    assert dict(zip(runs["case"], runs["status"])) == {"crash": "crash", "hang": "timeout",
                                                       "ok1": "ok"}
    assert record.read_text() == before  # the finished case was not run again
