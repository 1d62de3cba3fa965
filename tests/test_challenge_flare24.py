"""The FLARE 2024 presets through ``flare-eval score`` on hand-built volumes, every value pinned.

The rules are those of the organizers' scorers (JunMa11/FLARE, FLARE24, as paraphrased in
``flare_eval/challenges/flare24-task*.toml``).  Each value is derived by hand in a comment, and
the same files are scored again by an independent re-expression of the official scorers' rules
on DeepMind's ``surface-distance`` package (the oracle), which reads the files with nibabel as
they do.

Task 1 grid 12 x 12 x 6 voxels of 1 mm, axis 2 is z; the reference lesion (1) is
``[2:6, 2:6, 1:3]`` (32 voxels) where a case has one.  Cases:

- ``exact_plus_2``: the reference plus one voxel of 2 far away: the label above 1 zeroes the
  case, 0 / 0 (as background it would give 1 / 1);
- ``only_2``: reference empty, one voxel of 2: 0 / 0, the rule judged before the emptiness rules
  (both empty after dropping the 2 would give 1 / 1);
- ``negative``: the reference plus one voxel of -1 in an int16 file: 0 / 0 (the official uint8
  cast makes -1 a 255, above 1);
- ``both_empty``: 1 / 1;
- ``shifted``: ``[3:7, 2:6, 1:3]``: overlap 3 x 4 x 2 = 24, DSC 48 / 64 = 0.75; every surface
  element lies within 1 mm of the other surface, NSD (2 mm) 1;
- ``low``: ``[5:12, 2:6, 1:3]`` (56 voxels): overlap 1 x 4 x 2 = 8, DSC 16 / 88 = 0.181818 ->
  0.1818 < 0.2, so NSD 0 (at 2 mm it is not 0: the oracle's threshold-free value says so).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.errors import EXIT_OK
from flare_eval.presets import PRESETS
from tests.conftest import require_module

T1_SHAPE = (12, 12, 6)
LESION = (slice(2, 6), slice(2, 6), slice(1, 3))
#: The official scorer's columns and tolerances (mm), written out as it writes them.
T2_TOLERANCES = {"Liver": 5, "RK": 3, "Spleen": 3, "Pancreas": 5, "Aorta": 2, "IVC": 2, "RAG": 2,
                 "LAG": 2, "Gallbladder": 2, "Esophagus": 3, "Stomach": 5, "Duodenum": 7, "LK": 3}


def _save(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, np.eye(4))
    image.set_data_dtype(data.dtype)
    nib.save(image, path)


def _task1_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``case: (reference, prediction)`` of the module docstring."""
    lesion = np.zeros(T1_SHAPE, np.uint8)
    lesion[LESION] = 1
    empty = np.zeros(T1_SHAPE, np.uint8)
    plus_2 = lesion.copy()
    plus_2[10, 10, 5] = 2
    only_2 = empty.copy()
    only_2[10, 10, 5] = 2
    negative = lesion.astype(np.int16)
    negative[10, 10, 5] = -1
    shifted = np.zeros(T1_SHAPE, np.uint8)
    shifted[3:7, 2:6, 1:3] = 1
    low = np.zeros(T1_SHAPE, np.uint8)
    low[5:12, 2:6, 1:3] = 1
    return {"exact_plus_2": (lesion, plus_2), "only_2": (empty, only_2),
            "negative": (lesion, negative), "both_empty": (empty, empty),
            "shifted": (lesion, shifted), "low": (lesion, low)}


#: Lesion DSC and NSD of each task 1 case, by hand (module docstring).
T1_EXPECTED = {"both_empty": (1.0, 1.0), "exact_plus_2": (0.0, 0.0), "low": (0.1818, 0.0),
               "negative": (0.0, 0.0), "only_2": (0.0, 0.0), "shifted": (0.75, 1.0)}


def _write_task1(root: Path) -> None:
    for case, (reference, prediction) in _task1_cases().items():
        _save(root / "gt" / f"{case}.nii.gz", reference)
        _save(root / "pred" / f"{case}.nii.gz", prediction)


def _score(root: Path, preset: str, out: str) -> pd.DataFrame:
    assert main(["score", "--preset", preset, "--pred", str(root / "pred"), "--gt",
                 str(root / "gt"), "--out", str(root / out)]) == EXIT_OK
    return pd.read_csv(root / out / "per_case.csv")


def test_task1_zeroes_a_case_with_a_label_above_1(tmp_path, capsys):
    _write_task1(tmp_path)
    per_case = _score(tmp_path, "flare24-task1", "t1")
    assert list(per_case.columns) == ["Name", "Lesion_DSC", "Lesion_NSD"]
    got = {name.removesuffix(".nii.gz"): (dsc, nsd)
           for name, dsc, nsd in per_case.itertuples(index=False)}
    assert got == T1_EXPECTED
    out = " ".join(capsys.readouterr().err.split())  # the console's lines, unwrapped
    assert "Organ DSC" not in out and "Lesion (lesion) DSC 0.3220" in out  # 1.9318 / 6
    assert "every class scored 0 (out_of_map_labels" in out
    assert "scored as background" not in out  # the reader's note is not true here
    run = json.loads((tmp_path / "t1" / "run.json").read_text())
    # no organ class, no organ summary: (1 + 0 x 3 + 0.75 + 0.1818) / 6 = 0.32197 -> 0.322
    assert run["summary"] == {"Lesion_DSC": 0.322, "Lesion_NSD": round(2 / 6, 4)}
    recorded = run["options"]["preset"]
    assert recorded["out_of_map_labels"] == "zero_case"
    assert recorded["content_sha256"] == PRESETS["flare24-task1"].content_sha256
    assert (tmp_path / "t1" / "scores.txt").read_text() == "Lesion_DSC: 0.3220\nLesion_NSD: 0.3333\n"
    cases = pd.read_csv(tmp_path / "t1" / "cases.csv").set_index("case")
    assert (cases["status"] == "ok").all()  # scored by the rule, not failed
    long = pd.read_csv(tmp_path / "t1" / "metrics_long.csv")
    zeroed = long[(long["case"] == "only_2") & (long["metric"] == "hd95")]["value"]
    assert zeroed.tolist() == [np.inf]
    # the instance metrics see an empty prediction in a zeroed case: the lesion is missed
    lesions = pd.read_csv(tmp_path / "t1" / "lesions_per_case.csv").set_index("Name")
    assert lesions.loc["exact_plus_2.nii.gz", "tp"] == 0
    assert lesions.loc["exact_plus_2.nii.gz", "fn"] == 1


def test_task1_rule_is_the_definitions_key(tmp_path):
    """The same files under the background rule: the labels above 1 are dropped instead."""
    _write_task1(tmp_path)
    (tmp_path / "bg.toml").write_text('base = "flare24-task1"\nname = "t1-bg"\n'
                                      'out_of_map_labels = "background"\n')
    per_case = _score(tmp_path, str(tmp_path / "bg.toml"), "bg").set_index("Name")
    # exact lesion: 1 / 1; only the 2, dropped: both empty, 1 / 1; -1 dropped: exact, 1 / 1
    for case in ("exact_plus_2", "only_2", "negative"):
        assert tuple(per_case.loc[f"{case}.nii.gz"]) == (1.0, 1.0)


def test_task1_ranks_on_the_lesion_criteria(tmp_path):
    """Two teams on the task 1 references: ``clean`` predicts them exactly (1 / 1 in every
    case), ``stray`` the same plus one voxel of 2 (every case zeroed, 0 / 0): ``clean`` ranks
    first in every case on both lesion criteria, the only ones without runs."""
    cases = _task1_cases()
    for case, (reference, _) in cases.items():
        _save(tmp_path / "gt" / f"{case}.nii.gz", reference)
        _save(tmp_path / "clean" / f"{case}.nii.gz", reference)
        stray = reference.copy()
        stray[0, 0, 0] = 2
        _save(tmp_path / "stray" / f"{case}.nii.gz", stray)
    for team in ("clean", "stray"):
        assert main(["score", "--preset", "flare24-task1", "--pred", str(tmp_path / team),
                     "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "results" / team)]) == EXIT_OK
    assert main(["rank", str(tmp_path / "results"), "--preset", "flare24-task1", "--out",
                 str(tmp_path / "results" / "ranking"), "--bootstrap", "10"]) == EXIT_OK
    board = pd.read_csv(tmp_path / "results" / "ranking" / "leaderboard.csv").set_index("team")
    # per case and criterion clean ranks 1, stray 2: mean ranks 1 and 2
    assert board.loc["clean", "mean_rank"] == 1.0 and board.loc["stray", "mean_rank"] == 2.0
    ranking = json.loads((tmp_path / "results" / "ranking" / "ranking.json").read_text())
    assert [m["name"] for m in ranking["metrics"]] == ["lesion_dsc", "lesion_nsd"]
    assert ranking["definition"]["content_sha256"] == PRESETS["flare24-task1"].content_sha256
    assert main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "report.html")]) == EXIT_OK
    sha = PRESETS["flare24-task1"].content_sha256[:12]
    assert f"preset flare24-task1 (sha256 {sha})" in (tmp_path / "report.html").read_text()


def _task2_case() -> tuple[np.ndarray, np.ndarray]:
    """Grid 16 x 16 x 8 of 1 mm.  Reference: liver (1) ``[0:4, 0:4, 0:4]`` (64 voxels), aorta
    (5) ``[8:10, 8:10, 0:4]``.  Prediction: liver ``[3:10, 0:4, 0:4]`` (112 voxels, overlap
    1 x 4 x 4 = 16: DSC 32 / 176 = 0.181818 -> 0.1818 < 0.2, NSD 0; FLARE22's scorer computes
    it), aorta ``[8:10, 8:10, 0:3]`` (cut with the reference to the half-open ``[0, 3)``: DSC 1,
    NSD 1), and a block of 14 ``[12:14, 12:14, 0:2]``, above the map: never compared, so the 11
    other organs are empty on both sides, 1 / 1."""
    reference = np.zeros((16, 16, 8), np.uint8)
    reference[0:4, 0:4, 0:4] = 1
    reference[8:10, 8:10, 0:4] = 5
    prediction = np.zeros_like(reference)
    prediction[3:10, 0:4, 0:4] = 1
    prediction[8:10, 8:10, 0:3] = 5
    prediction[12:14, 12:14, 0:2] = 14
    return reference, prediction


@pytest.mark.parametrize("task", ["flare24-task2", "flare24-task3"])
def test_tasks_2_and_3_score_13_organs_with_the_02_rule(tmp_path, task):
    reference, prediction = _task2_case()
    _save(tmp_path / "gt" / "c.nii.gz", reference)
    _save(tmp_path / "pred" / "c.nii.gz", prediction)
    row = _score(tmp_path, task, "out").iloc[0]
    assert list(row.index) == ["Name", *(f"{n}_DSC" for n in T2_TOLERANCES),
                               *(f"{n}_NSD" for n in T2_TOLERANCES)]
    assert {c.name: c.tolerance_mm for c in PRESETS[task].classes} == T2_TOLERANCES
    assert (row["Liver_DSC"], row["Liver_NSD"]) == (0.1818, 0.0)
    assert (row["Aorta_DSC"], row["Aorta_NSD"]) == (1.0, 1.0)
    others = [n for n in T2_TOLERANCES if n not in ("Liver", "Aorta")]
    assert all(row[f"{n}_DSC"] == row[f"{n}_NSD"] == 1.0 for n in others)
    summary = json.loads((tmp_path / "out" / "run.json").read_text())["summary"]
    # (0.1818 + 12) / 13 = 0.937062 -> 0.9371; NSD (0 + 12) / 13 = 0.923077 -> 0.9231
    assert (summary["Organ_DSC"], summary["Organ_NSD"]) == (0.9371, 0.9231)


def test_task3_is_task2_in_another_modality():
    """One scorer scores both tasks: their definitions differ in name and title alone."""
    task2, task3 = PRESETS["flare24-task2"], PRESETS["flare24-task3"]
    assert dataclasses.replace(task3, name=task2.name, title=task2.title) == task2
    assert task3.content_sha256 != task2.content_sha256


# --- the oracle: the official scorers' rules re-expressed on surface-distance -----------------

def _oracle_pair(sd, gt: np.ndarray, seg: np.ndarray, spacing, tolerance: float, *,
                 z_crop: bool = False) -> tuple[float, float]:
    """DSC and NSD of two masks by the scorers' shared rules: emptiness judged on the whole
    volumes, then (``z_crop``) both cut to the reference's ``[zmin, zmax)``, DSC, and NSD only
    when DSC >= 0.2, both rounded with numpy to 4 places."""
    if not gt.any() and not seg.any():
        return 1.0, 1.0
    if not gt.any() or not seg.any():
        return 0.0, 0.0
    if z_crop:
        z = np.nonzero(gt)[2]
        gt, seg = gt[:, :, z.min():z.max()], seg[:, :, z.min():z.max()]
    dsc = sd.compute_dice_coefficient(gt, seg)
    nsd = 0.0
    if dsc >= 0.2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # its scipy.ndimage.filters use
            distances = sd.compute_surface_distances(gt, seg, spacing)
        nsd = sd.compute_surface_dice_at_tolerance(distances, tolerance)
    return float(np.round(dsc, 4)), float(np.round(nsd, 4))


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """The volume as the scorers cast it to uint8 (here from its stored integers, which wrap
    -1 to 255 as the scorers' float cast does on x86), and the header's spacing."""
    image = nib.load(path)
    return np.asarray(image.dataobj).astype(np.uint8), tuple(image.header.get_zooms()[:3])


def test_task1_equals_the_oracle(tmp_path):
    sd = require_module("surface_distance")
    _write_task1(tmp_path)
    per_case = _score(tmp_path, "flare24-task1", "t1").set_index("Name")
    for case in _task1_cases():
        gt, spacing = _read(tmp_path / "gt" / f"{case}.nii.gz")
        seg, _ = _read(tmp_path / "pred" / f"{case}.nii.gz")
        expected = (0.0, 0.0) if seg.max() > 1 else _oracle_pair(sd, gt == 1, seg == 1, spacing, 2.0)
        assert tuple(per_case.loc[f"{case}.nii.gz"]) == expected, case
    # the threshold-free NSD of ``low`` is not 0: the 0 above is the DSC < 0.2 rule's
    gt, spacing = _read(tmp_path / "gt" / "low.nii.gz")
    seg, _ = _read(tmp_path / "pred" / "low.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        free = sd.compute_surface_dice_at_tolerance(
            sd.compute_surface_distances(gt == 1, seg == 1, spacing), 2.0)
    assert free > 0.1


def test_task2_equals_the_oracle(tmp_path):
    sd = require_module("surface_distance")
    reference, prediction = _task2_case()
    _save(tmp_path / "gt" / "c.nii.gz", reference)
    _save(tmp_path / "pred" / "c.nii.gz", prediction)
    row = _score(tmp_path, "flare24-task2", "out").iloc[0]
    gt, spacing = _read(tmp_path / "gt" / "c.nii.gz")
    seg, _ = _read(tmp_path / "pred" / "c.nii.gz")
    for label, (organ, tolerance) in enumerate(T2_TOLERANCES.items(), 1):
        # aorta, IVC and esophagus cut to the reference's extent
        assert (row[f"{organ}_DSC"], row[f"{organ}_NSD"]) == _oracle_pair(
            sd, gt == label, seg == label, spacing, tolerance, z_crop=label in (5, 6, 10)), organ
