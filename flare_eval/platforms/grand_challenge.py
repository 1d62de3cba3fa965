"""grand-challenge.org evaluation method: score a submission's algorithm jobs as ``flare-eval score``.

The platform runs the evaluation container with no arguments after running the submitted
algorithm once per test image.  What the container finds:

- ``/input/predictions.json``: a list of jobs, in no particular order, each with ``pk``,
  ``inputs`` and ``outputs`` (values with ``interface.slug``, ``interface.relative_path`` and,
  for images, ``image.name``, the file name the organizer uploaded), ``exec_duration`` and
  ``invoke_duration`` (Django duration strings ``[D ]HH:MM:SS[.ffffff]``, or null);
- ``/input/<pk>/output/<relative_path>/``: the folder holding the job's output image
  (``.mha``; or ``.tif``, which the platform keeps for 2D slides and flare-eval does not read:
  the case fails with a message saying so);
- ``/opt/ml/input/data/ground_truth/``: the ground truth the organizer uploaded with the method.

Each job's case is the case id of its input image's name (``FLARE23Ts_0001_0000.nii.gz`` ->
``FLARE23Ts_0001``), which names the reference ``<case>.nii.gz`` (or ``.mha``...).  The cases are
then scored by :func:`flare_eval.scoring.score_folders`, the function behind ``flare-eval score``,
so every rule (missing or unreadable prediction = failed case, geometry checks) is the same.

``/output/metrics.json``: ``results``, one object per reference case in case order (``case``,
``input_image``, ``job_pk``, ``status``, ``message``, ``runtime_s`` = the job's
``exec_duration`` in seconds, then the ``per_case.csv`` columns), and ``aggregates``, the
``scores.txt`` values plus ``Runtime_mean_s`` and ``Runtime_max_s`` over the jobs with a duration;
then ``extra_jobs_ignored``, ``preset`` and ``definition_sha256`` (the challenge definition's
content hash).
JSON has no NaN: an undefined value (a bad reference; no duration) is written as ``null``, never
dropped, so every result has the same keys.

References
----------
grand-challenge documentation, "Evaluation"; DIAGNijmegen/rse-grand-challenge-forge's example
evaluation method.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flare_eval.errors import InputError
from flare_eval.io.layout import case_id, is_volume_file
from flare_eval.io.tables import write_finite_json
from flare_eval.scoring.batch import ScoreOptions, score_folders
from flare_eval.scoring.outputs import per_case_table

__all__ = ["Job", "parse_duration", "read_jobs", "evaluate_submission"]

_DURATION = re.compile(r"^(?:(\d+) )?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


def parse_duration(value: Any, *, where: str) -> float | None:
    """Seconds of a Django duration string (``"00:00:08.600000"``, ``"1 02:00:00"``) or number.

    Returns None for null.

    Raises
    ------
    InputError
        Anything else, naming ``where``.

    Examples
    --------
    >>> parse_duration("00:01:08.500000", where="job"), parse_duration("1 00:00:01", where="job")
    (68.5, 86401.0)
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value >= 0:
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise InputError(f"{where}: exec_duration {value!r} is not a duration "
                         "([D ]HH:MM:SS[.ffffff] or seconds)")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400.0 + int(hours) * 3600.0 + int(minutes) * 60.0 + float(seconds)


@dataclass(frozen=True)
class Job:
    """One algorithm job of ``predictions.json``.

    Attributes
    ----------
    pk
        The job's key, the folder ``/input/<pk>``.
    input_image
        Name of its input image.
    case
        Case id of the input image's name.
    output
        The output volume file, or None (``problem`` says why).
    runtime_s
        ``exec_duration`` in seconds, or None.
    problem
        Why there is no usable output ("" when there is one).
    """

    pk: str
    input_image: str
    case: str
    output: Path | None
    runtime_s: float | None
    problem: str = ""


def _image_values(values: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(values, list):
        raise InputError(f"{where}: expected a list, got {type(values).__name__}")
    return [v for v in values if isinstance(v, dict) and isinstance(v.get("image"), dict)]


def _output_file(folder: Path) -> tuple[Path | None, str]:
    """The one volume file of an output image folder, or None and why not."""
    if not folder.is_dir() or folder.is_symlink():
        return None, f"no output folder {folder}"
    # written by the submission: only plain files count, links are never followed
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    volumes = [p for p in files if is_volume_file(p.name)]
    tiffs = [p for p in files if p.name.lower().endswith((".tif", ".tiff"))]
    if not volumes and tiffs:
        # grand-challenge (panimg) keeps 3D volumes as .mha, TIFF for 2D slides; a TIFF holds
        # no z spacing, origin or direction, so the geometry rules could not be held to it
        return None, (f"{folder} holds a TIFF ({ascii(tiffs[0].name)[1:-1][:80]}), which "
                      "flare-eval does not read: write the segmentation as .mha")
    if len(volumes) != 1:
        found = ", ".join(ascii(p.name)[1:-1][:80] for p in files[:5]) or "nothing"
        return None, (f"expected one .mha / .nii.gz / .nii / .nrrd file in {folder}, found "
                      f"{len(volumes)} of {len(files)} files ({found})")
    return volumes[0], ""


def read_jobs(input_dir: Path, *, output_interface: str | None = None) -> list[Job]:
    """The jobs of ``input_dir/predictions.json`` with their output files.

    Parameters
    ----------
    input_dir
        The platform's ``/input``.
    output_interface
        Slug of the output interface holding the segmentation; by default the job's only
        image output.

    Raises
    ------
    InputError
        Unreadable ``predictions.json``, a job without ``pk`` or input image, two jobs of one
        case, or an output interface that is not unique.
    """
    path = input_dir / "predictions.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", hint="the platform writes it; pass --input") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not readable as JSON ({err})") from None
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected a list of jobs, got {type(entries).__name__}")
    jobs: dict[str, Job] = {}
    for number, entry in enumerate(entries):
        where = f"{path}, job {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("pk"), (str, int)):
            raise InputError(f"{where}: expected an object with a pk")
        pk = str(entry["pk"])
        if "/" in pk or pk in ("", ".", ".."):
            raise InputError(f"{where}: pk {pk!r} is not a folder name")
        inputs = _image_values(entry.get("inputs"), f"{where} inputs")
        if len(inputs) != 1 or not isinstance(inputs[0]["image"].get("name"), str):
            raise InputError(f"{where}: expected one input image with a name, got {len(inputs)}")
        name = inputs[0]["image"]["name"]
        outputs = _image_values(entry.get("outputs"), f"{where} outputs")
        if output_interface is not None:
            outputs = [v for v in outputs if v.get("interface", {}).get("slug") == output_interface]
        if len(outputs) != 1:
            wanted = f"output interface {output_interface!r}" if output_interface else "image output"
            raise InputError(f"{where}: expected one {wanted}, got {len(outputs)}",
                             hint="name the segmentation's interface with --output-interface")
        relative = str(outputs[0].get("interface", {}).get("relative_path", ""))
        if not relative or relative.startswith("/") or ".." in Path(relative).parts:
            raise InputError(f"{where}: output relative_path {relative!r} is not a relative path")
        output, problem = _output_file(input_dir / pk / "output" / relative)
        job = Job(pk, name, case_id(name, image=True), output,
                  parse_duration(entry.get("exec_duration"), where=where), problem)
        if job.case in jobs:
            raise InputError(f"{path}: jobs {jobs[job.case].pk} and {pk} both have case {job.case} "
                             f"(input images {jobs[job.case].input_image} and {name})")
        jobs[job.case] = job
    return sorted(jobs.values(), key=lambda j: j.case)


def evaluate_submission(
    input_dir: Path,
    ground_truth_dir: Path,
    output_dir: Path,
    *,
    options: ScoreOptions,
    output_interface: str | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Score every job against the ground truth and write ``output_dir/metrics.json``.

    Returns the metrics as written (non-finite values as None).  A job without a usable output
    is a failed case with the job's problem in its message, as a missing prediction of
    ``flare-eval score``; a job whose case has no reference is listed under
    ``extra_jobs_ignored``.
    """
    jobs = read_jobs(input_dir, output_interface=output_interface)
    with tempfile.TemporaryDirectory(prefix="flare-eval-gc-") as scratch:
        predictions = Path(scratch) / "predictions"
        predictions.mkdir()
        for job in jobs:
            if job.output is not None:
                suffix = ".nii.gz" if job.output.name.endswith(".nii.gz") else job.output.suffix
                (predictions / f"{job.case}{suffix}").symlink_to(job.output.resolve())
        run = score_folders(predictions, ground_truth_dir, Path(scratch) / "scores",
                            options=options, workers=workers)
    by_case = {job.case: job for job in jobs}
    table = per_case_table(run.records, options.preset).drop(columns="Name")
    results = []
    for record, values in zip(run.records, table.to_dict(orient="records")):
        job = by_case.get(record.case)
        message = "; ".join(m for m in ((job.problem if job else "no job for this case"),
                                        record.message) if m)
        results.append({
            "case": record.case,
            "input_image": job.input_image if job else None,
            "job_pk": job.pk if job else None,
            "status": record.status,
            "message": message,
            "runtime_s": job.runtime_s if job else None,
            **{key: float(value) for key, value in values.items()},
        })
    runtimes = [job.runtime_s for job in jobs if job.runtime_s is not None and job.case in
                {r.case for r in run.records}]
    metrics = {
        "results": results,
        "aggregates": {
            **run.summary,
            "Runtime_mean_s": float(np.mean(runtimes)) if runtimes else None,
            "Runtime_max_s": float(np.max(runtimes)) if runtimes else None,
        },
        "extra_jobs_ignored": [job.pk for job in jobs if job.case not in {r.case for r in run.records}],
        "preset": options.preset.name,
        "definition_sha256": options.preset.content_sha256,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_finite_json(output_dir / "metrics.json", metrics)
    return json.loads((output_dir / "metrics.json").read_text())
