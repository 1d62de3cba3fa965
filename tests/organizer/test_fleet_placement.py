"""``evaluate --scheduler`` keeps all of a team's cases on slots of one hardware identity.

Three slot workers on loopback: w0 (core 0) and w1 (core 1) are alike, w2 (cores 0-1) is
another identity (two cores). By hand (place_teams' rule: the identity with the least work per
slot, ties to the one with more slots): alpha (3 cases) goes to {w0, w1} (0 per slot each, two
slots beat one), bravo (3 cases) to {w2} (0 per slot against 1.5). Without the placement,
dask hands cases to whichever worker is free, and both teams land on both identities.
"""

from __future__ import annotations

import pandas as pd
import pytest

from flare_eval.cli.main import main
from tests.conftest import require_module, slot_worker
from tests.organizer.conftest import Team, build_challenge, remove_tags

require_module("psutil")
distributed = require_module("distributed")
pytest.importorskip("matplotlib")  # the report
pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def challenge(docker_client, tmp_path_factory):
    """3 cases of 0.3 s each, alpha and bravo."""
    root = tmp_path_factory.mktemp("placement")
    built = build_challenge(docker_client, root, cases=3, teams=lambda cases: (
        Team("alpha", "excellent", slow_s=0.3), Team("bravo", "good", slow_s=0.3)))
    yield built
    remove_tags(docker_client, built.tags)


def test_each_team_runs_on_slots_of_one_identity(challenge, tmp_path):
    cluster = distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                       host="127.0.0.1", dashboard_address=":0")
    workers = [slot_worker(cluster.scheduler_address, "w0", "cpu:0"),
               slot_worker(cluster.scheduler_address, "w1", "cpu:1"),
               slot_worker(cluster.scheduler_address, "w2", "cpu:0-1")]
    out = tmp_path / "out"
    try:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(3, timeout=60)
        assert main(["evaluate", "--submissions", str(challenge.submissions), "--images",
                     str(challenge.images), "--labels", str(challenge.labels), "--out", str(out),
                     "--timeout", "30", "--bootstrap", "0", "--no-progress",
                     "--scheduler", cluster.scheduler_address]) == 0
    finally:
        for process in workers:
            process.kill()
            process.wait(timeout=30)
        cluster.close()
    runs = {team: pd.read_csv(out / "results" / team / "runs.csv", dtype=str)
            for team in ("alpha", "bravo")}
    assert set(runs["alpha"]["slot"]) <= {"w0", "w1"}
    assert set(zip(runs["bravo"]["slot"], runs["bravo"]["cpuset"])) == {("w2", "0-1")}
    assert all(sorted(r["case"]) == challenge.cases for r in runs.values())
    # the report says where: alpha on the one-core slots, bravo on the two-core one
    report = (out / "report.html").read_text()
    where = report[report.index('<h2 id="slots">'):report.index('<h2 id="configuration">')]
    assert "<td>bravo</td>" in where and "<td>w2</td>" in where
