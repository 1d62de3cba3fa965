"""``flare-eval evaluate`` end to end with real containers: the leaderboard of teams of known
quality and failures, a run killed with SIGKILL and resumed, a changed configuration refused.

What "identical" means for a killed and resumed run: container wall times differ from run to
run, so the timing columns (``time_s``, ``Time``, timestamps), the raw runtimes of the
leaderboard and of the case ranks, and the Wilcoxon p-values of the runtime (``significance.csv``,
computed on raw times) may differ.  Everything else must be equal: every prediction and every
accuracy and lesion table byte for byte, the run statuses, every case rank, the leaderboard's
order and mean ranks (the FLARE23 runtime floor of 15 s makes every successful run of these tiny
cases tie, and a failed run takes the fixed penalty), the bootstrap and the failure table.

The team images are built without a registry: a busybox-static rootfs with each team's
predictions (made with ``simulate_prediction`` at the team's quality) baked in, ``docker
import``, ``docker save`` into the submissions folder, and removed from the engine, so that the
pipeline has to load them.
"""

from __future__ import annotations

import csv
import html
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.runner.docker_backend import CONTAINER_LABEL, WORK_LABEL
from flare_eval.runner.intake import case_folder
from tests.conftest import require_module, run_chromium
from tests.organizer.conftest import Challenge, Team, build_challenge, remove_tags

require_module("psutil")  # the runner's sampler
pytest.importorskip("matplotlib")  # the report
pytestmark = [pytest.mark.docker, pytest.mark.slow]

TIMEOUT_S = "4"
HOST = socket.gethostname()
SCORE_TABLES = ("per_case.csv", "cases.csv", "metrics_long.csv", "lesions_per_case.csv",
                "lesions.csv", "scores.txt")
RANKING_TABLES = ("bootstrap_kendall.csv", "bootstrap_ranks.csv", "bootstrap_summary.csv")


@pytest.fixture(scope="module")
def challenge(docker_client, tmp_path_factory) -> Challenge:
    """3 phantom cases; teams alpha (excellent), bravo (good, crashes on the last case),
    charlie (poor, hangs on the first case) as ``docker save`` tarballs, and delta, whose
    tarball is no image at all.  The images are removed from the engine after saving, so that
    the pipeline has to load them."""
    root = tmp_path_factory.mktemp("challenge")
    built = build_challenge(docker_client, root, cases=3, teams=lambda cases: (
        Team("alpha", "excellent"), Team("bravo", "good", crash=cases[2]),
        Team("charlie", "poor", hang=cases[0])))
    (built.submissions / "delta.tar.gz").write_bytes(b"not a docker image")
    yield built
    remove_tags(docker_client, built.tags)


def _args(challenge, out: Path, *, timeout: str = TIMEOUT_S, seed: str = "7",
          progress: bool = False) -> list[str]:
    return ["evaluate", "--submissions", str(challenge.submissions), "--images",
            str(challenge.images), "--labels", str(challenge.labels), "--out", str(out),
            "--timeout", timeout, "--bootstrap", "50", "--seed", seed,
            *([] if progress else ["--no-progress"])]


@pytest.fixture(scope="module")
def finished(challenge, tmp_path_factory) -> Path:
    """An uninterrupted evaluation of the challenge, with the progress display."""
    out = tmp_path_factory.mktemp("eval") / "out"
    assert main(_args(challenge, out, progress=True)) == 4  # finished, some cases failed
    return out


def _leftovers(client, out: Path, challenge: Challenge) -> list:
    """Runner containers of this evaluation still on the engine (found by their staging
    folder: other tests or sessions may share the engine)."""
    ours = {str(case_folder(out / "results" / team, case))
            for team in ("alpha", "bravo", "charlie", "delta") for case in challenge.cases}
    return [c for c in client.containers.list(all=True, filters={"label": CONTAINER_LABEL})
            if c.labels.get(WORK_LABEL) in ours]


def test_leaderboard_failures_and_outputs(finished, challenge, docker_client):
    board = pd.read_csv(finished / "results" / "ranking" / "leaderboard.csv")
    # alpha: excellent, no failure; bravo: good, one crash; charlie: poor, one hang;
    # delta: no image, so no prediction and no runtime
    assert list(board["team"]) == ["alpha", "bravo", "charlie", "delta"]
    assert list(board["rank"]) == [1, 2, 3, 4]
    status = json.loads((finished / "status.json").read_text())
    assert status["complete"] is True
    assert status["teams"]["delta"]["run"] == "load_failed"
    assert "could not load it as a docker image" in status["teams"]["delta"]["load_error"]
    failures = pd.read_csv(finished / "failures.csv", keep_default_na=False)
    first, last = challenge.cases[0], challenge.cases[2]
    got = set(failures[["team", "case", "stage", "status"]].itertuples(index=False, name=None))
    assert got == {
        ("bravo", last, "run", "crash"), ("bravo", last, "score", "missing_prediction"),
        ("charlie", first, "run", "timeout"), ("charlie", first, "score", "missing_prediction"),
        ("delta", "", "load", "load_failed"),
        *(("delta", case, "score", "missing_prediction") for case in challenge.cases),
    }
    # runner and scorer outputs side by side in one team folder, nothing overwritten
    team = finished / "results" / "bravo"
    runs = pd.read_csv(team / "runs.csv")
    assert dict(zip(runs["case"], runs["status"])) == {
        challenge.cases[0]: "ok", challenge.cases[1]: "ok", last: "crash"}
    assert "boom on" in (team / "logs" / f"{last}.stderr.txt").read_text()
    assert (team / "bravo_Efficiency.csv").is_file() and (team / "runner.json").is_file()
    assert json.loads((team / "run.json").read_text())["cases"] == 3
    assert sorted(p.name for p in (team / "predictions").iterdir()) == [
        f"{c}.nii.gz" for c in challenge.cases[:2]]
    assert "charlie" in (finished / "report.html").read_text()
    assert not (finished / ".staging").exists()
    assert _leftovers(docker_client, finished, challenge) == []


def test_finished_run_again_does_nothing_and_changes_are_refused(finished, challenge, capsys):
    status_before = (finished / "status.json").read_bytes()
    manifest_before = (finished / "manifest.json").read_bytes()
    capsys.readouterr()
    started = time.monotonic()
    assert main(_args(challenge, finished)) == 4
    assert time.monotonic() - started < 10  # the hang alone would take 4 s a run
    assert (finished / "status.json").read_bytes() == status_before
    # the summary shows what a team needs first: the end of its failed case's stderr
    last = challenge.cases[2]
    assert (f"bravo, {last} (crash), last lines of stderr:\n    | boom on {last}\n"
            in capsys.readouterr().err)

    assert main(_args(challenge, finished, seed="8")) == 2
    assert "configuration.seed: 7 then, 8 now" in capsys.readouterr().err
    assert main(_args(challenge, finished, timeout="9")) == 2
    assert "configuration.timeout_s: 4.0 then, 9.0 now" in capsys.readouterr().err
    extra = challenge.submissions / "echo.tar"
    extra.write_bytes((challenge.submissions / "alpha.tar").read_bytes())
    try:
        assert main(_args(challenge, finished)) == 2
    finally:
        extra.unlink()
    assert "inputs.submissions: added ['echo.tar']" in capsys.readouterr().err
    assert (finished / "status.json").read_bytes() == status_before
    assert (finished / "manifest.json").read_bytes() == manifest_before
    assert not (finished / "results" / "echo").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*_0000.json"))}


def test_killed_and_resumed_run_equals_the_uninterrupted_one(finished, challenge, tmp_path,
                                                             docker_client):
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "flare_eval", *_args(challenge, out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # kill as soon as the first case of the first team is recorded: most of the work is left
    while not (out / "results" / "alpha" / "runs.csv").is_file():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the first case never finished"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    status = json.loads((out / "status.json").read_text())
    assert status["complete"] is False
    assert not (out / "results" / "ranking").exists() and not (out / "report.html").exists()
    done_before = _snapshot(out / "results")
    assert 1 <= len(done_before) < 9  # 3 teams with an image x 3 cases

    # the number of scoring processes is no part of the configuration: results are the same
    assert main([*_args(challenge, out), "--workers", "2"]) == 4
    after = _snapshot(out / "results")
    # every case recorded before the kill was kept, not run again
    assert {k: after[k] for k in done_before} == done_before and len(after) == 9
    for team in ("alpha", "bravo", "charlie", "delta"):
        a, b = finished / "results" / team, out / "results" / team
        for name in SCORE_TABLES:
            assert (a / name).read_bytes() == (b / name).read_bytes(), (team, name)
        assert _files(a / "predictions") == _files(b / "predictions")
        if team != "delta":
            keep = ["case", "name", "status", "exit_code", "oom_killed", "message"]
            pd.testing.assert_frame_equal(pd.read_csv(a / "runs.csv")[keep],
                                          pd.read_csv(b / "runs.csv")[keep])
    for name in RANKING_TABLES:
        assert ((finished / "results" / "ranking" / name).read_bytes()
                == (out / "results" / "ranking" / name).read_bytes()), name
    boards = [pd.read_csv(o / "results" / "ranking" / "leaderboard.csv").drop(columns="runtime")
              for o in (finished, out)]
    pd.testing.assert_frame_equal(*boards)
    ranks = [pd.read_csv(o / "results" / "ranking" / "case_ranks.csv") for o in (finished, out)]
    for table in ranks:  # raw wall times differ; their ranks may not
        table.loc[table["metric"] == "runtime", "value"] = float("nan")
    pd.testing.assert_frame_equal(*ranks)
    assert (finished / "failures.csv").read_bytes() == (out / "failures.csv").read_bytes()
    assert json.loads((out / "status.json").read_text())["complete"] is True
    # the container killed with its client is gone too
    assert _leftovers(docker_client, out, challenge) == []


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_running_evaluation_holds_its_folder(challenge, tmp_path, capsys):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with (out / ".flare-eval.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("evaluate, pid 4242 on host elsewhere\n")
        handle.flush()
        assert main(_args(challenge, out)) == 2
    err = capsys.readouterr().err
    assert "another flare-eval is writing there (evaluate, pid 4242 on host elsewhere)" in err
    assert not (out / "manifest.json").exists()


@pytest.fixture(scope="module")
def two_slots(challenge, tmp_path_factory) -> Path:
    """--slots cpu:0,cpu:1 (one core each), interleaved, checked against a calibration that
    says the two slots are alike (``calibration.csv`` beside ``out``)."""
    root = tmp_path_factory.mktemp("slots")
    table = root / "calibration.csv"
    table.write_text(
        "host,slot,cpuset,cpu_model,gpu_name,gpu_uuid,workload,mode,seconds,ratio,note\n"
        + "".join(f"{HOST},{k},{k},X,,,cpu,{mode},{1 + k / 50},{1 + k / 50},\n"
                  for mode in ("alone", "together") for k in (0, 1)))
    out = root / "out"
    assert main([*_args(challenge, out), "--slots", "cpu:0,cpu:1", "--interleave-teams",
                 "--calibration", str(table)]) == 4
    return out


def test_two_slots_give_the_same_results_as_one_at_a_time(finished, two_slots, challenge,
                                                          docker_client):
    """--slots 2 (one core each): what runs where changes, no score, rank or failure does."""
    out = two_slots
    for team in ("alpha", "bravo", "charlie", "delta"):
        a, b = finished / "results" / team, out / "results" / team
        for name in SCORE_TABLES:
            assert (a / name).read_bytes() == (b / name).read_bytes(), (team, name)
        assert _files(a / "predictions") == _files(b / "predictions")
    boards = [pd.read_csv(o / "results" / "ranking" / "leaderboard.csv").drop(columns="runtime")
              for o in (finished, out)]
    pd.testing.assert_frame_equal(*boards)
    assert (finished / "failures.csv").read_bytes() == (out / "failures.csv").read_bytes()
    runs = pd.concat([pd.read_csv(out / "results" / t / "runs.csv", dtype=str)
                      for t in ("alpha", "bravo", "charlie")])
    # 9 cases over both slots, each recorded with its slot's core
    assert set(zip(runs["slot"], runs["cpuset"])) == {("0", "0"), ("1", "1")}
    assert len(runs) == 9 and runs["host"].nunique() == 1
    slots = json.loads((out / "manifest.json").read_text())["configuration"]["slots"]
    assert [s["cpuset"] for s in slots] == ["0", "1"]
    assert _leftovers(docker_client, out, challenge) == []


class _Tables(HTMLParser):
    """The cells of the first table after each ``<h2 id=...>`` of an HTML page, row by row."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._section: str | None = None
        self._rows: list[list[str]] | None = None
        self._cell: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._section = dict(attrs).get("id")
        elif tag == "table" and self._section not in self.tables:
            self._rows = self.tables.setdefault(self._section, [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._rows is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._rows = None


def _expected_slots(out: Path) -> dict[tuple[str, ...], int]:
    """The oracle: per team, (host, slot, cpuset) of every row of its runs.csv, counted."""
    counts: Counter[tuple[str, ...]] = Counter()
    for team in ("alpha", "bravo", "charlie"):
        with (out / "results" / team / "runs.csv").open() as stream:
            for row in csv.DictReader(stream):
                counts[(team, row["host"], row["slot"], row["cpuset"])] += 1
    return dict(counts)


def test_the_report_shows_each_team_s_slots_and_the_calibration(two_slots, tmp_path):
    table = two_slots.parent / "calibration.csv"
    again = tmp_path / "report.html"
    assert main(["report", str(two_slots / "results"), "--out", str(again),
                 "--calibration", str(table)]) == 0
    for page in (two_slots / "report.html", again):  # evaluate's, and flare-eval report's
        tables = _Tables(page.read_text()).tables
        header, *rows = tables["slots"]
        assert header == ["team", "host", "slot", "cpuset", "gpu_name", "gpu_uuid", "cases"]
        assert {tuple(r[:4]): int(r[6]) for r in rows} == _expected_slots(two_slots)
        assert all(r[4] == r[5] == "" for r in rows)  # CPU-only slots: no GPU
        # delta never ran (no image): no row; the others ran their 3 cases each
        assert {r[0] for r in rows} == {"alpha", "bravo", "charlie"}
        header, *rows = tables["calibration"]
        assert header == ["host", "slot", "cpuset", "cpu_model", "gpu_name", "gpu_uuid",
                          "workload", "mode", "seconds", "ratio", "note"]
        assert rows == [[HOST, str(k), str(k), "X", "n/a", "n/a", "cpu", mode,
                         f"{1 + k / 50:.3f}", f"{1 + k / 50:.3f}", ""]
                        for mode in ("alone", "together") for k in (0, 1)]
        # 1.02 / 1.00 - 1 = 2 %
        assert ("cpu workload, alone: slots differ by 2.0% (slot 1 slowest, slot 0 fastest), "
                "within the tolerance") in page.read_text()


_TABLE_PROBE = """<script>
window.addEventListener("load", () => {
  const out = {};
  for (const id of ["slots", "calibration"]) {
    let node = document.getElementById(id);
    while (node && node.tagName !== "TABLE") node = node.nextElementSibling;
    out[id] = {visible: node.offsetHeight > 0, rows: Array.from(node.rows).map(
      r => Array.from(r.cells).map(c => c.innerText.trim()))};
  }
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body>"""


@pytest.mark.chromium
def test_the_slot_tables_in_headless_chromium(two_slots, tmp_path, chromium_path):
    """What a browser shows of both tables: the cells the HTML parser reads, laid out."""
    probe = tmp_path / "probe.html"
    text = (two_slots / "report.html").read_text()
    probe.write_text(text.replace("</body>", _TABLE_PROBE))
    dom = run_chromium(chromium_path, tmp_path / "profile", "--virtual-time-budget=10000",
                       "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, "the probe script did not run"
    shown = json.loads(html.unescape(found.group(1)))
    parsed = _Tables(text).tables
    for section in ("slots", "calibration"):
        assert shown[section]["visible"], section
        assert shown[section]["rows"] == parsed[section], section


def test_uneven_calibrated_slots_are_refused_before_anything_runs(challenge, tmp_path, capsys):
    # slot 1 takes 1.5 s where slot 0 takes 1.0 s: 50 % apart, over the 10 % tolerance
    table = tmp_path / "calibration.csv"
    table.write_text("host,slot,cpuset,cpu_model,gpu_name,gpu_uuid,workload,mode,seconds,ratio,"
                     f"note\n{HOST},0,0,X,,,cpu,alone,1.0,1.0,\n{HOST},1,1,X,,,cpu,alone,1.5,1.5,\n")
    out = tmp_path / "out"
    args = [*_args(challenge, out), "--slots", "cpu:0,cpu:1", "--calibration", str(table)]
    assert main(args) == 2
    assert (f"slots differ by 50% on the cpu workload (alone): slot 1 on {HOST} 1.500 s, slot 0 "
            f"on {HOST} 1.000 s; the tolerance is 10%") in capsys.readouterr().err
    assert not (out / "manifest.json").exists() and not (out / "results").exists()
