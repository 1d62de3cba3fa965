"""The per-case loop shared by every backend: stage, run, check, record, resume.

Layout written under ``OUT/<team>/``::

    predictions/<id>.nii.gz         the submission's valid outputs, bytes untouched (.nii, .mha
                                    or .nrrd where the submission wrote that format)
    efficiency/<id>_0000.json       official keys (gpu_memory, cpu_list, RAM_list, time) + extras
    logs/<id>.stdout.txt, .stderr.txt   the run's streams, capped (the tail is kept)
    <team>_Efficiency.csv           official columns, a row for every case that ran
    runs.csv                        one row per case: status, exit code, timings, GPU areas,
                                    where it ran (host, slot, cpuset, GPU name/UUID/driver)
                                    and its memory limit (the slot's share by default)
    runner.json                     backend settings, sampler, versions (a resumed run must match;
                                    the timeout may change, each case's JSON records its own)

Each case's JSON is its record: it is written atomically (temporary file, then ``os.replace``)
after its prediction is in place, so a killed run loses at most the case in flight, and a
re-run skips every case that has one (except status ``error``, a failure of the runner or the
engine, which is always retried; ``retry_failed`` retries every status but ``ok``).

Statuses: ``ok``; ``timeout`` (killed after the timeout, outputs discarded); ``oom`` (non-zero
exit after the OOM killer struck); ``crash`` (other non-zero exit; a valid prediction is still
kept, as the official harness checked no exit code); ``no_output`` (no ``<id>.nii.gz``, nor
``<id>.nii``, ``<id>.mha``, ``<id>.nrrd``, e.g. a wrongly named file); ``bad_output`` (two of
those, not a regular file of bounded size, too many files, not a
readable label volume, or a shape other than the input's); ``error``. Outputs are copied out of
the container's folder before they are read (:mod:`flare_eval.runner.intake`); each case runs in
a neutral staging folder outside ``OUT``. A full disk raises
:class:`~flare_eval.runner.intake.DiskFullError` and the same call resumes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import shutil
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from flare_eval.errors import ConfigError, InputError
from flare_eval.io import atomic_write_text, write_table
from flare_eval.io.layout import LABEL_EXTENSIONS, case_id
from flare_eval.io.lock import exclusive
from flare_eval.presets import FLARE23
from flare_eval.runner.efficiency import (
    EFFICIENCY_COLUMNS,
    OFFICIAL_PERIOD_S,
    efficiency_row,
    max_memory,
    official_auc,
    tolerance_auc,
    trapezoid_auc,
)
from flare_eval.runner.execution import Backend, Execution
from flare_eval.runner.intake import (
    OutputLimits,
    SpaceGuard,
    case_folder,
    disk_full,
    holding,
    release_case,
    remove_stale_cases,
    stage_case,
    take_output,
)
from flare_eval.runner.pool import Job, run_on_slots
from flare_eval.runner.sampler import ResourceSampler
from flare_eval.runner.slots import Slot, default_slot

__all__ = ["RUN_STATUSES", "RUNS_COLUMNS", "INPUT_SUFFIX", "TeamRun", "case_progress",
           "find_cases", "check_prediction", "recorded_rows", "resolve_slots", "run_submission",
           "write_tables"]

RUN_STATUSES: tuple[str, ...] = ("ok", "timeout", "crash", "oom", "no_output", "bad_output", "error")
RUNS_COLUMNS: tuple[str, ...] = (
    "case", "name", "status", "exit_code", "oom_killed", "time_s", "max_gpu_mib",
    "auc_gpu_mibs", "auc_gpu_trapz_mibs", "auc_gpu_over_tolerance_mibs", "n_gpu_samples",
    "started_at", "finished_at", "host", "slot", "cpuset", "gpu_index", "gpu_name", "gpu_uuid",
    "gpu_driver", "memory", "message",
)
#: Input files are ``<id>_0000.nii.gz``; the output must be ``<id>.nii.gz``.
INPUT_SUFFIX = "_0000.nii.gz"


def find_cases(inputs_dir: Path) -> list[tuple[str, Path]]:
    """``(case id, input path)`` of every ``<id>_0000.nii.gz`` in ``inputs_dir``, sorted.

    Raises
    ------
    InputError
        When the folder does not exist or holds no such file.
    """
    inputs_dir = Path(inputs_dir)
    if not inputs_dir.is_dir():
        raise InputError(f"--inputs {inputs_dir}: expected a folder, found none")
    cases = sorted(
        (case_id(p.name, image=True), p) for p in inputs_dir.iterdir()
        if p.is_file() and p.name.endswith(INPUT_SUFFIX)
    )
    if not cases:
        raise InputError(
            f"--inputs {inputs_dir}: expected files named <id>{INPUT_SUFFIX}, found none",
            hint="FLARE inputs are named like FLARETs_0001_0000.nii.gz",
        )
    return cases


def check_prediction(prediction: Path, input_image: Path) -> str | None:
    """Why ``prediction`` cannot be scored against ``input_image``, or ``None`` when it can.

    The file must read as a label map (:func:`flare_eval.io.read_label`: gzip intact, 3D,
    whole numbers) and its array shape must equal the input's (the only geometric check of
    the official scorer). Values outside the label map are left to the scorer to report.

    Raises
    ------
    InputError
        When the input image's header is unreadable (the organizers' file, not the team's).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    from flare_eval.io import ShapeMismatch, read_label

    try:
        expected = tuple(nib.load(input_image).shape[:3])  # the header: no need to inflate the CT
    except (ImageFileError, OSError, EOFError, ValueError) as err:
        raise InputError(f"--inputs {input_image}: unreadable NIfTI header ({err})") from None
    try:
        # label and read warnings are the scorer's to report; the shape is checked on the
        # header, before a gzip bomb could be inflated
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_label(prediction, shape=expected)
    except ShapeMismatch as err:
        return f"{prediction.name} has shape {err.found}, the input has {expected}"
    except InputError as err:
        return f"{prediction.name} is not a readable label volume ({err.message})"
    return None


def _classify(execution: Execution, outputs_dir: Path, case: str, input_image: Path,
              incoming_dir: Path, limits: OutputLimits,
              guard: SpaceGuard) -> tuple[str, str, Path | None]:
    """(status, message, valid prediction or None) of a finished execution.

    The output is first copied out of ``outputs_dir`` into ``incoming`` (see
    :func:`~flare_eval.runner.intake.take_output`), and only that copy is read.
    """
    if execution.error is not None:
        return "error", execution.error, None
    if guard.reason is not None:  # killed by the guard: whatever it left is not read
        return "bad_output", guard.reason, None
    if execution.timed_out:
        return "timeout", "killed after the timeout; outputs discarded", None
    accepted = tuple(f"{case}{extension}" for extension in LABEL_EXTENSIONS)
    taken = take_output(outputs_dir, accepted, incoming_dir, limits)
    problem = taken.message
    output_status = taken.status
    if taken.path is not None:
        problem = _checked(taken.path, input_image, taken.path.name) or ""
        output_status = "bad_output" if problem else "ok"
    valid = taken.path if output_status == "ok" else None
    if execution.exit_code != 0:
        status = "oom" if execution.oom_killed else "crash"
        kept = "a valid prediction was kept" if valid else problem
        return status, f"predict.sh exited with {execution.exit_code}; {kept}", valid
    return output_status, problem, valid


def _checked(copy: Path, input_image: Path, name: str) -> str | None:
    """:func:`check_prediction` of the runner's copy; any failure of the reader is the file's."""
    try:
        problem = check_prediction(copy, input_image)
    except InputError:
        raise  # the organizers' input image
    except MemoryError:
        return f"{name} is not a readable label volume (it needs more memory than there is)"
    except Exception as err:  # defence in depth: no malformed file may stop the run
        return f"{name} is not a readable label volume ({type(err).__name__} in the reader)"
    return problem


def _capped(data: bytes, cap_bytes: int, dropped: int) -> bytes:
    """The last ``cap_bytes`` of a stream whose first ``dropped`` bytes the backend dropped."""
    if len(data) <= cap_bytes and not dropped:
        return data
    # Errors come last, so the tail is what is worth keeping.
    dropped += max(0, len(data) - cap_bytes)
    return f"[flare-eval: first {dropped} bytes dropped]\n".encode() + data[-cap_bytes:]


def _gpu_columns(execution: Execution, tolerance_mib: float, period_s: float) -> dict[str, Any]:
    gpu = execution.samples.gpu_memory_mib
    if not gpu:
        return {"max_gpu_mib": None, "auc_gpu_mibs": None, "auc_gpu_trapz_mibs": None,
                "auc_gpu_over_tolerance_mibs": None, "n_gpu_samples": 0}
    t_s = execution.samples.t_s
    return {
        "max_gpu_mib": max_memory(gpu),
        "auc_gpu_mibs": official_auc(gpu, period_s=period_s),
        "auc_gpu_trapz_mibs": trapezoid_auc(t_s, gpu),
        "auc_gpu_over_tolerance_mibs": tolerance_auc(t_s, gpu, tolerance=tolerance_mib,
                                                     period_s=period_s),
        "n_gpu_samples": len(gpu),
    }


def _load_records(efficiency_dir: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted(efficiency_dir.glob("*_0000.json")):
        with path.open() as stream:
            records[path.name[: -len("_0000.json")]] = json.load(stream)
    return records


def recorded_rows(team_dir: Path) -> list[dict[str, Any]]:
    """The ``runs.csv`` rows of every case recorded in ``team_dir`` (its efficiency JSONs), in
    case order."""
    return [document["record"] for _, document in
            sorted(_load_records(Path(team_dir) / "efficiency").items())]


def write_tables(team_dir: Path, team: str, records: dict[str, dict[str, Any]]) -> None:
    """Write ``runs.csv`` and ``<team>_Efficiency.csv`` of ``team_dir`` from the case records
    (each case's efficiency JSON), in case order; also used by the fleet's organizer."""
    import pandas as pd

    runs = pd.DataFrame([r["record"] for _, r in sorted(records.items())],
                        columns=list(RUNS_COLUMNS))
    efficiency = pd.DataFrame([r["efficiency_row"] for _, r in sorted(records.items())],
                              columns=list(EFFICIENCY_COLUMNS))
    # Integer columns with empty cells would otherwise turn into floats (3072.0).
    for column in ("exit_code", "max_gpu_mib", "auc_gpu_mibs", "n_gpu_samples", "gpu_index"):
        runs[column] = runs[column].astype("Int64")
    for column in ("MaxGPU_Mem", "AUC_GPU_Time", "AUC_RAM_Time"):
        efficiency[column] = efficiency[column].astype("Int64")
    write_table(runs, team_dir / "runs.csv")
    write_table(efficiency, team_dir / f"{team}_Efficiency.csv")


def _check_settings(team_dir: Path, settings: dict[str, Any]) -> None:
    path = team_dir / "runner.json"
    if not path.is_file():
        atomic_write_text(path, json.dumps(settings, indent=2))
        return
    before = json.loads(path.read_text())
    changed = sorted(k for k in settings if k != "versions" and before.get(k) != settings[k])
    if changed:
        raise ConfigError(
            f"{team_dir} holds a run made with other settings ({', '.join(changed)}: "
            f"{[before.get(k) for k in changed]} then, {[settings[k] for k in changed]} now)",
            hint="use a new --out folder, or delete the old one to start over",
        )


def run_submission(
    backend: Backend,
    inputs_dir: Path,
    out_dir: Path,
    *,
    team: str,
    timeout_s: float | None = None,
    gpu_index: int | None = None,
    slots: Sequence[Slot] | None = None,
    per_process_gpu: bool = False,
    gpu_tolerance_mib: float = FLARE23.gpu_tolerance_mib,
    period_s: float = OFFICIAL_PERIOD_S,
    log_cap_bytes: int = 1 << 20,
    limits: OutputLimits = OutputLimits(),
    retry_failed: bool = False,
    progress: bool | Callable[[int, str], None] = True,
    nvml: Any = None,
) -> list[dict[str, Any]]:
    """Run a submission on every case of ``inputs_dir``, one fresh run per case, and record it.

    Parameters
    ----------
    backend
        A :class:`~flare_eval.runner.docker_backend.DockerBackend` or
        :class:`~flare_eval.runner.local_backend.LocalBackend`.
    inputs_dir
        Folder of ``<id>_0000.nii.gz`` images.
    out_dir
        Results root; everything goes to ``out_dir/<team>/`` (layout in the module docs).
    team
        Team name: the sub-folder and the prefix of ``<team>_Efficiency.csv``.
    timeout_s
        Seconds before a case is killed; ``None`` waits forever (the official harness).
    gpu_index
        NVML index of the GPU to sample (the one the container gets); ``None``: none.
    slots
        Run cases side by side, one per slot, each pinned to its slot's cores and GPU
        (:func:`~flare_eval.runner.slots.parse_slots`); ``None``: one case at a time on the
        whole host, as without slots. Not together with ``gpu_index``.
    per_process_gpu
        Also record the GPU memory of the run's own processes (``gpu_process_memory``).
    gpu_tolerance_mib
        Tolerance of ``auc_gpu_over_tolerance_mibs`` (the preset's ``gpu_tolerance_mib``;
        rank with the same preset: the ranking refuses another).
    period_s
        Sampling period (0.1 s officially).
    log_cap_bytes
        Most bytes of stdout and of stderr kept per case (the tail).
    limits
        Bounds of a case's outputs (:class:`~flare_eval.runner.intake.OutputLimits`).
    retry_failed
        Re-run cases recorded with any status but ``ok`` (``error`` is always re-run).
    progress
        Show a progress bar; or a callable ``advance(n_cases, text)`` to call instead (a
        caller's display of a larger job, as ``flare-eval evaluate``: rich allows one at a time).
    nvml
        NVML stand-in for tests (see :class:`~flare_eval.runner.sampler.ResourceSampler`).

    Returns
    -------
    list of dict
        The ``runs.csv`` rows of all cases, in case order.

    Raises
    ------
    InputError
        When ``inputs_dir`` holds no case.
    ConfigError
        When ``out_dir/<team>`` holds a run made with other settings, ``team`` is not a
        plain name, or both ``gpu_index`` and ``slots`` are given.
    DiskFullError
        When the disk of the results or the staging folder fills: the case in flight is not
        recorded, every finished one is kept, and the same call resumes.
    """
    slots = resolve_slots(slots, gpu_index, nvml=nvml)
    with TeamRun(backend, inputs_dir, out_dir, team=team, timeout_s=timeout_s,
                 gpu_index=gpu_index, slots=slots, gpu_tolerance_mib=gpu_tolerance_mib,
                 period_s=period_s, log_cap_bytes=log_cap_bytes, limits=limits,
                 retry_failed=retry_failed) as run:
        with case_progress(progress, len(run.cases)) as advance:
            advance(len(run.cases) - len(run.todo), "resumed")
            run_on_slots(run.jobs(), slots, period_s=period_s, per_process_gpu=per_process_gpu,
                         nvml=nvml, advance=advance)
        return run.finish()


def resolve_slots(slots: Sequence[Slot] | None, gpu_index: int | None, *,
                  nvml: Any = None) -> list[Slot]:
    """``slots`` as given, or the default slot of ``gpu_index``; refuses both at once."""
    if slots is None:
        return [default_slot(gpu_index, nvml=nvml)]
    if gpu_index is not None:
        raise ConfigError(f"--gpu {gpu_index} and --slots: give each slot's GPU in --slots",
                          hint="e.g. --slots 0:0-3 for GPU 0 with cores 0-3")
    if not slots:
        raise ConfigError("--slots: expected at least one slot, got none")
    return list(slots)


class TeamRun:
    """One team's run in progress: its folders, its records and the cases still to run.

    Entering it (``with TeamRun(...) as run``) takes the team folder's lock for the run, creates
    ``out_dir/<team>/``, checks the settings of an earlier run there (``runner.json``) and reads
    its records; :meth:`jobs` are the cases still to run (for
    :func:`~flare_eval.runner.pool.run_on_slots`, possibly beside other teams' jobs), and
    :meth:`finish` writes the tables and returns the rows. Parameters as
    :func:`run_submission`'s (``slots`` resolved).
    """

    def __init__(self, backend: Backend, inputs_dir: Path, out_dir: Path, *, team: str,
                 timeout_s: float | None, gpu_index: int | None, slots: Sequence[Slot],
                 gpu_tolerance_mib: float, period_s: float, log_cap_bytes: int,
                 limits: OutputLimits, retry_failed: bool) -> None:
        if not team or Path(team).name != team or team.startswith("."):
            raise ConfigError(f"--team {team!r}: expected a plain folder name")
        self.backend, self.team = backend, team
        self.cases = find_cases(inputs_dir)
        self.team_dir = Path(out_dir) / team
        self.dirs = {name: self.team_dir / name
                     for name in ("predictions", "efficiency", "logs", ".incoming")}
        self._check = {"gpu_index": gpu_index, "slots": slots, "period_s": period_s,
                       "gpu_tolerance_mib": gpu_tolerance_mib, "retry_failed": retry_failed}
        self._settings = {"timeout_s": timeout_s, "tolerance_mib": gpu_tolerance_mib,
                          "period_s": period_s, "log_cap_bytes": log_cap_bytes, "limits": limits}
        self._lock = threading.Lock()
        self._pinned: dict[str, Backend] = {}
        self._stack = contextlib.ExitStack()
        self.records: dict[str, dict[str, Any]] = {}
        self.todo: list[tuple[str, Path]] = []

    def __enter__(self) -> TeamRun:
        """Take the team folder's lock (one writer), check its settings, read its records."""
        with self._stack as stack:
            stack.enter_context(exclusive(self.team_dir, option="team folder", command="run"))
            self._open()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self) -> None:
        import flare_eval

        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        check = self._check
        _check_settings(self.team_dir, {
            **self.backend.describe(), "sampled_gpu_index": check["gpu_index"],
            "period_s": check["period_s"], "gpu_tolerance_mib": check["gpu_tolerance_mib"],
            # each slot's memory limit: its share of the host unless --memory is given
            "slots": [{**slot.describe(), "memory": self._backend(slot).memory}
                      for slot in check["slots"]],
            "versions": {"flare_eval": flare_eval.__version__},
        })
        self.records = _load_records(self.dirs["efficiency"])

        def finished(case: str) -> bool:
            status = self.records.get(case, {}).get("record", {}).get("status")
            return status is not None and status != "error" and (
                status == "ok" or not check["retry_failed"])

        self.todo = [(case, path) for case, path in self.cases if not finished(case)]
        for case, _ in self.cases:
            # A run killed between a case's record and its clean-up left its staging folder
            # (and output tmpfs) behind; finished cases are not staged again, so release them here.
            work = case_folder(self.team_dir, case)
            if work.exists():
                release_case(work)
        remove_stale_cases()  # of killed runs of other results folders, never resumed

    def jobs(self, label: Callable[[str], str] = str) -> list[Job]:
        """A :class:`~flare_eval.runner.pool.Job` per case still to run; ``label(case)`` is
        what the progress display shows of it."""
        return [Job(self.team, label(case),
                    lambda slot, sampler, case=case, image=image: self.run_case(
                        case, image, slot, sampler))
                for case, image in self.todo]

    def _backend(self, slot: Slot) -> Backend:
        if not slot.pinned:
            return self.backend
        with self._lock:
            if slot.name not in self._pinned:
                self._pinned[slot.name] = self.backend.on_slot(slot)
            return self._pinned[slot.name]

    def run_case(self, case: str, input_image: Path, slot: Slot, sampler: ResourceSampler) -> str:
        """Run and record one case on ``slot``; returns its status."""
        work = case_folder(self.team_dir, case)
        try:
            with holding(work):
                document = _run_one(self._backend(slot), sampler, case, input_image, self.dirs,
                                    work, slot=slot, **self._settings)
            with self._lock:
                self.records[case] = document
                write_tables(self.team_dir, self.team, self.records)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            # The case has no record yet, so a resumed run runs it again.
            limits = self._settings["limits"]
            raise disk_full(self.team_dir,
                            self._settings["log_cap_bytes"] * 2 + limits.max_bytes) from None
        return str(document["record"]["status"])

    def finish(self) -> list[dict[str, Any]]:
        """Write the tables, drop the intake folder; the ``runs.csv`` rows in case order."""
        write_tables(self.team_dir, self.team, self.records)
        shutil.rmtree(self.dirs[".incoming"], ignore_errors=True)
        return [self.records[case]["record"] for case, _ in self.cases if case in self.records]


def _run_one(backend: Backend, sampler: ResourceSampler, case: str, input_image: Path,
             dirs: dict[str, Path], work: Path, *, slot: Slot, timeout_s: float | None,
             tolerance_mib: float, period_s: float, log_cap_bytes: int,
             limits: OutputLimits) -> dict[str, Any]:
    inputs, outputs = stage_case(input_image, work, limits)
    guard = SpaceGuard(outputs, limits)
    started = dt.datetime.now(dt.timezone.utc)
    execution = backend.run_case(inputs, outputs, timeout_s=timeout_s, sampler=sampler,
                                 name=case, guard=guard)
    finished = dt.datetime.now(dt.timezone.utc)
    status, message, valid = _classify(execution, outputs, case, input_image,
                                       dirs[".incoming"], limits, guard)
    for extension in LABEL_EXTENSIONS:  # stale ones of an earlier, retried run (any format)
        (dirs["predictions"] / f"{case}{extension}").unlink(missing_ok=True)
    if valid is not None:
        os.replace(valid, dirs["predictions"] / valid.name)
    for stream, data, dropped in (("stdout", execution.stdout, execution.dropped[0]),
                                  ("stderr", execution.stderr, execution.dropped[1])):
        text = _capped(data, log_cap_bytes, dropped).decode("utf-8", errors="replace")
        atomic_write_text(dirs["logs"] / f"{case}.{stream}.txt", text)
    samples = execution.samples
    name = f"{case}{INPUT_SUFFIX}"
    record = {
        "case": case, "name": name, "status": status, "exit_code": execution.exit_code,
        "oom_killed": execution.oom_killed, "time_s": round(execution.time_s, 4),
        **_gpu_columns(execution, tolerance_mib, period_s),
        "started_at": started.isoformat(timespec="milliseconds"),
        "finished_at": finished.isoformat(timespec="milliseconds"),
        **_where(slot),
        "memory": backend.memory,
        "message": message,
    }
    document = {
        "gpu_memory": list(samples.gpu_memory_mib or []),
        "cpu_list": [list(c) for c in samples.cpu_list],
        "RAM_list": list(samples.ram_mib),
        "time": execution.time_s,
        "t_s": list(samples.t_s),
        "gpu_process_memory": None if samples.gpu_process_mib is None else list(samples.gpu_process_mib),
        "gpu_sampled": samples.gpu_memory_mib is not None,
        "late_samples": samples.late_samples,
        "timeout_s": timeout_s,
        "efficiency_row": efficiency_row(name, execution.time_s, samples.gpu_memory_mib,
                                         samples.cpu_list, samples.ram_mib, period_s=period_s),
        "record": record,
    }
    atomic_write_text(dirs["efficiency"] / f"{case}_0000.json", json.dumps(document))
    return document


def _where(slot: Slot) -> dict[str, Any]:
    """The ``runs.csv`` columns saying where a case ran (fairness is checked, not assumed)."""
    gpu = slot.gpu
    return {"host": socket.gethostname(), "slot": slot.name, "cpuset": slot.cpuset,
            "gpu_index": None if gpu is None else gpu.index,
            "gpu_name": None if gpu is None else gpu.name,
            "gpu_uuid": None if gpu is None else gpu.uuid,
            "gpu_driver": None if gpu is None else gpu.driver}


@contextlib.contextmanager
def case_progress(enabled: bool | Callable[[int, str], None], total: int
                  ) -> Iterator[Callable[[int, str], None]]:
    """A rich progress bar over the cases (or nothing, or the caller's); yields ``advance(n, text)``."""
    if callable(enabled):
        yield enabled
        return
    if not enabled:
        yield lambda n, text: None
        return
    from rich.markup import escape
    from rich.progress import Progress

    with Progress(*Progress.get_default_columns(), "{task.fields[last]}") as bar:
        task = bar.add_task("cases", total=total, last="")
        # Case names and statuses are shown as they are, never read as rich markup.
        yield lambda n, text: bar.update(task, advance=n, last=escape(text))
