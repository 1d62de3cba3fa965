"""The demo end to end (small), the HTML report's content, and the report in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.demo import run_demo
from flare_eval.report import load_results
from tests.conftest import run_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: Figures embedded in the report when there are runner outputs: all 12 but the leaderboard,
#: which the report shows as a table (its figure goes only to figures/).
N_FIGURES = 11


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, cases=3, teams=3, n_bootstrap=50, seed=1, shape=(64, 64, 40))
    return out


def test_demo_writes_a_ranked_challenge(demo_dir: Path) -> None:
    ranking = demo_dir / "results" / "ranking"
    board = pd.read_csv(ranking / "leaderboard.csv")
    assert sorted(board["team"]) == ["aurora", "boreal", "cirrus"]
    assert len(pd.read_csv(ranking / "bootstrap_kendall.csv")) == 50
    runs = pd.read_csv(demo_dir / "results" / "cirrus" / "runs.csv")
    # 3 cases: the last team crashes on its last case only, and has no prediction for it
    assert runs["status"].tolist() == ["ok", "ok", "crash"]
    crashed = runs["case"].iloc[-1]
    assert not (demo_dir / "submissions" / "cirrus" / f"{crashed}.nii.gz").exists()
    cases = pd.read_csv(demo_dir / "results" / "cirrus" / "cases.csv").set_index("case")
    assert cases.loc[crashed, "status"] == "missing_prediction"
    assert (demo_dir / "figures" / "radar.png").is_file()
    assert (demo_dir / "figures" / "radar.csv").is_file()


def test_failures_table_lists_both_stages(demo_dir: Path) -> None:
    failures = load_results(demo_dir / "results").failures
    assert sorted(zip(failures["stage"], failures["status"])) == [
        ("run", "crash"), ("score", "missing_prediction")]
    assert set(failures["team"]) == {"cirrus"}


def test_report_is_self_contained(demo_dir: Path) -> None:
    text = (demo_dir / "report.html").read_text()
    images = re.findall(r"<img [^>]*src=\"([^\"]*)\"", text)
    assert len(images) == N_FIGURES
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text, re.IGNORECASE)
    assert "url(" not in text
    # the leaderboard once, as a table with units in its headers
    assert text.count("Leaderboard</h2>") == 1 and "alt=\"Leaderboard\"" not in text
    board = text[text.index("Leaderboard</h2>"):].split("</table>")[0]
    assert "<th>Runtime (s)</th>" in board and "<th>GPU AUC (MiB·s)</th>" in board
    assert "e+0" not in board  # no 1.74e+05: the GPU AUC is written in full
    for needle in ("Missing and failed cases", "missing_prediction", "crash", "nsd_dsc_threshold",
                   "runtime_tolerance_s", "Software versions", "matplotlib"):
        assert needle in text, needle


def test_report_cli_and_missing_ranking(demo_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(demo_dir / "results"), "--out", str(out), "--top", "2"]) == 0
    assert out.read_text().count("<img ") == N_FIGURES
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(out)]) == 3
    assert "no leaderboard.csv" in capsys.readouterr().err


_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const bad = images.filter(i => !(i.src.startsWith("data:image/png;base64,") && i.complete
                                   && i.naturalWidth > 0)).map(i => i.alt);
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({images: images.length, bad: bad});
  document.body.appendChild(pre);
});
</script></body>"""


@pytest.mark.chromium
def test_report_in_headless_chromium(demo_dir: Path, tmp_path: Path, chromium_path: str) -> None:
    report = demo_dir / "report.html"
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", _PROBE))
    dom = run_chromium(chromium_path, tmp_path / "profile1", "--virtual-time-budget=10000",
                       "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, "the probe script did not run"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result == {"images": N_FIGURES, "bad": []}

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    run_chromium(chromium_path, tmp_path / "profile2", "--window-size=1280,4000",
                 f"--screenshot={screenshot}", report.as_uri())
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(report, ARTIFACTS / "report.html")
