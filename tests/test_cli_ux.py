"""What a newcomer meets at the command line: mistyped options, out-of-range values, wrong
folders, help texts and the demo's closing output. Everything through ``flare-eval``'s
``main`` as a user types it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flare_eval.cli.main import VERBS, build_parser, main
from flare_eval.phantoms import write_phantom_set


def _error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last stderr line of an argparse refusal (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(("argv", "expected"), [
    # unknown option after all required ones: the verb's parser names the closest option
    (["score", "--pred", "p", "--gt", "g", "--out", "o", "--workerz", "2"],
     "flare-eval score: error: unrecognized arguments: --workerz 2 (--workerz: did you mean "
     "--workers?)"),
    # "--gtt" given for "--gt": argparse first misses --gt, the hint still names the typo
    (["score", "--pred", "p", "--gtt", "g", "--out", "o"],
     "flare-eval score: error: the following arguments are required: --gt (--gtt: did you mean "
     "--gt?)"),
    (["score", "--pred", "p", "--gt", "g", "--out=o", "--strcit"],
     "flare-eval score: error: unrecognized arguments: --strcit (--strcit: did you mean "
     "--strict?)"),
    # abbreviations are refused, not silently expanded
    (["score", "--pred", "p", "--gt", "g", "--out", "o", "--work", "2"],
     "flare-eval score: error: unrecognized arguments: --work 2 (--work: did you mean "
     "--workers?)"),
    (["rnak", "results"], "(did you mean rank?)"),
])
def test_mistyped_words_get_the_closest_option(argv: list[str], expected: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _error_of(argv, capsys).endswith(expected)


def test_unrelated_word_gets_no_guess(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_of(["score", "--pred", "p", "--gt", "g", "--out", "o", "--zzzzzz"], capsys)
    assert line == "flare-eval score: error: unrecognized arguments: --zzzzzz"


@pytest.mark.parametrize("value", ["1.5", "1", "-0.1"])
def test_lesion_iou_out_of_range_names_the_option(value: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_of(["score", "--pred", "p", "--gt", "g", "--out", "o", "--lesion-iou", value],
                     capsys)
    # a match needs IoU > T, so T must lie in [0, 1)
    assert line == (f"flare-eval score: error: argument --lesion-iou: T must be in [0, 1) (a "
                    f"pair matches when IoU > threshold), got {float(value)!r}")


def test_help_has_no_empty_defaults() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "verb")
    for verb in VERBS:
        text = subparsers.choices[verb].format_help()
        assert "(default: None)" not in text, verb
        assert "(default: False)" not in text, verb
    score_help = subparsers.choices["score"].format_help()
    assert "(default: 1)" in score_help  # real defaults are still shown (--workers)
    assert re.search(r"--pred DIR\s+folder of predictions <id>.nii.gz\n", score_help)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    write_phantom_set(out, cases=2, seed=0, shape=(32, 32, 16), prefix="case")
    return out


def test_missing_folder_error_comes_without_a_progress_bar(
        phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nope = tmp_path / "nope"
    code = main(["score", "--pred", str(nope), "--gt", str(phantoms / "labels"),
                 "--out", str(tmp_path / "out")])
    assert code == 3
    # the first and only line is the error: no "scoring ... 0/?" bar, no blank line before it
    assert capsys.readouterr().err == (f"flare-eval score: error: --pred folder {nope} does not "
                                       f"exist or is not a folder\n")
    code = main(["ensemble", "--pred", str(nope), str(phantoms / "labels"), "--out",
                 str(tmp_path / "vote")])
    assert capsys.readouterr().err == (f"flare-eval ensemble: error: ensemble: prediction folder "
                                       f"{nope} does not exist or is not a folder\n")


def test_evaluate_error_comes_without_a_blank_line(
        phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a Progress made up front prints an empty line when stopped unstarted (stderr is no
    # terminal here, as in a log): the error must be the first and only line
    nope = tmp_path / "nope"
    code = main(["evaluate", "--submissions", str(nope), "--images", str(phantoms / "images"),
                 "--labels", str(phantoms / "labels"), "--out", str(tmp_path / "out")])
    assert code == 3
    assert capsys.readouterr().err == (f"flare-eval evaluate: error: --submissions {nope}: "
                                       f"expected a folder, found none\n")


@pytest.mark.parametrize("role", ["--pred", "--gt"])
def test_images_folder_is_refused_as_labels(role: str, phantoms: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folders = {"--pred": phantoms / "labels", "--gt": phantoms / "labels", role: phantoms / "images"}
    code = main(["score", "--pred", str(folders["--pred"]), "--gt", str(folders["--gt"]),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"{role} folder {phantoms / 'images'} holds input images" in err
    assert "all 2 files are named <id>_0000.nii.gz (e.g. case_0000_0000.nii.gz)" in err
    assert not (tmp_path / "out" / "scores.txt").exists()


def test_ids_ending_in_0000_still_pair(phantoms: Path, tmp_path: Path) -> None:
    # an id may itself end in _0000: predictions that pair with references are scored
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt, pred):
        folder.mkdir()
        for name in ("a_0000", "b"):
            (folder / f"{name}.nii.gz").write_bytes((phantoms / "labels" / "case_0000.nii.gz")
                                                    .read_bytes())
    (pred / "b.nii.gz").unlink()  # the remaining prediction, a_0000, is all "_0000"
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "o")]) == 4


def test_demo_prints_the_leaderboard_and_how_to_open_the_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import flare_eval.demo

    # the demo itself is tested in tests/report; here its closing output, on a hand-made
    # leaderboard.csv (the demo's pipeline replaced), so that every printed value is known
    def fake_demo(out_dir: Path, **options: Any) -> Path:
        ranking = Path(out_dir) / "results" / "ranking"
        ranking.mkdir(parents=True)
        (ranking / "leaderboard.csv").write_text(
            "rank,team,mean_rank,organ_dsc,organ_nsd,lesion_dsc,lesion_nsd,runtime,gpu_auc\n"
            "2,boreal,2.5416666,0.84700384,0.76093173,0.54957499,,6.04374999,0.0\n"
            "1,aurora,1.5,0.94971346,0.91995384,0.786125,0.7777,8.55625,174040.0\n")
        options["progress"]("scoring", 1, 2)  # a bar is drawn, as the real demo draws one
        return Path(out_dir) / "report.html"

    monkeypatch.setattr(flare_eval.demo, "run_demo", fake_demo)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    # the transient bar is not drawn on a stderr that is no terminal: not even a blank line
    assert captured.err == ""
    lines = captured.out.splitlines()
    start = lines.index("Leaderboard (lower mean rank is better):")
    assert start == 0  # piped stdout starts with the leaderboard: the bar is on stderr
    # best first; DSC/NSD to 4 decimals, mean rank to 3, seconds to 0.1, MiB·s whole with
    # thousands separators, a missing value as n/a; units in the headers
    assert [line.split() for line in lines[start + 1:start + 4]] == [
        ["Rank", "Team", "Mean", "rank", "Organ", "DSC", "Organ", "NSD", "Lesion", "DSC",
         "Lesion", "NSD", "Runtime", "(s)", "GPU", "AUC", "(MiB·s)"],
        ["1", "aurora", "1.500", "0.9497", "0.9200", "0.7861", "0.7777", "8.6", "174,040"],
        ["2", "boreal", "2.542", "0.8470", "0.7609", "0.5496", "n/a", "6.0", "0"],
    ]
    report = out / "report.html"
    assert f"  Linux:   xdg-open {report}" in lines
    assert f"  macOS:   open {report}" in lines
    assert f'  Windows: start "" "{report}"' in lines


@pytest.mark.parametrize("verb", ["run", "evaluate"])
def test_no_timeout_by_default(verb):
    # the official harness had no timeout: a slow case is measured, not killed
    required = {"run": ["--inputs", "i", "--out", "o"],
                "evaluate": ["--submissions", "s", "--images", "i", "--labels", "l", "--out", "o"]}
    assert build_parser().parse_args([verb, *required[verb]]).timeout is None


# unbuffered, the verb's print fails; buffered, the flush at the end
@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_closed_pipe_ends_quietly(unbuffered: str) -> None:
    # as in "flare-eval presets | head -1": the reader is gone before anything is written, so
    # every write fails; the shell's code for a writer stopped by SIGPIPE, and no traceback
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    process = subprocess.Popen([sys.executable, "-m", "flare_eval", "presets"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate()
    assert process.returncode == 141, err
    assert err == b""
