"""Challenge definitions used end to end: FLARE22's rules by hand, a user's 3-label challenge."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.definition import load_definition
from flare_eval.errors import EXIT_OK
from flare_eval.presets import FLARE23
from tests.test_definition import TOY


def save(path, data, spacing=(1.0, 1.0, 1.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


def test_flare22_computes_nsd_whatever_the_dsc(tmp_path):
    """A liver one slice thick, predicted one slice higher: no overlap, so DSC = 0; every
    surface element lies within 1 mm x sqrt(3) < 5 mm (the liver tolerance) of the other
    surface, so NSD = 1 by FLARE22's scorer, which computes it whatever the DSC, and 0 by
    FLARE23's (DSC < 0.1). Every other organ is absent from both: 1 and 1."""
    reference = np.zeros((12, 12, 12), np.uint8)
    reference[2:10, 2:10, 5] = 1
    prediction = np.zeros_like(reference)
    prediction[2:10, 2:10, 6] = 1
    save(tmp_path / "gt" / "c.nii.gz", reference)
    save(tmp_path / "pred" / "c.nii.gz", prediction)
    for preset in ("flare22", "flare23"):
        assert main(["score", "--preset", preset, "--pred", str(tmp_path / "pred"), "--gt",
                     str(tmp_path / "gt"), "--out", str(tmp_path / preset)]) == EXIT_OK
    flare22 = pd.read_csv(tmp_path / "flare22" / "per_case.csv").iloc[0]
    flare23 = pd.read_csv(tmp_path / "flare23" / "per_case.csv").iloc[0]
    assert (flare22["Liver_DSC"], flare22["Liver_NSD"]) == (0.0, 1.0)
    assert (flare23["Liver_DSC"], flare23["Liver_NSD"]) == (0.0, 0.0)
    # 13 organs, no lesion column
    assert len(flare22) == 1 + 2 * 13 and "Lesion_DSC" not in flare22
    summary22 = json.loads((tmp_path / "flare22" / "run.json").read_text())["summary"]
    summary23 = json.loads((tmp_path / "flare23" / "run.json").read_text())["summary"]
    # Organ_NSD: 13 ones under FLARE22; under FLARE23 (0 + 12 x 1) / 13 = 0.923077 -> 0.9231
    assert (summary22["Organ_DSC"], summary22["Organ_NSD"]) == (round(12 / 13, 4), 1.0)
    assert summary23["Organ_NSD"] == 0.9231


def test_a_users_three_label_challenge_end_to_end(tmp_path):
    definition = tmp_path / "toy3.toml"
    definition.write_text(TOY)
    toy = load_definition(definition)
    # kidney 8x8x4 = 256 voxels, vessel 2x2x10, tumor 2x2x2; team "shifted" moves the kidney
    # one voxel along x: overlap 7x8x4 = 224, DSC = 2 x 224 / 512 = 0.875
    reference = np.zeros((20, 20, 10), np.uint8)
    reference[2:10, 2:10, 2:6] = 1
    reference[12:14, 12:14, :] = 2
    reference[15:17, 4:6, 3:5] = 3
    shifted = reference.copy()
    shifted[2:10, 2:10, 2:6] = 0
    shifted[3:11, 2:10, 2:6] = 1
    for case in ("a", "b"):
        save(tmp_path / "labels" / f"{case}.nii.gz", reference, (1.0, 1.0, 2.0))
        save(tmp_path / "good" / f"{case}.nii.gz", reference, (1.0, 1.0, 2.0))
        save(tmp_path / "shifted" / f"{case}.nii.gz", shifted, (1.0, 1.0, 2.0))
    results = tmp_path / "results"
    for team in ("good", "shifted"):
        assert main(["score", "--preset", str(definition), "--pred", str(tmp_path / team),
                     "--gt", str(tmp_path / "labels"), "--out", str(results / team)]) == EXIT_OK
    per_case = pd.read_csv(results / "shifted" / "per_case.csv")
    assert list(per_case.columns) == ["Name", "Kidney_DSC", "Vessel_DSC", "Tumor_DSC",
                                      "Kidney_NSD", "Vessel_NSD", "Tumor_NSD"]
    assert per_case["Kidney_DSC"].tolist() == [0.875, 0.875]
    run = json.loads((results / "shifted" / "run.json").read_text())
    # Organ_DSC: the kidney and the vessel (the tumor is the lesion class): (0.875 + 1) / 2
    assert run["summary"]["Organ_DSC"] == 0.9375
    assert run["options"]["preset"]["content_sha256"] == toy.content_sha256
    assert main(["rank", str(results), "--preset", str(definition), "--out",
                 str(results / "ranking"), "--bootstrap", "10"]) == EXIT_OK
    board = pd.read_csv(results / "ranking" / "leaderboard.csv").set_index("team")
    # per case: organ_dsc ranks good 1, shifted 2; lesion_dsc ties at 1 (min):
    # mean ranks good (1 + 1 + 1 + 1) / 4 = 1, shifted (2 + 1 + 2 + 1) / 4 = 1.5
    assert board.loc["good", "rank"] == 1 and board.loc["shifted", "rank"] == 2
    ranking = json.loads((results / "ranking" / "ranking.json").read_text())
    assert ranking["definition"]["content_sha256"] == toy.content_sha256
    assert [m["name"] for m in ranking["metrics"]] == ["organ_dsc", "lesion_dsc"]
    assert main(["report", str(results), "--out", str(tmp_path / "report.html")]) == EXIT_OK
    page = (tmp_path / "report.html").read_text()
    assert f"preset toy3 (sha256 {toy.content_sha256[:12]})" in page


def test_a_definition_file_reaches_every_verb(tmp_path, capsys):
    """--preset FILE: the platforms' verbs take it as score does."""
    definition = tmp_path / "toy3.toml"
    definition.write_text(TOY)
    assert main(["bundle", "codabench", "--preset", str(definition), "--out", str(tmp_path / "b")]) == EXIT_OK
    assert load_definition(tmp_path / "b" / "scoring_program" / "challenge.toml") == load_definition(definition)
    competition = (tmp_path / "b" / "competition.yaml").read_text()
    assert '"Kidney_DSC"' in competition and '"Liver_DSC"' not in competition
    assert FLARE23.name not in competition
    capsys.readouterr()
