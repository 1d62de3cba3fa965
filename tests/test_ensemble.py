"""Majority-vote ensembles: hand-made votes with ties, scipy's mode as oracle, folders, CLI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from flare_eval.cli.main import main
from flare_eval.errors import EXIT_INPUT, EXIT_OK, ConfigError, InputError
from flare_eval.ensemble import ensemble_folders, majority_vote

LABELS = tuple(range(1, 15))


def _volume(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint8).reshape(1, 1, -1)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        # three members, per voxel: unanimous 4; 2-1 for 1; 2-1 for background; 1-1-1 tie of
        # 1, 2, 3 -> lowest 1; 1-1-1 tie with background -> 0
        ([[4, 1, 0, 1, 0], [4, 1, 0, 2, 2], [4, 7, 5, 3, 3]], [4, 1, 0, 1, 0]),
        # two members: any disagreement is a tie -> the lower label; background beats all
        ([[1, 2, 0, 9], [2, 3, 14, 9]], [1, 2, 0, 9]),
        # five members: 2-2-1 tie of 1 and 2 -> 1; 3-2 for 3; 2-2-1 tie of 0 and 2 -> 0;
        # 2-1-1-1 plurality for 14 without a majority
        ([[1, 3, 2, 14], [1, 3, 2, 14], [2, 3, 0, 1], [2, 0, 0, 2], [0, 0, 5, 3]],
         [1, 3, 0, 14]),
    ],
    ids=["three", "two", "five"],
)
def test_hand_made_votes_and_ties(members, expected):
    result = majority_vote([_volume(m) for m in members], labels=LABELS)
    assert result.dtype == np.uint8
    assert result.ravel().tolist() == expected


def test_random_votes_equal_scipy_mode_smallest_on_ties(rng):
    # scipy.stats.mode returns the smallest of equally frequent values: the documented rule.
    for n_members in (2, 3, 4, 5):
        members = [rng.integers(0, 4, size=(9, 8, 7)).astype(np.uint8) for _ in range(n_members)]
        expected = stats.mode(np.stack(members), axis=0, keepdims=False).mode
        np.testing.assert_array_equal(majority_vote(members, labels=(1, 2, 3)), expected)


def test_inputs_untouched_and_any_integer_dtype_or_memory_order(rng):
    members = [rng.integers(0, 3, size=(6, 5, 4)) for _ in range(3)]  # int64
    copies = [m.copy() for m in members]
    expected = stats.mode(np.stack(members), axis=0, keepdims=False).mode
    mixed = [members[0].astype(np.int16), np.asfortranarray(members[1]), members[2]]
    np.testing.assert_array_equal(majority_vote(mixed, labels=(1, 2)), expected)
    # all agree: a copy of the common labels, never the input array itself
    same = majority_vote([members[0], members[0]], labels=(1, 2))
    assert not np.shares_memory(same, members[0])
    assert all(np.array_equal(m, c) for m, c in zip(members, copies))


@pytest.mark.parametrize(
    ("members", "labels", "error", "match"),
    [
        ([_volume([1])], LABELS, InputError, "at least 2 predictions, got 1"),
        ([_volume([1, 2]), _volume([1])], LABELS, InputError, r"prediction 1 has shape \(1, 1, 1\)"),
        ([_volume([1]), _volume([1]).astype(float)], LABELS, InputError, "data type float64"),
        ([_volume([1, 2]), _volume([1, 6])], (1, 2, 3), InputError, r"labels \[6\] outside"),
        ([_volume([9, 2]), _volume([9, 2])], (1, 2, 3), InputError, r"prediction 0 holds labels \[9\]"),
        ([_volume([1]), -np.ones((1, 1, 1), int)], (1,), InputError, r"values -1..-1"),
        ([_volume([1]), _volume([1])], (0, 1), ConfigError, r"labels must lie in 1..255"),
    ],
)
def test_bad_inputs_raise_named_errors(members, labels, error, match):
    with pytest.raises(error, match=match):
        majority_vote(members, labels=labels)


# --- folders ------------------------------------------------------------------------------

# A non-RAS grid (axes flipped, anisotropic) that must come out unchanged.
AFFINE = np.array([[-0.8, 0, 0, 100.0], [0, -0.8, 0, 50.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


def _write(folder: Path, name: str, data, affine=AFFINE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(data, dtype=np.uint8), affine)
    image.set_data_dtype(np.uint8)
    nib.save(image, folder / name)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def _three_teams(tmp_path: Path) -> list[Path]:
    folders = [tmp_path / f"team{i}" for i in range(3)]
    votes = ([[1, 2, 0, 14]], [[1, 3, 14, 14]], [[2, 4, 14, 0]])
    for folder, vote in zip(folders, votes):
        _write(folder, "case_a.nii.gz", np.asarray(vote).reshape(1, 1, 4))
        _write(folder, "case_b.nii.gz", np.full((2, 2, 2), 5))
    return folders


def test_ensemble_folders_pairs_by_name_and_keeps_the_grid(tmp_path):
    folders = _three_teams(tmp_path)
    calls = []
    written = ensemble_folders(folders, tmp_path / "out",
                               progress=lambda d, t, n: calls.append((d, t, n)))
    assert [p.name for p in written] == ["case_a.nii.gz", "case_b.nii.gz"]
    data, affine = _read(tmp_path / "out" / "case_a.nii.gz")
    # per voxel: 1,1,2 -> 1; 2,3,4 tie -> 2; 0,14,14 -> 14; 14,14,0 -> 14
    assert data.ravel().tolist() == [1, 2, 14, 14]
    assert data.dtype == np.uint8
    np.testing.assert_allclose(affine, AFFINE)
    assert (_read(tmp_path / "out" / "case_b.nii.gz")[0] == 5).all()
    assert calls == [(1, 2, "case_a.nii.gz"), (2, 2, "case_b.nii.gz")]


def test_missing_case_is_an_error_unless_allowed(tmp_path):
    folders = _three_teams(tmp_path)
    (folders[2] / "case_a.nii.gz").unlink()
    with pytest.raises(InputError, match=r"team2: 1 missing, e.g. \['case_a.nii.gz'\]"):
        ensemble_folders(folders, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    ensemble_folders(folders, tmp_path / "out", allow_missing=True)
    # team2 votes background: 1,1,0 -> 1; 2,3,0 tie -> 0; 0,14,0 -> 0; 14,14,0 -> 14
    assert _read(tmp_path / "out" / "case_a.nii.gz")[0].ravel().tolist() == [1, 0, 0, 14]


def test_mismatched_grids_and_bad_folders_are_refused(tmp_path):
    folders = _three_teams(tmp_path)
    _write(folders[1], "case_b.nii.gz", np.full((2, 2, 3), 5))
    with pytest.raises(InputError, match=r"team1/case_b.nii.gz has shape \(2, 2, 3\)"):
        ensemble_folders(folders, tmp_path / "out")
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    _write(folders[1], "case_b.nii.gz", np.full((2, 2, 2), 5), affine=shifted)
    with pytest.raises(InputError, match="different affines"):
        ensemble_folders(folders, tmp_path / "out")
    with pytest.raises(ConfigError, match="is one of the prediction folders"):
        ensemble_folders(folders, folders[0])
    with pytest.raises(ConfigError, match="at least 2 prediction folders"):
        ensemble_folders(folders[:1], tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        ensemble_folders([folders[0], tmp_path / "nope"], tmp_path / "out")


def test_cli_ensemble(tmp_path, capsys):
    folders = _three_teams(tmp_path)
    out = tmp_path / "top3"
    argv = ["ensemble", "--pred", *map(str, folders), "--out", str(out)]
    assert main(argv) == EXIT_OK
    assert _read(out / "case_a.nii.gz")[0].ravel().tolist() == [1, 2, 14, 14]
    (folders[0] / "case_b.nii.gz").unlink()
    assert main([*argv[:-1], str(tmp_path / "again")]) == EXIT_INPUT
    assert "not every folder has every case" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "again"), "--allow-missing"]) == EXIT_OK
