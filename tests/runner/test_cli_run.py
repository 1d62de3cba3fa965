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
