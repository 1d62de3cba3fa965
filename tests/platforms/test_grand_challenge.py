"""The grand-challenge evaluation method on a ``predictions.json`` as the platform writes it.

Jobs in random order, each with an input image name, an image output (``.mha``) under
``/input/<pk>/output/images/<slug>/<uuid>.mha`` and a JSON output, and ``exec_duration`` as a
Django duration string.  Its ``metrics.json`` must equal ``flare-eval score`` on the same files.
"""

from __future__ import annotations

import json
import random
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.cli.main import main
from flare_eval.errors import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL
from flare_eval.phantoms import write_phantom_set
from flare_eval.presets import FLARE23, PRESETS
from tests.conftest import require_module

sitk = require_module("SimpleITK")

SLUG = "abdominal-organ-segmentation"
DOCKERFILE = Path(__file__).resolve().parents[2] / "examples" / "grand-challenge" / "Dockerfile"


def interface(slug, relative_path, kind):
    return {"title": slug.replace("-", " ").title(), "description": "", "help_text": "",
            "slug": slug, "kind": kind, "pk": abs(hash(slug)) % 1000, "default_value": None,
            "super_kind": "Image" if kind == "Image" else "Value", "relative_path": relative_path,
            "overlay_segments": [], "look_up_table": None}


def job(input_dir, image_name, prediction, duration):
    """One job as the platform serialises it, and its output files under ``input_dir/<pk>``."""
    pk = str(uuid.uuid4())
    output_name = f"{uuid.uuid4()}.mha"
    folder = input_dir / pk / "output" / "images" / SLUG
    folder.mkdir(parents=True)
    sitk.WriteImage(sitk.ReadImage(str(prediction)), str(folder / output_name), useCompression=True)
    (input_dir / pk / "output" / "results.json").write_text('{"volume_ml": 1.0}')
    return {
        "pk": pk, "url": f"https://grand-challenge.org/algorithms/x/jobs/{pk}/",
        "api_url": f"https://grand-challenge.org/api/v1/algorithms/jobs/{pk}/",
        "algorithm_image": "team-x:1", "status": "Succeeded",
        "inputs": [{"pk": 11, "interface": interface("ct-image", "images/ct", "Image"),
                    "value": None, "file": None,
                    "image": {"pk": str(uuid.uuid4()), "name": image_name}}],
        "outputs": [
            {"pk": 12, "interface": interface("results-json-file", "results.json", "Anything"),
             "value": {"volume_ml": 1.0}, "file": None, "image": None},
            {"pk": 13, "interface": interface(SLUG, f"images/{SLUG}", "Image"),
             "value": None, "file": None,
             "image": {"pk": str(uuid.uuid4()), "name": output_name}},
        ],
        "hanging_protocol": None, "optional_hanging_protocols": [], "view_content": {},
        "exec_duration": duration, "invoke_duration": None,
    }


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """Three reference cases; jobs for two of them (8.6 s and 62.25 s), shuffled."""
    root = tmp_path_factory.mktemp("gc")
    ids = write_phantom_set(root, cases=3, seed=41, shape=(48, 40, 24), spacing_mm=(4.0, 5.0, 7.5),
                            prediction_quality="fair")
    input_dir = root / "input"
    input_dir.mkdir()
    jobs = [job(input_dir, f"{ids[0]}_0000.nii.gz", root / "predictions" / f"{ids[0]}.nii.gz",
                "00:00:08.600000"),
            job(input_dir, f"{ids[1]}_0000.nii.gz", root / "predictions" / f"{ids[1]}.nii.gz",
                "00:01:02.250000")]
    random.Random(3).shuffle(jobs)
    (input_dir / "predictions.json").write_text(json.dumps(jobs, indent=2))
    return root, ids, jobs


def evaluate(root, out, *extra):
    return main(["grand-challenge", "evaluate", "--input", str(root / "input"),
                 "--ground-truth", str(root / "labels"), "--output", str(out), *extra])


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_metrics_equal_score_on_the_same_files(platform, tmp_path):
    root, ids, jobs = platform
    assert evaluate(root, tmp_path / "output") == EXIT_PARTIAL  # the third case has no job
    metrics = strict_json(tmp_path / "output" / "metrics.json")
    # the same .mha files, named by case, through flare-eval score
    pred = tmp_path / "pred"
    pred.mkdir()
    for entry in jobs:
        case = entry["inputs"][0]["image"]["name"].removesuffix("_0000.nii.gz")
        output = next((root / "input" / entry["pk"] / "output" / "images" / SLUG).iterdir())
        shutil.copy(output, pred / f"{case}.mha")
    assert main(["score", "--pred", str(pred), "--gt", str(root / "labels"),
                 "--out", str(tmp_path / "score")]) == EXIT_PARTIAL
    summary = json.loads((tmp_path / "score" / "run.json").read_text())["summary"]
    aggregates = metrics["aggregates"]
    assert {k: aggregates[k] for k in summary} == summary
    per_case = pd.read_csv(tmp_path / "score" / "per_case.csv")
    assert [r["case"] for r in metrics["results"]] == ids
    for result, (_, row) in zip(metrics["results"], per_case.iterrows()):
        assert {k: result[k] for k in per_case.columns[1:]} == row.drop("Name").to_dict()
    # exec_duration by hand: 8.6 s and 1 min 2.25 s = 62.25 s; the case without a job has none
    by_case = {r["case"]: r for r in metrics["results"]}
    assert [by_case[c]["runtime_s"] for c in ids] == [8.6, 62.25, None]
    assert aggregates["Runtime_mean_s"] == pytest.approx((8.6 + 62.25) / 2)
    assert aggregates["Runtime_max_s"] == 62.25
    assert by_case[ids[2]]["status"] == "missing_prediction"
    assert by_case[ids[2]]["message"].startswith("no job for this case")
    assert by_case[ids[0]]["input_image"] == f"{ids[0]}_0000.nii.gz"
    assert {by_case[ids[0]]["job_pk"], by_case[ids[1]]["job_pk"]} == {j["pk"] for j in jobs}
    assert metrics["preset"] == "flare23" and metrics["definition_sha256"] == FLARE23.content_sha256


def test_undefined_values_are_null_and_bad_outputs_are_failed_cases(platform, tmp_path):
    root, ids, jobs = platform
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    # an unreadable reference: its values are undefined (NaN in per_case.csv)
    (copy / "labels" / f"{ids[2]}.nii.gz").write_bytes(b"\x1f\x8b not gzip")
    # a job whose output folder holds two images: none is picked
    entry = next(j for j in jobs if j["inputs"][0]["image"]["name"].startswith(ids[1]))
    folder = copy / "input" / entry["pk"] / "output" / "images" / SLUG
    shutil.copy(next(folder.iterdir()), folder / "second.mha")
    evaluate(copy, tmp_path / "output")
    text = (tmp_path / "output" / "metrics.json").read_text()
    metrics = strict_json(tmp_path / "output" / "metrics.json")
    assert "NaN" not in text and "Infinity" not in text
    by_case = {r["case"]: r for r in metrics["results"]}
    assert by_case[ids[2]]["status"] == "bad_reference" and by_case[ids[2]]["Liver_DSC"] is None
    assert by_case[ids[1]]["status"] == "missing_prediction"
    assert "expected one .mha / .nii.gz / .nii / .nrrd file" in by_case[ids[1]]["message"]
    assert "found 2 of 2 files" in by_case[ids[1]]["message"]


def test_two_jobs_of_one_case_and_bad_durations_are_refused(platform, tmp_path, capsys):
    root, _, jobs = platform
    copy = tmp_path / "copy"
    shutil.copytree(root / "input", copy / "input")
    (copy / "labels").symlink_to(root / "labels")
    twice = [jobs[0], {**jobs[1], "inputs": jobs[0]["inputs"]}]
    (copy / "input" / "predictions.json").write_text(json.dumps(twice))
    assert evaluate(copy, tmp_path / "o") == EXIT_INPUT
    case = jobs[0]["inputs"][0]["image"]["name"].removesuffix("_0000.nii.gz")
    assert f"both have case {case}" in capsys.readouterr().err
    (copy / "input" / "predictions.json").write_text(json.dumps([{**jobs[0], "exec_duration": "8 s"}]))
    assert evaluate(copy, tmp_path / "o") == EXIT_INPUT
    assert "exec_duration '8 s' is not a duration" in capsys.readouterr().err


def test_the_dockerfile_template_runs_the_method(platform, tmp_path):
    """The template's ENTRYPOINT is this command; the platform paths are its defaults."""
    root, _, _ = platform
    entrypoint = next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT"))
    command = json.loads(entrypoint.removeprefix("ENTRYPOINT"))
    assert command[0] == "flare-eval"
    assert main([*command[1:], "--input", str(root / "input"), "--ground-truth", str(root / "labels"),
                 "--output", str(tmp_path)]) == EXIT_PARTIAL
    assert (tmp_path / "metrics.json").is_file()


def test_a_tiff_output_is_a_failed_case_that_says_why(platform, tmp_path):
    root, ids, jobs = platform
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    entry = next(j for j in jobs if j["inputs"][0]["image"]["name"].startswith(ids[0]))
    folder = copy / "input" / entry["pk"] / "output" / "images" / SLUG
    (mha,) = folder.iterdir()
    sitk.WriteImage(sitk.ReadImage(str(mha)), str(folder / "seg.tif"))
    mha.unlink()
    evaluate(copy, tmp_path / "output")
    result = next(r for r in strict_json(tmp_path / "output" / "metrics.json")["results"]
                  if r["case"] == ids[0])
    assert result["status"] == "missing_prediction"
    assert f"{folder} holds a TIFF (seg.tif), which flare-eval does not read" in result["message"]


def test_a_flare24_task1_method_zeroes_a_case_and_has_no_organ_means(tmp_path):
    """--preset flare24-task1: two of the hand-built cases of tests/test_challenge_flare24.py
    as jobs (``exact_plus_2`` zeroed, 0 / 0; ``shifted`` 0.75 / 1)."""
    from tests.test_challenge_flare24 import T1_EXPECTED, _write_task1

    _write_task1(tmp_path / "cases")
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    jobs = [job(input_dir, f"{case}_0000.nii.gz", tmp_path / "cases" / "pred" / f"{case}.nii.gz",
                "00:00:10") for case in ("exact_plus_2", "shifted")]
    (input_dir / "predictions.json").write_text(json.dumps(jobs))
    labels = tmp_path / "labels"
    labels.mkdir()
    for case in ("exact_plus_2", "shifted"):
        shutil.copy(tmp_path / "cases" / "gt" / f"{case}.nii.gz", labels)
    assert evaluate(tmp_path, tmp_path / "output", "--preset", "flare24-task1") == EXIT_OK
    metrics = strict_json(tmp_path / "output" / "metrics.json")
    got = {r["case"]: (r["Lesion_DSC"], r["Lesion_NSD"]) for r in metrics["results"]}
    assert got == {case: T1_EXPECTED[case] for case in ("exact_plus_2", "shifted")}
    # (0 + 0.75) / 2 = 0.375, (0 + 1) / 2 = 0.5; no organ class, no organ mean
    assert metrics["aggregates"] == {"Lesion_DSC": 0.375, "Lesion_NSD": 0.5,
                                     "Runtime_mean_s": 10.0, "Runtime_max_s": 10.0}
    assert metrics["definition_sha256"] == PRESETS["flare24-task1"].content_sha256
