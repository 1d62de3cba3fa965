"""The per-case loop with a scripted backend: statuses, output layout, tables, resume."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.errors import ConfigError, InputError
from flare_eval.runner import EFFICIENCY_COLUMNS, RUNS_COLUMNS, Execution, run_submission
from tests.conftest import require_module

# The sampler reads CPU and RAM through psutil (the "runner" extra).
require_module("psutil")


class ScriptedBackend:
    """Acts out the case id's behaviour (as the test predict.sh) without running anything."""

    memory = "1g"  # the limit runs.csv records

    def __init__(self, submission: Path, error_cases: tuple[str, ...] = ()) -> None:
        self.submission = submission
        self.error_cases = set(error_cases)
        self.ran: list[str] = []

    def describe(self):
        return {"backend": "scripted"}

    def run_case(self, inputs_dir, outputs_dir, *, timeout_s, sampler, name, guard=None):
        self.ran.append(name)
        (image,) = list(inputs_dir.iterdir())
        sampler.start()
        code, timed_out, oom, error = 0, False, False, None
        if name in self.error_cases:
            error = "docker: 500 Server Error: cannot start container"
        elif name.startswith("ok"):
            shutil.copy(image, outputs_dir / f"{name}.nii.gz")
        elif name.startswith("crash"):
            code = 3
        elif name.startswith("oomkept"):
            # the OOM killer took a child, the script exited 137 after writing its output
            shutil.copy(image, outputs_dir / f"{name}.nii.gz")
            code, oom = 137, True
        elif name.startswith("hang"):
            timed_out, code = True, None
            shutil.copy(image, outputs_dir / f"{name}.nii.gz")  # partial output, discarded
        elif name.startswith("wrongname"):
            shutil.copy(image, outputs_dir / image.name)
        elif name.startswith("badshape"):
            shutil.copy(self.submission / "bad.nii.gz", outputs_dir / f"{name}.nii.gz")
        elif name.startswith("garbage"):
            (outputs_dir / f"{name}.nii.gz").write_bytes(b"garbage\n")
        samples = sampler.stop()
        return Execution(code, timed_out, oom, 1.25, b"out " * 10, b"err", samples, error)


CASES = ["badshape", "crash", "garbage", "hang", "noout", "ok1", "ok2", "oomkept", "wrongname"]


def test_statuses_layout_and_tables(tmp_path, make_inputs, submission, FakeNVML):
    inputs = make_inputs(CASES)
    backend = ScriptedBackend(submission)
    nvml = FakeNVML(used_mib=lambda t: 5000.0)
    records = run_submission(backend, inputs, tmp_path / "out", team="teamx", gpu_index=0,
                             nvml=nvml, progress=False, log_cap_bytes=12)
    status = {r["case"]: r["status"] for r in records}
    assert status == {
        "badshape": "bad_output", "crash": "crash", "garbage": "bad_output", "hang": "timeout",
        "noout": "no_output", "ok1": "ok", "ok2": "ok", "oomkept": "oom",
        "wrongname": "no_output",
    }
    messages = {r["case"]: r["message"] for r in records}
    assert "found 1 entry (wrongname_0000.nii.gz)" in messages["wrongname"]
    assert "shape (3, 3, 3), the input has (4, 5, 6)" in messages["badshape"]
    assert "not a readable label volume" in messages["garbage"]
    assert "exited with 3" in messages["crash"]
    assert "valid prediction was kept" in messages["oomkept"]

    team = tmp_path / "out" / "teamx"
    # valid outputs only, bytes untouched (same as the input the scripted run copied)
    assert sorted(p.name for p in (team / "predictions").iterdir()) == [
        "ok1.nii.gz", "ok2.nii.gz", "oomkept.nii.gz"]
    assert (team / "predictions" / "ok1.nii.gz").read_bytes() == (
        inputs / "ok1_0000.nii.gz").read_bytes()
    assert not (team / ".work").exists() and not (team / ".incoming").exists()

    runs = pd.read_csv(team / "runs.csv")
    assert list(runs.columns) == list(RUNS_COLUMNS)
    assert list(runs["case"]) == CASES
    assert (runs["memory"] == "1g").all()
    assert runs["time_s"].tolist() == [1.25] * len(CASES)
    assert (runs["max_gpu_mib"] == 5000).all() and (runs["n_gpu_samples"] >= 1).all()
    # 5000 MiB held one period (0.1 s) per sample: (5000 - 4096) * 0.1 per sample over tolerance
    row = runs.iloc[0]
    assert row["auc_gpu_over_tolerance_mibs"] >= 90.4 * row["n_gpu_samples"] - 1e-6

    eff = pd.read_csv(team / "teamx_Efficiency.csv")
    assert list(eff.columns) == list(EFFICIENCY_COLUMNS)
    assert list(eff["Name"]) == [f"{c}_0000.nii.gz" for c in CASES]
    assert (eff["Time"] == 1.25).all() and (eff["MaxGPU_Mem"] == 5000).all()

    document = json.loads((team / "efficiency" / "ok1_0000.json").read_text())
    for key in ("gpu_memory", "cpu_list", "RAM_list", "time", "t_s"):
        assert key in document
    assert document["time"] == 1.25 and document["gpu_memory"][0] == 5000.0
    # logs capped to the last 12 bytes with a note
    log = (team / "logs" / "ok1.stdout.txt").read_text()
    assert log.endswith("out out out ") and "first 28 bytes dropped" in log


def test_resume_skips_finished_cases_and_retries_runner_errors(tmp_path, make_inputs,
                                                               submission):
    inputs = make_inputs(["ok1", "ok2", "crash", "ok3"])
    out = tmp_path / "out"
    first = ScriptedBackend(submission, error_cases=("ok2",))
    records = run_submission(first, inputs, out, team="t", progress=False)
    assert {r["case"]: r["status"] for r in records}["ok2"] == "error"

    # a run killed after ok1: its record is lost, the others stay
    (out / "t" / "efficiency" / "ok3_0000.json").unlink()
    second = ScriptedBackend(submission)
    records = run_submission(second, inputs, out, team="t", progress=False)
    assert sorted(second.ran) == ["ok2", "ok3"]  # 'error' retried, lost case re-run
    assert all(r["status"] == "ok" for r in records if r["case"] != "crash")
    assert len(pd.read_csv(out / "t" / "runs.csv")) == 4

    third = ScriptedBackend(submission)
    run_submission(third, inputs, out, team="t", progress=False)
    assert third.ran == []
    run_submission(third, inputs, out, team="t", progress=False, retry_failed=True)
    assert third.ran == ["crash"]


def test_a_retried_case_that_now_fails_loses_its_old_prediction(tmp_path, make_inputs,
                                                                submission):
    inputs = make_inputs(["ok1"])
    out = tmp_path / "out"
    run_submission(ScriptedBackend(submission), inputs, out, team="t", progress=False)
    assert (out / "t" / "predictions" / "ok1.nii.gz").is_file()
    (out / "t" / "efficiency" / "ok1_0000.json").unlink()
    run_submission(ScriptedBackend(submission, error_cases=("ok1",)), inputs, out, team="t",
                   progress=False)
    assert not (out / "t" / "predictions" / "ok1.nii.gz").exists()


def test_resume_with_other_settings_is_refused(tmp_path, make_inputs, submission):
    inputs = make_inputs(["ok1"])
    run_submission(ScriptedBackend(submission), inputs, tmp_path, team="t", progress=False)
    with pytest.raises(ConfigError, match="other settings.*gpu_tolerance_mib"):
        run_submission(ScriptedBackend(submission), inputs, tmp_path, team="t",
                       gpu_tolerance_mib=2048, progress=False)
    # a new timeout is allowed (e.g. to get past a hanging case); each case records its own
    run_submission(ScriptedBackend(submission), inputs, tmp_path, team="t", timeout_s=5,
                   progress=False)


def test_bad_arguments(tmp_path, make_inputs, submission):
    with pytest.raises(InputError, match="expected files named <id>_0000.nii.gz"):
        run_submission(ScriptedBackend(submission), tmp_path, tmp_path / "o", team="t")
    with pytest.raises(InputError, match="expected a folder"):
        run_submission(ScriptedBackend(submission), tmp_path / "nope", tmp_path / "o", team="t")
    with pytest.raises(ConfigError, match="plain folder name"):
        run_submission(ScriptedBackend(submission), make_inputs(["ok1"]), tmp_path, team="../x")


class LoudBackend(ScriptedBackend):
    """The scripted run, printing 300 kB to stdout per case (kept whole in its log)."""

    def run_case(self, inputs_dir, outputs_dir, *, timeout_s, sampler, name, guard=None):
        done = super().run_case(inputs_dir, outputs_dir, timeout_s=timeout_s, sampler=sampler,
                                name=name)
        return dataclasses.replace(done, stdout=b"x" * 300_000)


def test_a_full_disk_stops_the_run_once_and_it_resumes(tmp_path, make_inputs, submission):
    import os
    import subprocess

    from flare_eval.runner import DiskFullError
    from tests.conftest import skip_or_fail

    out = tmp_path / "small"
    out.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                                            str(out)]).returncode != 0:
        skip_or_fail("a small tmpfs for the results needs root (mount)")
    try:
        inputs = make_inputs(["ok1", "ok2", "ok3", "ok4", "ok5"])
        first = LoudBackend(submission)
        # 300 kB of log per case on a 1 MiB disk: the fourth case cannot be recorded
        with pytest.raises(DiskFullError) as info:
            run_submission(first, inputs, out, team="t", progress=False)
        message = info.value.message
        assert f"no space left on the device of {out / 't'}" in message
        assert "MiB free, at least" in message and "MiB more needed" in message
        assert "run the same command again" in info.value.hint
        recorded = sorted(p.name for p in (out / "t" / "efficiency").glob("*.json"))
        assert recorded == ["ok1_0000.json", "ok2_0000.json", "ok3_0000.json"]
        for name in recorded:  # whole records only
            json.loads((out / "t" / "efficiency" / name).read_text())
        subprocess.run(["mount", "-o", "remount,size=16m", str(out)], check=True)
        second = LoudBackend(submission)
        records = run_submission(second, inputs, out, team="t", progress=False)
        assert second.ran == ["ok4", "ok5"]  # the finished cases were kept, not run again
        assert [r["status"] for r in records] == ["ok"] * 5
    finally:
        subprocess.run(["umount", "-l", str(out)])


class FixedSamplesBackend:
    """Copies the input as the prediction and reports given samples and wall time."""

    memory = None

    def __init__(self, samples, time_s: float) -> None:
        self.samples, self.time_s = samples, time_s

    def describe(self):
        return {"backend": "fixed"}

    def run_case(self, inputs_dir, outputs_dir, *, timeout_s, sampler, name, guard=None):
        (image,) = list(inputs_dir.iterdir())
        shutil.copy(image, outputs_dir / f"{name}.nii.gz")
        return Execution(0, False, False, self.time_s, b"", b"", self.samples)


def test_efficiency_numbers_end_to_end_into_the_ranking(tmp_path, make_inputs):
    from flare_eval.ranking import rank_results
    from flare_eval.runner.sampler import Samples

    # three GPU samples 0.1 s apart: 5000, 5000, 6007 MiB
    # - official AUC_GPU_Time = round((5000 + 5000 + 6007) * 0.1) = round(1600.7) = 1601
    #   (a truncation would give 1600); MaxGPU_Mem 6007; Time 12.3456 s -> 12.35
    # - ranked area over the preset's 4096 MiB, each sample held until the next and the last
    #   for one 0.1 s period: (904 + 904 + 1911) * 0.1 = 371.9 MiB*s (2048 MiB: 986.3; the
    #   last sample not held: 180.8; a 0.2 s period: 563.0)
    samples = Samples(t_s=(0.0, 0.1, 0.2), gpu_memory_mib=(5000.0, 5000.0, 6007.0),
                      gpu_process_mib=None, cpu_list=((10.0, 10.0, 80.0),), ram_mib=(100.0,))
    run_submission(FixedSamplesBackend(samples, 12.3456), make_inputs(["c1"]), tmp_path,
                   team="t", progress=False)
    efficiency = pd.read_csv(tmp_path / "t" / "t_Efficiency.csv").iloc[0]
    assert efficiency["AUC_GPU_Time"] == 1601 and efficiency["MaxGPU_Mem"] == 6007
    assert efficiency["Time"] == 12.35
    runs = pd.read_csv(tmp_path / "t" / "runs.csv").iloc[0]
    assert runs["auc_gpu_over_tolerance_mibs"] == pytest.approx(371.9)
    assert runs["auc_gpu_mibs"] == 1601 and runs["time_s"] == 12.3456
    # the ranking takes the over-tolerance area and the raw time, as runs.csv has them
    names = ["Name"] + [f"{c}_{m}" for m in ("DSC", "NSD") for c in
                        ("Liver", "RK", "Spleen", "Pancreas", "Aorta", "IVC", "RAG", "LAG",
                         "Gallbladder", "Esophagus", "Stomach", "Duodenum", "LK", "Lesion")]
    pd.DataFrame([["c1.nii.gz"] + [1.0] * 28], columns=names).to_csv(
        tmp_path / "t" / "per_case.csv", index=False)
    out = rank_results(tmp_path, tmp_path / "ranking", n_bootstrap=0).out_dir
    table = pd.read_csv(out / "ranking_table.csv").set_index("metric")["value"]
    assert table["gpu_auc"] == pytest.approx(371.9) and table["runtime"] == 12.3456

class FormatsBackend(ScriptedBackend):
    """Outputs in another format (SimpleITK's .mha of the input), in two formats at once, and
    a .mha whose header points its voxels at another file."""

    def run_case(self, inputs_dir, outputs_dir, *, timeout_s, sampler, name, guard=None):
        sitk = require_module("SimpleITK")
        (image,) = list(inputs_dir.iterdir())
        sampler.start()
        if name.startswith(("mha", "both")):
            sitk.WriteImage(sitk.ReadImage(str(image)), str(outputs_dir / f"{name}.mha"), True)
        if name.startswith("both"):
            shutil.copy(image, outputs_dir / f"{name}.nii.gz")
        if name.startswith("detached"):
            (outputs_dir / f"{name}.mha").write_text(
                "ObjectType = Image\nNDims = 3\nDimSize = 4 5 6\nElementType = MET_UCHAR\n"
                f"ElementDataFile = {image}\n")
        samples = sampler.stop()
        return Execution(0, False, False, 1.0, b"", b"", samples, None)


def test_outputs_in_other_formats_with_the_same_intake_rules(tmp_path, make_inputs, submission):
    inputs = make_inputs(["mha1", "both1", "detached1"])
    records = run_submission(FormatsBackend(submission), inputs, tmp_path / "out", team="t",
                             progress=False)
    by_case = {r["case"]: r for r in records}
    assert {c: r["status"] for c, r in by_case.items()} == {
        "mha1": "ok", "both1": "bad_output", "detached1": "bad_output"}
    assert "holds 2 outputs of one case (both1.nii.gz, both1.mha); none was read" in by_case["both1"]["message"]
    assert "names a separate data file" in by_case["detached1"]["message"]
    team = tmp_path / "out" / "t"
    assert sorted(p.name for p in (team / "predictions").iterdir()) == ["mha1.mha"]
    # run again (its record lost) and now without output: the .mha is no prediction any more
    (team / "efficiency" / "mha1_0000.json").unlink()
    records = run_submission(ScriptedBackend(submission), inputs, tmp_path / "out", team="t",
                             progress=False)
    assert {r["case"]: r["status"] for r in records}["mha1"] == "no_output"
    assert "expected mha1.nii.gz (or mha1.nii, mha1.mha, mha1.nrrd)" in next(
        r["message"] for r in records if r["case"] == "mha1")
    assert not (team / "predictions" / "mha1.mha").exists()
