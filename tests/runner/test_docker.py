"""Real containers of a busybox test image: every outcome, and never a container left behind."""

from __future__ import annotations

import contextlib
import time

import pandas as pd
import pytest

from flare_eval.errors import RunnerError
from flare_eval.runner import DockerBackend, DockerOptions, ResourceSampler, load_image, run_submission
from flare_eval.runner.docker_backend import CONTAINER_LABEL
from tests.conftest import require_module

# The sampler reads CPU and RAM through psutil (the "runner" extra).
require_module("psutil")

pytestmark = pytest.mark.docker


def _leftovers(client, image: str) -> list:
    # Only this session's image: other test runs may share the engine.
    return client.containers.list(all=True, filters={"label": CONTAINER_LABEL, "ancestor": image})


@pytest.mark.slow
def test_every_outcome_in_fresh_containers(docker_client, busybox_image, tmp_path, make_inputs):
    cases = ["ok1", "hang", "crash", "oom", "noout", "wrongname", "readonly"]
    inputs = make_inputs(cases)
    options = DockerOptions(memory="32m", shm_size="8m", pids_limit=64)
    backend = DockerBackend(docker_client, busybox_image, options)
    records = run_submission(backend, inputs, tmp_path / "out", team="bb", timeout_s=3,
                             progress=False)
    by_case = {r["case"]: r for r in records}
    assert {c: r["status"] for c, r in by_case.items()} == {
        "crash": "crash", "hang": "timeout", "noout": "no_output", "ok1": "ok", "oom": "oom",
        "readonly": "crash", "wrongname": "no_output",
    }
    # dd's 64 MiB buffer under a 32 MiB limit (swap included): SIGKILL by the OOM killer
    assert by_case["oom"]["exit_code"] == 137 and by_case["oom"]["oom_killed"]
    assert by_case["crash"]["exit_code"] == 3 and not by_case["crash"]["oom_killed"]
    assert by_case["readonly"]["exit_code"] == 9  # the input mount is read-only
    assert 3 <= by_case["hang"]["time_s"] < 10
    assert "found 1 entry (wrongname_0000.nii.gz)" in by_case["wrongname"]["message"]
    team = tmp_path / "out" / "bb"
    assert (team / "predictions" / "ok1.nii.gz").read_bytes() == (
        inputs / "ok1_0000.nii.gz").read_bytes()
    assert "boom on crash" in (team / "logs" / "crash.stderr.txt").read_text()
    assert (team / "logs" / "ok1.stdout.txt").read_text() == "running ok1\n"
    eff = pd.read_csv(team / "bb_Efficiency.csv")
    assert list(eff["Name"]) == sorted(f"{c}_0000.nii.gz" for c in cases)
    assert _leftovers(docker_client, busybox_image) == []

    # resume: nothing left to run, so no container is even created
    again = run_submission(backend, inputs, tmp_path / "out", team="bb", timeout_s=3,
                           progress=False)
    assert [r["finished_at"] for r in again] == [r["finished_at"] for r in records]


def test_a_container_that_cannot_start_is_removed(docker_client, busybox_image, tmp_path,
                                                  make_inputs):
    inputs = make_inputs(["ok1"])
    backend = DockerBackend(docker_client, busybox_image,
                            DockerOptions(command=("/no/such/program",), memory="32m",
                                          shm_size="8m"))
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    with ResourceSampler(None) as sampler:
        execution = backend.run_case(inputs, outputs, timeout_s=10, sampler=sampler, name="ok1")
    assert execution.error is not None and "/no/such/program" in execution.error
    assert _leftovers(docker_client, busybox_image) == []


def test_load_image_from_a_saved_tarball(docker_client, busybox_image, tmp_path):
    tarball = tmp_path / "team.tar"
    with tarball.open("wb") as stream:
        for chunk in docker_client.images.get(busybox_image).save(named=True):
            stream.write(chunk)
    assert load_image(docker_client, str(tarball)) == busybox_image
    assert load_image(docker_client, busybox_image) == busybox_image


def test_a_tarball_that_is_not_an_image_is_refused(docker_client, busybox_image, tmp_path):
    bogus = tmp_path / "team.tar.gz"
    bogus.write_bytes(b"this is not a docker save tarball\n" * 100)
    with pytest.raises(RunnerError, match="could not load it as a docker image"):
        load_image(docker_client, str(bogus))
    with pytest.raises(RunnerError, match="neither an existing file nor an image"):
        load_image(docker_client, "flare-eval-no-such-image:latest")
    assert _leftovers(docker_client, busybox_image) == []


def test_a_container_left_by_a_killed_run_is_removed_on_resume(docker_client, busybox_image,
                                                              tmp_path, make_inputs):
    from flare_eval.runner.docker_backend import WORK_LABEL
    from flare_eval.runner.intake import case_folder

    inputs = make_inputs(["ok1"])
    work = case_folder(tmp_path / "out" / "t", "ok1")
    # what a SIGKILLed runner leaves: the case's container, still running
    docker_client.containers.run(busybox_image, ["sleep", "30"], detach=True,
                                 labels={CONTAINER_LABEL: "1", WORK_LABEL: str(work.resolve())})
    backend = DockerBackend(docker_client, busybox_image,
                            DockerOptions(memory="32m", shm_size="8m"))
    records = run_submission(backend, inputs, tmp_path / "out", team="t", timeout_s=10,
                             progress=False)
    assert records[0]["status"] == "ok"
    assert _leftovers(docker_client, busybox_image) == []


def test_a_container_past_its_deadline_is_removed_by_any_later_run(docker_client, busybox_image,
                                                                   tmp_path, make_inputs):
    from flare_eval.runner.docker_backend import DEADLINE_LABEL

    # what a runner SIGKILLed mid-case leaves: its container, running, with a deadline passed
    # (one second ago) and another one still ahead (in an hour), e.g. another run's case
    past = docker_client.containers.run(
        busybox_image, ["sleep", "300"], detach=True,
        labels={CONTAINER_LABEL: "1", DEADLINE_LABEL: f"{time.time() - 1:.0f}"})
    ahead = docker_client.containers.run(
        busybox_image, ["sleep", "300"], detach=True,
        labels={CONTAINER_LABEL: "1", DEADLINE_LABEL: f"{time.time() + 3600:.0f}"})
    try:
        records = run_submission(
            DockerBackend(docker_client, busybox_image, DockerOptions(memory="32m", shm_size="8m")),
            make_inputs(["ok1"]), tmp_path / "out", team="other", timeout_s=10, progress=False)
        assert records[0]["status"] == "ok"
        assert [c.id for c in _leftovers(docker_client, busybox_image)] == [ahead.id]
        # (test_limits.py: 'flare-eval run --cleanup' once a deadline has passed; not called
        # here with a clock moved on, which would remove other runs' containers on the engine)
    finally:
        for container in (past, ahead):
            with contextlib.suppress(Exception):
                container.remove(force=True)
