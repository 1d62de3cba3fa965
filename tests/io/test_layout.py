"""Case ids from file names and the team folders of a results folder, read the same everywhere."""

from __future__ import annotations

import pytest

from flare_eval.errors import InputError
from flare_eval.io.layout import case_id, team_folders
from flare_eval.runner import find_cases


def test_case_ids_of_labels_and_of_input_images(tmp_path):
    assert case_id("a/b/FLARE23_0001.nii.gz") == "FLARE23_0001"
    assert case_id("FLARE23_0001.nii") == "FLARE23_0001"
    # an id may end in _0000 itself: only stripped when the name is an input image's
    assert case_id("x_0000.nii.gz") == "x_0000"
    assert case_id("x_0000_0000.nii.gz", image=True) == "x_0000"
    (tmp_path / "x_0000_0000.nii.gz").write_bytes(b"")
    (tmp_path / "y_0000.nii.gz").write_bytes(b"")
    assert [case for case, _ in find_cases(tmp_path)] == ["x_0000", "y"]


def test_team_folders_are_the_scored_ones(tmp_path):
    for team in ("b", "a", ".staging", "ranking"):
        (tmp_path / team).mkdir()
        (tmp_path / team / "per_case.csv").write_text("Name\n")
    (tmp_path / "notes").mkdir()  # no tables: not a team
    (tmp_path / "per_case.csv").write_text("Name\n")  # a file, not a folder
    assert [p.name for p in team_folders(tmp_path)] == ["a", "b"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "runs.csv").write_text("case\n")
    with pytest.raises(InputError, match=r"c has runs.csv but no per_case.csv"):
        team_folders(tmp_path)
