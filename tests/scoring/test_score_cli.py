"""``flare-eval score`` end to end on real NIfTI files: official formats, failures, resume."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.errors import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from flare_eval.io import read_label
from flare_eval.phantoms import write_phantom_set
from flare_eval.presets import FLARE23
from tests.conftest import require_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
require_module("surface_distance")
from official_flare23 import official_files  # noqa: E402

OFFICIAL_KEYS = (
    [f"{c}_DSC" for c in ("Liver", "RK", "Spleen", "Pancreas", "Aorta", "IVC", "RAG", "LAG",
                          "Gallbladder", "Esophagus", "Stomach", "Duodenum", "LK", "Lesion")]
    + [f"{c}_NSD" for c in ("Liver", "RK", "Spleen", "Pancreas", "Aorta", "IVC", "RAG", "LAG",
                            "Gallbladder", "Esophagus", "Stomach", "Duodenum", "LK", "Lesion")]
    + ["Organ_DSC", "Organ_NSD"]
)


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    root = tmp_path_factory.mktemp("challenge")
    write_phantom_set(root, cases=3, seed=7, shape=(64, 64, 40), spacing_mm=(6.0, 6.0, 7.5),
                      prediction_quality="good", missing_predictions=1)
    return root


def run_score(challenge, out, *extra):
    return main(["score", "--pred", str(challenge / "predictions"), "--gt", str(challenge / "labels"),
                 "--out", str(out), *extra])


def test_official_outputs_and_values(challenge, tmp_path):
    out = tmp_path / "out"
    assert run_score(challenge, out) == EXIT_PARTIAL  # one prediction is missing
    per_case = pd.read_csv(out / "per_case.csv")
    assert list(per_case.columns) == ["Name"] + OFFICIAL_KEYS[:28]
    assert len(per_case) == 3
    # every scored case equals the official path read from the same files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in ("phantom_0007.nii.gz", "phantom_0008.nii.gz"):
            expected = official_files(challenge / "labels" / name, challenge / "predictions" / name)
            row = per_case.set_index("Name").loc[name]
            assert {c.label: (row[f"{c.name}_DSC"], row[f"{c.name}_NSD"]) for c in FLARE23.classes} == expected
    # the missing case: 0 for classes in the reference, 1 for classes absent from it
    missing = per_case.set_index("Name").loc["phantom_0009.nii.gz"]
    present = np.unique(read_label(challenge / "labels" / "phantom_0009.nii.gz").data)
    for c in FLARE23.classes:
        assert missing[f"{c.name}_DSC"] == (0.0 if c.label in present else 1.0)
    lines = (out / "scores.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == OFFICIAL_KEYS
    # scores.txt: column means of the rounded per-case values, then the mean of the organ means
    liver = float(lines[0].split(": ")[1])
    assert liver == pytest.approx(round(per_case["Liver_DSC"].mean(), 4), abs=1e-12)
    organ = np.mean([float(x.split(": ")[1]) for x in lines[:13]])
    assert float(lines[28].split(": ")[1]) == pytest.approx(np.round(organ, 4), abs=1e-12)
    cases = pd.read_csv(out / "cases.csv")
    assert cases.set_index("case").loc["phantom_0009", "status"] == "missing_prediction"
    tidy = pd.read_csv(out / "metrics_long.csv")
    assert len(tidy) == 3 * 14 * 3 and set(tidy.metric) == {"dsc", "nsd", "hd95"}
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["statuses"] == {"missing_prediction": 1, "ok": 2}
    assert (out / "lesions_per_case.csv").exists() and (out / "lesions.csv").exists()


def test_strict_stops_on_missing_prediction(challenge, tmp_path, capsys):
    assert run_score(challenge, tmp_path / "s", "--strict") == EXIT_INPUT
    assert "phantom_0009" in capsys.readouterr().err


def test_resume_skips_finished_cases_and_gives_identical_tables(challenge, tmp_path):
    out = tmp_path / "r"
    run_score(challenge, out)
    first = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    # as if killed after one case: the final tables and two case records are gone
    for p in out.glob("*.csv"):
        p.unlink()
    (out / "scores.txt").unlink()
    cached = sorted((out / ".flare-eval-cache" / "cases").glob("*.json"))
    for p in cached[1:]:
        p.unlink()
    run_score(challenge, out)
    run = json.loads((out / "run.json").read_text())
    assert run["reused_from_cache"] == 1
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == first


def test_changed_prediction_is_rescored(challenge, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(challenge, copy)
    out = tmp_path / "o"
    run_score(copy, out)
    shutil.copy(copy / "labels" / "phantom_0007.nii.gz", copy / "predictions" / "phantom_0007.nii.gz")
    run_score(copy, out)
    row = pd.read_csv(out / "per_case.csv").set_index("Name").loc["phantom_0007.nii.gz"]
    assert row["Liver_DSC"] == 1.0
    assert json.loads((out / "run.json").read_text())["reused_from_cache"] == 2


def test_other_configuration_into_the_same_folder_is_refused(challenge, tmp_path, capsys):
    out = tmp_path / "k"
    run_score(challenge, out)
    assert run_score(challenge, out, "--nsd-dsc-threshold", "0.2") == EXIT_USAGE
    assert "another configuration" in capsys.readouterr().err
    assert run_score(challenge, out, "--nsd-dsc-threshold", "0.2", "--overwrite") == EXIT_PARTIAL
    assert json.loads((out / "run.json").read_text())["options"]["preset"]["nsd_dsc_threshold"] == 0.2


def test_workers_give_identical_tables(challenge, tmp_path):
    run_score(challenge, tmp_path / "one")
    run_score(challenge, tmp_path / "two", "--workers", "2")
    for name in ("per_case.csv", "metrics_long.csv", "lesions.csv", "scores.txt"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_bad_prediction_is_a_failed_case_not_a_crash(challenge, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(challenge, copy)
    (copy / "predictions" / "phantom_0008.nii.gz").write_bytes(b"\x1f\x8b garbage")
    out = tmp_path / "o"
    assert run_score(copy, out) == EXIT_PARTIAL
    cases = pd.read_csv(out / "cases.csv").set_index("case")
    assert cases.loc["phantom_0008", "status"] == "bad_prediction"
    assert "corrupt or truncated gzip" in cases.loc["phantom_0008", "message"]


def test_affine_mismatch_is_reported(challenge, tmp_path):
    import nibabel as nib

    copy = tmp_path / "a"
    shutil.copytree(challenge, copy)
    path = copy / "predictions" / "phantom_0007.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), np.diag([6.0, 6.0, 7.5, 1.0])), str(path))
    run_score(copy, tmp_path / "o")
    message = pd.read_csv(tmp_path / "o" / "cases.csv").set_index("case").loc["phantom_0007", "message"]
    assert "affine differs" in message


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["score", "--pred", str(tmp_path / "x"), "--gt", str(tmp_path), "--out", str(tmp_path / "o")]) == EXIT_INPUT
    assert "does not exist" in capsys.readouterr().err


def test_parquet_tidy_table_equals_the_csv(challenge, tmp_path):
    pytest.importorskip("pyarrow")
    run_score(challenge, tmp_path / "p", "--parquet")
    csv = pd.read_csv(tmp_path / "p" / "metrics_long.csv")
    parquet = pd.read_parquet(tmp_path / "p" / "metrics_long.parquet")
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)


def test_damaged_gzip_ends_score_as_the_official_scorer_scores_them(challenge, tmp_path):
    # the official scorer (nibabel get_fdata) reads a file without its gzip trailer, with a
    # wrong CRC or with trailing bytes: it gives these predictions their real scores, so must we
    import gzip as gz

    copy = tmp_path / "d"
    shutil.copytree(challenge, copy)
    damaged = {"phantom_0007.nii.gz": lambda whole: whole[:-8],  # no trailer
               "phantom_0008.nii.gz": lambda whole: whole + b"trailing bytes"}
    for name, damage in damaged.items():
        path = copy / "predictions" / name
        path.write_bytes(damage(gz.compress(gz.decompress(path.read_bytes()))))
    out = tmp_path / "o"
    assert run_score(copy, out) == EXIT_PARTIAL  # phantom_0009 has no prediction
    per_case = pd.read_csv(out / "per_case.csv").set_index("Name")
    cases = pd.read_csv(out / "cases.csv").set_index("name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in damaged:
            expected = official_files(copy / "labels" / name, copy / "predictions" / name)
            row = per_case.loc[name]
            assert {c.label: (row[f"{c.name}_DSC"], row[f"{c.name}_NSD"])
                    for c in FLARE23.classes} == expected
            assert cases.loc[name, "status"] == "ok"
            assert "read as nibabel (and the official scorer) reads it" in cases.loc[name, "message"]


def test_nii_beside_nii_gz_is_named_and_the_official_name_is_scored(challenge, tmp_path, capsys):
    copy = tmp_path / "n"
    shutil.copytree(challenge, copy)
    # an empty .nii beside phantom_0007.nii.gz: were it scored, every organ DSC would be 0
    import nibabel as nib

    reference = nib.load(copy / "labels" / "phantom_0007.nii.gz")
    empty = np.zeros(reference.shape, np.uint8)
    nib.save(nib.Nifti1Image(empty, reference.affine), copy / "predictions" / "phantom_0007.nii")
    out = tmp_path / "o"
    run_score(copy, out)
    expected_out = tmp_path / "e"
    run_score(challenge, expected_out)
    got = pd.read_csv(out / "per_case.csv").set_index("Name").loc["phantom_0007.nii.gz"]
    want = pd.read_csv(expected_out / "per_case.csv").set_index("Name").loc["phantom_0007.nii.gz"]
    pd.testing.assert_series_equal(got, want)
    message = pd.read_csv(out / "cases.csv").set_index("case").loc["phantom_0007", "message"]
    assert "holds both phantom_0007.nii.gz and phantom_0007.nii: scored phantom_0007.nii.gz, " \
           "left out phantom_0007.nii" in message
    assert "left out phantom_0007.nii" in capsys.readouterr().err
