"""``flare-eval run`` end to end through the local backend, and its argument errors."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from tests.conftest import require_module, skip_or_fail

# The sampler reads CPU and RAM through psutil (the "runner" extra).
require_module("psutil")


def test_run_local_exit_codes_and_outputs(tmp_path, make_inputs, submission, capsys):
    if shutil.which("bwrap") is None:
        skip_or_fail("bubblewrap is not installed (apt-get install bubblewrap)")
    inputs = make_inputs(["ok1", "crash"])
    argv = ["run", "--backend", "local", "--submission", str(submission), "--inputs",
            str(inputs), "--out", str(tmp_path / "res"), "--no-progress", "--timeout", "20"]
    assert main(argv) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "1/2 cases ok" in err and "crash: crash: predict.sh exited with 3" in err
    # the submission's own last stderr line, under its case, without opening the logs
    assert "crash: crash: predict.sh exited with 3; expected crash.nii.gz" in err
    assert "\n    | boom on crash\n" in err
    # the team defaults to the submission folder's name
    runs = pd.read_csv(tmp_path / "res" / "submission" / "runs.csv")
    assert list(runs["status"]) == ["crash", "ok"]
    (inputs / "crash_0000.nii.gz").unlink()
    assert main([*argv, "--team", "only-ok"]) == EXIT_OK


@pytest.mark.parametrize(
    "extra, message",
    [(["--backend", "local"], "needs --submission"), ([], "needs --image"),
     (["--inputs", "."], "--out is required (unless --cleanup)")],
)
def test_run_argument_errors(tmp_path, extra, message, capsys):
    paths = [] if "--inputs" in extra else ["--inputs", str(tmp_path), "--out", str(tmp_path / "o")]
    code = main(["run", *paths, *extra])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("source", "team"), [
    ("subs/TeamX.tar.gz", "TeamX"),  # the name `evaluate` gives the same tarball
    ("TeamX.tgz", "TeamX"),
    ("registry.local/ns/Team_Y:v2", "Team_Y"),
    ("my_submission/", "my_submission"),
])
def test_default_team_is_the_file_stem_as_evaluate_names_it(source, team):
    from flare_eval.cli.run import _default_team

    assert _default_team(source) == team


def test_names_with_square_brackets_are_printed_as_they_are():
    import io
    from pathlib import Path

    from rich.console import Console

    from flare_eval.cli.evaluate import _print_summary
    from flare_eval.organizer import Evaluation

    board = pd.DataFrame({"rank": [1], "team": ["[red]t[/red]"], "mean_rank": [1.0]})
    failures = pd.DataFrame({"team": ["[b]x"], "case": ["c[1]"], "stage": ["run"],
                             "status": ["crash"], "message": ["m"]})
    console = Console(file=io.StringIO(), width=200)
    _print_summary(console, Evaluation(Path("."), board, failures, Path("report.html")))
    text = console.file.getvalue()
    # rich would read these as markup and print 't', 'x' and 'c' only
    assert "[red]t[/red]" in text and "[b]x" in text and "c[1]" in text


def _has_nvidia_driver() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # no bindings or no driver: a GPU-less host, as CI
        return False


@pytest.mark.parametrize("verb", ["run", "evaluate"])
def test_gpu_options_that_cannot_work_are_refused_before_anything_runs(tmp_path, capsys, verb):
    common = {"run": ["run", "--image", "x", "--inputs", str(tmp_path), "--out", str(tmp_path / "o")],
              "evaluate": ["evaluate", "--submissions", str(tmp_path), "--images", str(tmp_path),
                           "--labels", str(tmp_path), "--out", str(tmp_path / "o")]}[verb]
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--gpu", "-1"])
    assert exit_info.value.code == EXIT_USAGE
    assert "argument --gpu: expected a GPU index 0, 1, ..." in capsys.readouterr().err
    if verb == "run":
        assert main([*common, "--per-process-gpu"]) == EXIT_USAGE
        assert "--per-process-gpu needs a GPU: --gpu INDEX, or --slots with GPUs" in capsys.readouterr().err
    if _has_nvidia_driver():
        assert main([*common, "--gpu", "999"]) == EXIT_USAGE
        assert "--gpu 999: this host has" in capsys.readouterr().err
    else:
        assert main([*common, "--gpu", "0"]) == EXIT_USAGE
        assert "--gpu 0: no NVIDIA driver answers on this host" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before any folder or team was touched


def test_check_gpu_names_the_device_or_the_valid_indices(FakeNVML):
    from flare_eval.errors import ConfigError
    from flare_eval.runner.sampler import check_gpu

    nvml = FakeNVML()
    assert check_gpu(0, nvml=nvml) == "Fake GPU" and nvml.shutdown
    with pytest.raises(ConfigError, match=r"--gpu 1: this host has 1 GPU\(s\), indices 0\.\.0"):
        check_gpu(1, nvml=FakeNVML())


def test_container_memory_defaults_to_the_slot_s_share_of_the_engine_host():
    from flare_eval.errors import ConfigError
    from flare_eval.runner.docker_backend import DockerOptions, fit_to_host

    gib = 2**30
    # a 64 GiB host keeps the official 28g, silently (warnings are errors here)
    assert fit_to_host(DockerOptions(), 64 * gib).memory == "28g"
    # a 16 GiB host: 28g could never be held, the default becomes the host's 16384m, silently
    fitted = fit_to_host(DockerOptions(shm_size="1g"), 16 * gib)
    assert (fitted.memory, fitted.shm_size) == ("16384m", "1g")
    # slot 0:0-7 of a 64 GiB, 16-core host (0:0-7,1:8-15): half, 32 GiB, over 28g: 28g
    assert fit_to_host(DockerOptions(), 64 * gib, host_cores=16,
                       cpus=frozenset(range(8))).memory == "28g"
    # four cores of 16 on 64 GiB: 16 GiB = 16384m, below 28g
    assert fit_to_host(DockerOptions(), 64 * gib, host_cores=16,
                       cpus=frozenset(range(4))).memory == "16384m"
    # an explicit size over the share is refused in one line naming the share and the host
    with pytest.raises(ConfigError, match=r"^--memory 20g exceeds the 16\.0 GiB share of RAM of "
                       r"the slot on cores 0-3 \(4 of the 16 cores of the docker engine's host, "
                       r"64\.0 GiB\) \(hint: give at most 16384m"):
        fit_to_host(DockerOptions(memory="20g"), 64 * gib, host_cores=16, cpus=frozenset(range(4)))
    assert fit_to_host(DockerOptions(memory="16g"), 64 * gib, host_cores=16,
                       cpus=frozenset(range(4))).memory == "16g"
    # an explicit size over the host is refused, naming the option and the host's RAM
    with pytest.raises(ConfigError, match=r"--memory 32g exceeds the 16\.0 GiB of RAM"):
        fit_to_host(DockerOptions(memory="32g"), 16 * gib)
    with pytest.raises(ConfigError, match=r"--shm-size 'lots': not a size"):
        fit_to_host(DockerOptions(shm_size="lots"), 16 * gib)


HOLD_TEAM = ("import sys, time\nfrom flare_eval.io.lock import exclusive\n"
             "with exclusive(sys.argv[1], option='team folder', command='run'):\n"
             "    print('held', flush=True)\n    time.sleep(600)\n")


def test_a_second_run_into_one_team_is_refused_and_resumes_after_the_holder_dies(
        tmp_path, make_inputs, submission, capsys):
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("bwrap") is None:
        skip_or_fail("bubblewrap is not installed (apt-get install bubblewrap)")
    inputs = make_inputs(["ok1", "ok2"])
    team = tmp_path / "res" / "teamx"
    team.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_TEAM, str(team)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ,
                                              "PYTHONPATH": str(Path(__file__).parents[2])})
    argv = ["run", "--backend", "local", "--submission", str(submission), "--inputs", str(inputs),
            "--out", str(tmp_path / "res"), "--team", "teamx", "--no-progress", "--timeout", "20"]
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(argv) == EXIT_USAGE
        err = capsys.readouterr().err
        assert f"run, pid {holder.pid} on host {socket.gethostname()}" in err
        # nothing of the team was touched: no case ran, no table was written
        assert sorted(p.name for p in team.iterdir()) == [".flare-eval.lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert main(argv) == EXIT_OK
    assert list(pd.read_csv(team / "runs.csv")["status"]) == ["ok", "ok"]
