"""Tiny label volumes through ``flare-eval score``, ``rank`` and ``report``: every number pinned.

Grid 16 x 16 x 8 voxels of 1 mm (identity affine); axis 2 is z.  Reference volumes:

- ``case1``: liver (1) ``[0:4, 0:4, 0:4]`` (64 voxels), aorta (5) ``[8:10, 8:10, 0:4]`` (4
  slices), one lesion (14) ``[12:14, 12:14, 0:2]`` (8 voxels);
- ``case2``: liver as in case1, aorta on the single slice ``[8:10, 8:10, 2:3]``, no lesion.

Every other organ is absent from both sides everywhere: both empty, DSC = NSD = 1.

Teams (predictions):

- A: case1 liver exact, aorta ``[8:10, 8:10, 0:3]`` (the top slice missing: the official
  half-open z-crop ``[0, 3)`` drops that slice from both, so DSC 1), lesion exact.  case2 the
  reference plus a false lesion of two voxels touching at one corner, ``(14, 0, 6)`` and
  ``(15, 1, 7)``: one lesion under 26-connectivity (two under 6), and lesion DSC = NSD = 0 (the
  reference has none: one side empty).
- B: case1 liver shifted one voxel along x, ``[1:5, 0:4, 0:4]``: DSC 2*48/128 = 0.75, every
  surface point within 1 mm of the other surface, NSD (5 mm) 1; aorta exact; lesion shifted
  one voxel along x, ``[13:15, 12:14, 0:2]``: overlap 4, DSC 8/16 = 0.5, NSD (2 mm) 1, IoU
  4/12 = 1/3 (unmatched at the default IoU > 0.5, matched at 0.3).  case2: no prediction
  file (missing: 0 where the reference has the class, 1 where both are empty).
- C: case1 liver and aorta exact, a false right kidney (2) ``[6:8, 0:2, 0:2]`` (reference
  empty: 0), one voxel 257 in an int16 file (outside the label map: background, not 257 mod
  256 = 1, liver), lesion ``[12:14, 12:13, 0:2]``: the reference lesion's half, overlap 4,
  DSC 8/12 = 0.6667, NSD 1, IoU 4/8 = 0.5 exactly (unmatched under the strict ``>``).  case2
  a float file holding 1.7 in the liver: refused (the official cast would truncate to 1),
  scored as an empty prediction.

Organ means (13 organs): A 13/13 = 1 in both cases; B case1 (0.75 + 12)/13 = 0.980769; C
case1 (RK 0 + 12)/13 = 0.923077.  Organ NSD: A 1, 1; B case1 1; C case1 12/13.  The ranking
counts a case without a usable prediction (B and C on case2) as 0 on all four accuracy
criteria (FLARE22's failed case), although ``per_case.csv`` keeps 1 for the classes both sides
lack (the official per-class rule, so that ``scores.txt`` matches the official scorer).

Runs (``runs.csv`` as ``flare-eval run`` writes it; ``auc_gpu_mibs`` differs on purpose, the
over-tolerance area is ranked):

====  =====================================  =============================================
team  case1                                  case2
====  =====================================  =============================================
A     ok, 10 s, GPU over tolerance 100       ok, 4000 s (longer than the 3600 s penalty), 5000
B     ok, 40 s, 200                          no_output: penalty 3600 s, 16384 MiB x 3600 s
C     ok, 12 s, 0                            bad_output: penalty
====  =====================================  =============================================

On case2 an ok run took 4000 s, more than the 3600 s penalty: the failed runs take 4000 s
there, so they tie with A instead of beating it.
"""

from __future__ import annotations

import warnings
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.errors import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from flare_eval.presets import FLARE23
from flare_eval.report import load_results
from tests.conftest import require_module

SHAPE = (16, 16, 8)
ORGANS = [FLARE23.class_info(label).name for label in FLARE23.organ_labels]
PENALTY_GPU = 16384.0 * 3600.0


def _save(path: Path, data: np.ndarray) -> None:
    image = nib.Nifti1Image(data, np.eye(4))
    image.set_data_dtype(data.dtype)
    nib.save(image, path)


def _reference(case: str) -> np.ndarray:
    v = np.zeros(SHAPE, np.uint8)
    v[0:4, 0:4, 0:4] = 1
    if case == "case1":
        v[8:10, 8:10, 0:4] = 5
        v[12:14, 12:14, 0:2] = 14
    else:
        v[8:10, 8:10, 2:3] = 5
    return v


def _predictions() -> dict[str, dict[str, np.ndarray]]:
    a1 = _reference("case1")
    a1[8:10, 8:10, 3] = 0
    a2 = _reference("case2")
    a2[14, 0, 6] = a2[15, 1, 7] = 14
    b1 = _reference("case1")
    b1[0:4, 0:4, 0:4] = 0
    b1[1:5, 0:4, 0:4] = 1
    b1[12:14, 12:14, 0:2] = 0
    b1[13:15, 12:14, 0:2] = 14
    c1 = _reference("case1").astype(np.int16)
    c1[6:8, 0:2, 0:2] = 2
    c1[15, 15, 7] = 257
    c1[12:14, 13, 0:2] = 0
    c2 = _reference("case2").astype(np.float32)
    c2[c2 == 1] = 1.7
    return {"A": {"case1": a1, "case2": a2}, "B": {"case1": b1}, "C": {"case1": c1, "case2": c2}}


RUNS = {  # team -> case -> (status, time_s, auc_gpu_over_tolerance_mibs)
    "A": {"case1": ("ok", 10.0, 100.0), "case2": ("ok", 4000.0, 5000.0)},
    "B": {"case1": ("ok", 40.0, 200.0), "case2": ("no_output", 30.0, None)},
    "C": {"case1": ("ok", 12.0, 0.0), "case2": ("bad_output", 5.0, None)},
}


@pytest.fixture(scope="module")
def challenge(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    (root / "gt").mkdir()
    for case in ("case1", "case2"):
        _save(root / "gt" / f"{case}.nii.gz", _reference(case))
    for team, cases in _predictions().items():
        (root / "pred" / team).mkdir(parents=True)
        for case, data in cases.items():
            _save(root / "pred" / team / f"{case}.nii.gz", data)
    return root


def _score(challenge: Path, out: Path, *extra: str) -> dict[str, int]:
    codes = {}
    for team in "ABC":
        codes[team] = main(["score", "--pred", str(challenge / "pred" / team), "--gt",
                            str(challenge / "gt"), "--out", str(out / team), *extra])
        rows = [{"case": case, "name": f"{case}_0000.nii.gz", "status": status,
                 "time_s": time_s, "auc_gpu_mibs": 999999,
                 "auc_gpu_over_tolerance_mibs": gpu}
                for case, (status, time_s, gpu) in RUNS[team].items()]
        pd.DataFrame(rows).to_csv(out / team / "runs.csv", index=False)
    return codes


@pytest.fixture(scope="module")
def results(challenge: Path) -> Path:
    out = challenge / "results"
    assert _score(challenge, out) == {"A": EXIT_OK, "B": EXIT_PARTIAL, "C": EXIT_PARTIAL}
    assert main(["rank", str(out), "--out", str(out / "ranking"), "--bootstrap", "0"]) == EXIT_OK
    return out


def _per_case(results: Path, team: str) -> pd.DataFrame:
    return pd.read_csv(results / team / "per_case.csv").set_index("Name")


def test_score_pins_every_rule(results):
    a, b, c = (_per_case(results, t) for t in "ABC")
    # z-crop [zmin, zmax): A's aorta without the top slice scores 1 (uncropped: 24/28)
    assert a.loc["case1.nii.gz", "Aorta_DSC"] == 1.0
    # single slice kept (the default): scored on that slice
    assert a.loc["case2.nii.gz", ["Aorta_DSC", "Aorta_NSD"]].tolist() == [1.0, 1.0]
    # both empty = 1 (IVC everywhere), one empty = 0 (A's false lesion, C's false kidney)
    assert a.loc["case1.nii.gz", ["IVC_DSC", "IVC_NSD"]].tolist() == [1.0, 1.0]
    assert a.loc["case2.nii.gz", ["Lesion_DSC", "Lesion_NSD"]].tolist() == [0.0, 0.0]
    assert c.loc["case1.nii.gz", ["RK_DSC", "RK_NSD"]].tolist() == [0.0, 0.0]
    # shifted by one voxel: DSC 0.75, NSD 1 (within the liver's 5 mm and the lesion's 2 mm)
    assert b.loc["case1.nii.gz", ["Liver_DSC", "Liver_NSD"]].tolist() == [0.75, 1.0]
    assert b.loc["case1.nii.gz", ["Lesion_DSC", "Lesion_NSD"]].tolist() == [0.5, 1.0]
    assert c.loc["case1.nii.gz", ["Lesion_DSC", "Lesion_NSD"]].tolist() == [0.6667, 1.0]
    # the 257 voxel is background, not liver (a wrapping cast: 2*64/129 = 0.9922)
    assert c.loc["case1.nii.gz", "Liver_DSC"] == 1.0
    # missing (B) and refused float (C) predictions: 0 where the reference has the class
    for table in (b, c):
        row = table.loc["case2.nii.gz"]
        assert row[["Liver_DSC", "Aorta_DSC", "Liver_NSD", "Aorta_NSD"]].tolist() == [0.0] * 4
        assert row[["Lesion_DSC", "Lesion_NSD", "Spleen_DSC"]].tolist() == [1.0, 1.0, 1.0]
    status = pd.read_csv(results / "C" / "cases.csv").set_index("case")
    assert status.loc["case2", "status"] == "bad_prediction"
    assert "non-integer" in status.loc["case2", "message"]
    assert "outside the label map" in status.loc["case1", "message"]
    assert pd.read_csv(results / "B" / "cases.csv").set_index("case").loc[
        "case2", "status"] == "missing_prediction"
    # scores.txt: B's Liver_DSC mean (0.75 + 0)/2 = 0.375; Organ_DSC = mean of 13 organ
    # means: liver 0.375, aorta (1 + 0)/2 = 0.5, 11 x 1 -> (0.875 + 11)/13 = 0.913462 -> 0.9135
    scores = dict(line.split(": ") for line in (results / "B" / "scores.txt").read_text().split("\n")
                  if line)
    assert scores["Liver_DSC"] == "0.3750" and scores["Organ_DSC"] == "0.9135"


def test_lesion_instances_at_the_default_and_at_iou_0_3(results, challenge, tmp_path,
                                                       capsys):
    def lesions(root: Path, team: str, case: str) -> pd.Series:
        return pd.read_csv(root / team / "lesions_per_case.csv").set_index("Name").loc[
            f"{case}.nii.gz"]

    # default IoU > 0.5: B's pair (IoU 1/3) and C's (IoU 0.5, not > 0.5) are unmatched
    for team in "BC":
        row = lesions(results, team, "case1")
        assert row[["tp", "fp", "fn", "f1", "pq"]].tolist() == [0, 1, 1, 0.0, 0.0]
    # default 26-connectivity: A's two corner-touching voxels are one false lesion
    assert lesions(results, "A", "case2")[["pred_lesions", "fp"]].tolist() == [1, 1]
    run = json.loads((results / "A" / "run.json").read_text())["options"]["preset"]["lesions"]
    assert run == {"connectivity": 26, "iou_threshold": 0.5, "match": "iou"}
    # --lesion-iou 0.3: both pairs match; PQ = IoU / (tp + fp/2 + fn/2) = IoU / 1
    out = tmp_path / "iou03"
    _score(challenge, out, "--lesion-iou", "0.3")
    assert lesions(out, "B", "case1")[["tp", "fp", "fn", "f1"]].tolist() == [1, 0, 0, 1.0]
    assert lesions(out, "B", "case1")["pq"] == pytest.approx(1 / 3)
    assert lesions(out, "C", "case1")["pq"] == pytest.approx(0.5)
    # the semantic lesion DSC the ranking uses does not depend on the matching
    assert _per_case(out, "B").loc["case1.nii.gz", "Lesion_DSC"] == 0.5
    # teams scored at 0.3 and at 0.5 are neither ranked nor reported together...
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for root, team in ((results, "A"), (out, "B")):
        (mixed / team).symlink_to(root / team, target_is_directory=True)
    ranking = mixed / "ranking"
    assert main(["rank", str(mixed), "--out", str(ranking), "--bootstrap", "0"]) == EXIT_INPUT
    assert "preset.lesions.iou_threshold is 0.3 for ['B']; 0.5 for ['A']" in capsys.readouterr().err
    # ...unless the ranking was told to: then the report carries the ranking's warning
    assert main(["rank", str(mixed), "--out", str(ranking), "--bootstrap", "0",
                 "--allow-mixed-options"]) == EXIT_OK
    warnings = load_results(mixed).ranking_config["warnings"]
    assert any("preset.lesions.iou_threshold" in w for w in warnings)
    record = json.loads((ranking / "ranking.json").read_text())
    (ranking / "ranking.json").write_text(json.dumps({**record, "allow_mixed_options": False}))
    assert main(["report", str(mixed), "--out", str(tmp_path / "r.html")]) == EXIT_INPUT
    assert "different options: preset.lesions.iou_threshold" in capsys.readouterr().err


def test_lesion_rules_come_from_the_definition_file(challenge, tmp_path, capsys):
    """A user's definition changes the instance rules end to end; the options override it."""
    def row(root: Path, team: str, case: str) -> list:
        return pd.read_csv(root / team / "lesions_per_case.csv").set_index("Name").loc[
            f"{case}.nii.gz", ["pred_lesions", "tp", "fp", "fn"]].tolist()

    definition = tmp_path / "loose.toml"
    definition.write_text('base = "flare23"\nname = "loose"\ntitle = "t"\n'
                          "[lesions]\nconnectivity = 6\niou_threshold = 0.3\n")
    loose = tmp_path / "loose"
    _score(challenge, loose, "--preset", str(definition))
    # IoU > 0.3: B's pair (IoU 1/3) and C's (1/2) match; 6-connectivity: A's two voxels that
    # touch at a corner only are two false lesions
    assert row(loose, "B", "case1") == [1, 1, 0, 0]
    assert row(loose, "C", "case1") == [1, 1, 0, 0]
    assert row(loose, "A", "case2") == [2, 0, 2, 0]
    # the command line wins over the file: back to IoU > 0.5 and 26-connectivity
    strict = tmp_path / "strict"
    _score(challenge, strict, "--preset", str(definition), "--lesion-iou", "0.5",
           "--lesion-connectivity", "26")
    assert row(strict, "B", "case1") == [1, 0, 1, 1]
    assert row(strict, "C", "case1") == [1, 0, 1, 1]
    assert row(strict, "A", "case2") == [1, 0, 1, 0]
    # overlap matching in the file: any shared voxel is a detection (B's IoU 1/3)
    definition.write_text('base = "flare23"\nname = "overlap"\ntitle = "t"\n'
                          '[lesions]\nmatch = "overlap"\n')
    overlap = tmp_path / "overlap"
    _score(challenge, overlap, "--preset", str(definition))
    assert row(overlap, "B", "case1") == [1, 1, 0, 0]
    # a lesion option for a definition without a lesion class is refused, not ignored
    assert main(["score", "--pred", str(challenge / "pred" / "A"), "--gt", str(challenge / "gt"),
                 "--out", str(tmp_path / "x"), "--preset", "flare22", "--lesion-iou", "0.3"]) \
        == EXIT_USAGE
    assert "--lesion-iou: preset 'flare22' has no lesion class" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_rank_pins_ranks_and_means(results):
    ranking = results / "ranking"
    table = pd.read_csv(ranking / "ranking_table.csv").set_index(["team", "case", "metric"])["value"]
    assert table[("B", "case1", "organ_dsc")] == pytest.approx(12.75 / 13)
    assert table[("C", "case1", "organ_nsd")] == pytest.approx(12 / 13)
    # failed prediction: 0 on every accuracy criterion (per_case.csv has 11/13 organs at 1)
    assert [table[("B", "case2", m)] for m in ("organ_dsc", "organ_nsd", "lesion_dsc",
                                                "lesion_nsd")] == [0.0] * 4
    # the over-tolerance GPU area (not auc_gpu_mibs), and the failed runs' penalties; on case2
    # the runtime penalty 3600 s is raised to A's ok 4000 s
    assert table[("A", "case1", "gpu_auc")] == 100.0
    assert table[("B", "case2", "gpu_auc")] == PENALTY_GPU
    assert table[("B", "case2", "runtime")] == 4000.0
    assert table[("C", "case2", "runtime")] == 4000.0
    # per-case ranks (ties min; runtimes under the 15 s floor tie):
    #   case1 organ_dsc A 1 > B 0.9808 > C 0.9231: 1 2 3; organ_nsd A = B = 1 > C: 1 1 3;
    #         lesion_dsc A 1 > C 0.6667 > B 0.5: 1 3 2 (A B C); lesion_nsd all 1: 1 1 1;
    #         runtime A 10 -> 15 = C 12 -> 15 < B 40: 1 3 1; gpu C 0 < A 100 < B 200: 2 3 1
    #   -> A 7, B 13, C 11
    #   case2 organ_dsc/nsd A 1 > B = C 0: 1 2 2 each; lesion_dsc/nsd A = B = C = 0: 1 1 1
    #         each; runtime all 4000: 1 1 1; gpu A 5000 < B = C penalty: 1 2 2
    #   -> A 6, B 9, C 9
    # mean over 12 ranks: A 13/12 = 1.0833, C 20/12 = 1.6667, B 22/12 = 1.8333
    ranks = pd.read_csv(ranking / "case_ranks.csv").set_index(["team", "case", "metric"])["rank"]
    assert [ranks[(t, "case1", "lesion_dsc")] for t in "ABC"] == [1, 3, 2]
    assert [ranks[(t, "case1", "runtime")] for t in "ABC"] == [1, 3, 1]
    assert [ranks[(t, "case2", "runtime")] for t in "ABC"] == [1, 1, 1]
    assert [ranks[(t, "case1", "gpu_auc")] for t in "ABC"] == [2, 3, 1]
    board = pd.read_csv(ranking / "leaderboard.csv")
    assert board["team"].tolist() == ["A", "C", "B"]
    assert board["rank"].tolist() == [1, 2, 3]
    assert board["mean_rank"].tolist() == pytest.approx([13 / 12, 20 / 12, 22 / 12])
    # means over the two cases: organ_dsc A 1, C (12/13 + 0)/2 = 0.461538,
    # B (12.75/13 + 0)/2 = 0.490385; runtime A (10 + 4000)/2 = 2005, C 2006, B 2020
    by_team = board.set_index("team")
    assert by_team["organ_dsc"].to_dict() == pytest.approx(
        {"A": 1.0, "C": 12 / 26, "B": 12.75 / 26})
    assert by_team["runtime"].to_dict() == pytest.approx({"A": 2005.0, "C": 2006.0, "B": 2020.0})
    record = json.loads((ranking / "ranking.json").read_text())
    assert record["ties"] == "min" and record["p_adjust"] == "holm" and record["alpha"] == 0.05
    assert record["gpu_tolerance_mib"] == 4096.0 and record["runtime_tolerance_s"] == 15.0
    assert any("never ranks above an ok one" in w for w in record["warnings"])


def test_report_shows_the_ranked_numbers(results, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(results), "--out", str(out)]) == EXIT_OK
    text = out.read_text()
    board = text[text.index('id="leaderboard"'):]
    board = board[:board.index("</table>")]
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", board, re.S)]
    rows = [r for r in rows if r]
    # rank, team, mean rank, then organ DSC and runtime as the report formats them
    assert [r[:3] for r in rows] == [["1", "A", "1.083"], ["2", "C", "1.667"], ["3", "B", "1.833"]]
    assert rows[1][3] == "0.4615" and rows[2][3] == "0.4904"
    assert "2005.0" in rows[0] and "2020.0" in rows[2]
    # the tolerance lines and the tests are the ranking's
    assert "(15 s, 4096 MiB)" in text
    assert "Holm-adjusted, significant when p &lt;= 0.05" in text
    assert "<th>Missing values</th>" in text


def test_nan_organ_is_left_out_for_every_team(challenge, tmp_path):
    # --single-slice nan: case2's aorta is NaN for every team, the empty predictions of B and
    # C too (a 0 there would rank above A's NaN); A's organ mean is over the 12 other organs,
    # 12/12 = 1, not missing; B and C failed the case: 0
    out = tmp_path / "nan"
    _score(challenge, out, "--single-slice", "nan")
    for team in "ABC":
        assert np.isnan(_per_case(out, team).loc["case2.nii.gz", "Aorta_DSC"])
    assert main(["rank", str(out), "--out", str(out / "ranking"), "--bootstrap", "0"]) == EXIT_OK
    table = pd.read_csv(out / "ranking" / "ranking_table.csv").set_index(
        ["team", "case", "metric"])["value"]
    assert [table[(t, "case2", "organ_dsc")] for t in "ABC"] == [1.0, 0.0, 0.0]
    # scores.txt leaves the NaN out of the aorta mean: A's aorta mean is case1's 1.0
    assert "Aorta_DSC: 1.0000" in (out / "A" / "scores.txt").read_text()


def test_runs_measured_with_another_gpu_tolerance_are_refused(results, tmp_path, capsys):
    (results / "A" / "runner.json").write_text(json.dumps({"gpu_tolerance_mib": 2048.0}))
    try:
        assert main(["rank", str(results), "--out", str(tmp_path / "r"), "--bootstrap", "0"]) != EXIT_OK
        assert "gpu_tolerance_mib 2048.0" in capsys.readouterr().err
        assert main(["rank", str(results), "--out", str(tmp_path / "r"), "--bootstrap", "0",
                     "--gpu-tolerance", "2048"]) == EXIT_OK
    finally:
        (results / "A" / "runner.json").unlink()


def test_lesion_nsd_uses_the_2_mm_tolerance(tmp_path):
    # a lesion [4:8, 4:8, 0:3] predicted 3 voxels (3 mm) off along x: overlap 1 x 4 x 3 = 12,
    # DSC 24/96 = 0.25 (above the 0.1 NSD threshold); surface points lie 0 to 3 mm apart, so
    # the NSD depends on the tolerance: DeepMind's surface-distance gives the oracle at
    # FLARE23's lesion tolerance, 2 mm
    surface_distance = require_module("surface_distance")
    reference = np.zeros(SHAPE, np.uint8)
    reference[4:8, 4:8, 0:3] = 14
    prediction = np.zeros(SHAPE, np.uint8)
    prediction[7:11, 4:8, 0:3] = 14
    for folder, data in (("gt", reference), ("pred", prediction)):
        (tmp_path / folder).mkdir()
        _save(tmp_path / folder / "case.nii.gz", data)
    assert main(["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--out", str(tmp_path / "out")]) == EXIT_OK
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its scipy.ndimage.filters use
        distances = surface_distance.compute_surface_distances(reference == 14, prediction == 14,
                                                               (1.0, 1.0, 1.0))
    at_2mm = surface_distance.compute_surface_dice_at_tolerance(distances, 2.0)
    at_3mm = surface_distance.compute_surface_dice_at_tolerance(distances, 3.0)
    assert round(at_2mm, 4) != round(at_3mm, 4)  # the case tells the tolerances apart
    row = pd.read_csv(tmp_path / "out" / "per_case.csv").set_index("Name").loc["case.nii.gz"]
    assert row["Lesion_DSC"] == 0.25
    assert row["Lesion_NSD"] == pytest.approx(np.round(at_2mm, 4), abs=1e-12)
