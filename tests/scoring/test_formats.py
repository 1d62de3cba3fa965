"""``flare-eval score`` on ``.mha``, ``.nrrd`` and ``.nii`` files: the scores of the ``.nii.gz`` run.

The files of each format are SimpleITK's conversions of the NIfTI phantoms (ITK's own geometry
conversion), so a reader that flipped an axis or lost the spacing would change NSD and HD95.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.errors import EXIT_INPUT, EXIT_OK
from flare_eval.phantoms import write_phantom_set
from tests.conftest import require_module

sitk = require_module("SimpleITK")


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    """Labels and predictions of 2 phantom cases in every format, one folder per side x format."""
    root = tmp_path_factory.mktemp("formats")
    write_phantom_set(root, cases=2, seed=31, shape=(48, 40, 24), spacing_mm=(4.0, 5.0, 7.5),
                      prediction_quality="fair")
    for side in ("labels", "predictions"):
        for ext in (".mha", ".nrrd", ".nii"):
            folder = root / f"{side}{ext}"
            folder.mkdir()
            for path in (root / side).glob("*.nii.gz"):
                target = folder / path.name.replace(".nii.gz", ext)
                sitk.WriteImage(sitk.ReadImage(str(path)), str(target), useCompression=True)
    return root


def score(pred, gt, out):
    return main(["score", "--pred", str(pred), "--gt", str(gt), "--out", str(out)])


def values(out):
    """per_case.csv without the file names, and scores.txt."""
    return pd.read_csv(out / "per_case.csv").drop(columns="Name"), (out / "scores.txt").read_text()


@pytest.mark.parametrize(("pred_ext", "gt_ext"), [(".mha", ".mha"), (".nrrd", ".nrrd"), (".nii", ".nii"),
                                                  (".mha", ".nii.gz"), (".nii.gz", ".nrrd")])
def test_every_format_scores_as_nifti(challenge, tmp_path, pred_ext, gt_ext):
    assert score(challenge / "predictions", challenge / "labels", tmp_path / "nifti") == EXIT_OK
    folder = {".nii.gz": ""}
    pred = challenge / f"predictions{folder.get(pred_ext, pred_ext)}"
    gt = challenge / f"labels{folder.get(gt_ext, gt_ext)}"
    assert score(pred, gt, tmp_path / "other") == EXIT_OK
    expected_table, expected_txt = values(tmp_path / "nifti")
    table, txt = values(tmp_path / "other")
    pd.testing.assert_frame_equal(table, expected_table)
    assert txt == expected_txt
    # no geometry note: the affines agree across formats
    assert pd.read_csv(tmp_path / "other" / "cases.csv")["message"].isna().all()
    names = pd.read_csv(tmp_path / "other" / "per_case.csv")["Name"]
    assert names.str.endswith(gt_ext).all()


def test_geometry_mismatch_across_formats_is_detected(challenge, tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(challenge / "predictions.mha", pred)
    # case 31: a grid one slice short; case 32: the same voxels with a mirrored x axis
    image = sitk.ReadImage(str(pred / "phantom_0031.mha"))
    sitk.WriteImage(image[:, :, :-1], str(pred / "phantom_0031.mha"))
    image = sitk.ReadImage(str(pred / "phantom_0032.mha"))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    direction[:, 0] *= -1
    image.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(image, str(pred / "phantom_0032.mha"))
    score(pred, challenge / "labels", tmp_path / "o")
    cases = pd.read_csv(tmp_path / "o" / "cases.csv").set_index("case")
    assert cases.loc["phantom_0031", "status"] == "bad_prediction"
    assert cases.loc["phantom_0031", "message"].startswith(
        f"{pred / 'phantom_0031.mha'}: shape (48, 40, 23) differs from the reference's (48, 40, 24)")
    assert cases.loc["phantom_0032", "status"] == "ok"
    assert "phantom_0032.mha: affine differs from the reference's" in cases.loc["phantom_0032", "message"]


def test_two_files_of_one_case_are_named_or_refused(challenge, tmp_path, capsys):
    # beside <id>.nii.gz (the name the official scorer opens) another file is left out, named
    pred = tmp_path / "pred"
    shutil.copytree(challenge / "predictions", pred)
    shutil.copy(challenge / "predictions.nrrd" / "phantom_0031.nrrd", pred)
    score(pred, challenge / "labels", tmp_path / "o")
    err = " ".join(capsys.readouterr().err.split())  # rich wraps the console's lines
    assert ("phantom_0031.nii.gz and phantom_0031.nrrd: scored phantom_0031.nii.gz, left out "
            "phantom_0031.nrrd" in err)
    # two files and no .nii.gz: nothing to prefer, refused rather than one picked
    (pred / "phantom_0031.nii.gz").unlink()
    shutil.copy(challenge / "predictions.mha" / "phantom_0031.mha", pred)
    assert score(pred, challenge / "labels", tmp_path / "o2") == EXIT_INPUT
    assert ("holds two files of case phantom_0031: phantom_0031.mha and phantom_0031.nrrd"
            in capsys.readouterr().err)
