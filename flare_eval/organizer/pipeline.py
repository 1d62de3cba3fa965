"""The organizer's whole job: every team tarball run, scored, ranked and reported, resumably.

Layout of the output folder::

    manifest.json             configuration and inputs (a re-run must match it)
    status.json               complete: false until the leaderboard and report are final
    results/<team>/           'flare-eval run' outputs (predictions/, efficiency/, logs/,
                              runs.csv, <team>_Efficiency.csv, runner.json) and, beside them,
                              'flare-eval score' outputs (per_case.csv, cases.csv, scores.txt,
                              metrics_long.csv, lesions*.csv, run.json, .flare-eval-cache/)
    results/ranking/          'flare-eval rank' outputs, only once every team is complete
    figures/, report.html     the report, idem
    failures.csv              every failed load, run and scored case: team, case, stage,
                              status, message

Stages, each calling the function that does it elsewhere: (1) ``docker load`` every team's
tarball, then run every case in a fresh container (:class:`~flare_eval.runner.run.TeamRun`),
one container at a time per slot (:mod:`flare_eval.runner.pool`; without slots one at a time
on the whole host), teams one after another or interleaved, nothing else running, so that
timings are fair; (2) per team,
:func:`~flare_eval.scoring.score_folders` on a local process pool or a dask cluster; (3)
:func:`~flare_eval.ranking.rank_results`; (4) :func:`~flare_eval.report.write_report`.

Crash safety: the runner and the scorer keep one atomic record per finished case and skip it
when run again, so a killed evaluation started again with the same command loses at most the
cases in flight; the manifest refuses a changed configuration or input set; the ranking is
written into a staging folder and moved into place only when every team has run and been
scored, and ``status.json`` says ``complete: true`` only after the report is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_eval.errors import ConfigError, IncompleteRunError, InputError, RunnerError
from flare_eval.io.lock import exclusive
from flare_eval.organizer.manifest import (
    Submission,
    claim_manifest,
    find_submissions,
    read_status,
    write_status,
)
from flare_eval.presets import FLARE23, Preset
from flare_eval.report.results import RANKING_FOLDER
from flare_eval.runner.docker_backend import DockerOptions
from flare_eval.runner.intake import OutputLimits
from flare_eval.runner.run import resolve_slots
from flare_eval.runner.slots import Slot
from flare_eval.typing import StrPath

if TYPE_CHECKING:
    import pandas as pd

    from flare_eval.scoring import ScoreOptions

__all__ = ["FAILURE_COLUMNS", "Evaluation", "ProgressCallback", "evaluate"]

#: Columns of ``failures.csv`` (those of the report's failure table).
FAILURE_COLUMNS: tuple[str, ...] = ("team", "case", "stage", "status", "message")
#: ``progress(stage, done, total, text)``; stages ``calibrate``, ``run``, ``score``, ``rank``,
#: ``report``.
ProgressCallback = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` produced (everything is also on disk under ``out_dir``).

    Attributes
    ----------
    out_dir
        The output folder.
    leaderboard
        ``results/ranking/leaderboard.csv``.
    failures
        ``failures.csv``: one row per failed load, run or scored case.
    report
        ``report.html``.
    """

    out_dir: Path
    leaderboard: pd.DataFrame
    failures: pd.DataFrame
    report: Path


def _test_cases(images_dir: Path, labels_dir: Path) -> list[str]:
    """Case ids of the hidden test set; every image must have its label and vice versa."""
    from flare_eval.runner import find_cases
    from flare_eval.io.layout import case_id

    cases = [case for case, _ in find_cases(images_dir)]
    if not Path(labels_dir).is_dir():
        raise InputError(f"--labels {labels_dir}: expected a folder, found none")
    labels = {case_id(p) for p in Path(labels_dir).iterdir() if p.name.endswith(".nii.gz")}
    unlabelled, unused = sorted(set(cases) - labels), sorted(labels - set(cases))
    if unlabelled or unused:
        raise InputError(
            f"--images {images_dir} and --labels {labels_dir} hold different cases (images "
            f"without a label: {unlabelled or 'none'}; labels without an image: {unused or 'none'})",
            hint="images are <id>_0000.nii.gz, labels <id>.nii.gz",
        )
    return cases


def _runs_finished(team_dir: Path, cases: list[str]) -> bool:
    """Whether the runner recorded every case with a final status (``error`` is retried)."""
    import pandas as pd

    path = team_dir / "runs.csv"
    if not path.is_file():
        return False
    runs = pd.read_csv(path, usecols=["case", "status"], dtype=str)
    return set(runs["case"]) == set(cases) and not (runs["status"] == "error").any()


def _load_team(client: Any, submission: Submission, team_dir: Path, cases: list[str],
               advance: Callable[[int, str], None]) -> tuple[dict[str, Any], str | None]:
    """Stage 1a: load one team's image; its ``status.json`` entry and the image ID to run
    (``None``: nothing to run)."""
    from flare_eval.runner import load_image

    if _runs_finished(team_dir, cases):  # spare re-loading a multi-GB tarball on a resume
        advance(len(cases), f"{submission.team}: already ran")
        return {"run": "done"}, None
    try:
        reference = load_image(client, str(submission.path))
    except RunnerError as err:
        # The team's fault (not an image, several images): it has no prediction, every case
        # is scored as missing, and the load is tried again only while the run is unfinished.
        (team_dir / "predictions").mkdir(parents=True, exist_ok=True)
        advance(len(cases), f"{submission.team}: not loadable")
        return {"run": "load_failed", "load_error": err.message}, None
    # Runs go by image ID: two tarballs saved under one tag must not replace each other.
    image_id = client.images.get(reference).id
    return {"image": reference, "image_id": image_id}, image_id


def _run_teams(client: Any, submissions: list[Submission], images_dir: Path, results: Path,
               cases: list[str], *, options: DockerOptions, slots: list[Slot],
               interleave: bool, timeout_s: float | None, gpu_tolerance_mib: float,
               limits: OutputLimits, advance: Callable[[int, str], None]
               ) -> dict[str, dict[str, Any]]:
    """Stage 1: every image loaded first (nothing runs meanwhile), then every team's cases
    in one queue over the slots; returns each team's entry of ``status.json``."""
    from flare_eval.runner import DockerBackend, OFFICIAL_PERIOD_S
    from flare_eval.runner.pool import run_on_slots, schedule
    from flare_eval.runner.run import TeamRun

    entries: dict[str, dict[str, Any]] = {}
    runs: list[TeamRun] = []
    with contextlib.ExitStack() as held:  # every running team's folder lock
        for submission in submissions:
            entry, image_id = _load_team(client, submission, results / submission.team, cases,
                                         advance)
            entries[submission.team] = entry
            if image_id is not None:
                run = held.enter_context(TeamRun(
                    DockerBackend(client, image_id, options), images_dir, results,
                    team=submission.team, timeout_s=timeout_s, gpu_index=options.gpu_index,
                    slots=slots, gpu_tolerance_mib=gpu_tolerance_mib, period_s=OFFICIAL_PERIOD_S,
                    log_cap_bytes=1 << 20, limits=limits, retry_failed=False))
                advance(len(run.cases) - len(run.todo), f"{run.team}: resumed")
                runs.append(run)
        jobs = schedule([run.jobs(label=lambda case, team=run.team: f"{team}: {case}")
                         for run in runs], interleave=interleave)
        run_on_slots(jobs, slots, period_s=OFFICIAL_PERIOD_S, advance=advance)
        for run in runs:
            errors = sum(r["status"] == "error" for r in run.finish())
            entries[run.team].update(run="incomplete" if errors else "done", engine_errors=errors)
    return entries


def _calibrated(out: Path, calibration: StrPath, slots: list[Slot], *, scheduler: str | None,
                allow_uneven: bool, report: ProgressCallback) -> None:
    """Check the slots (or the cluster's slot workers) against a calibration (read, or
    ``"run"`` here), kept in ``OUT/calibration.csv``."""
    from flare_eval.io import write_table
    from flare_eval.runner.calibrate import (calibrate, calibrate_cluster, check_calibration,
                                             read_calibration)

    def progress(done: int, total: int, text: str) -> None:
        report("calibrate", done, total, text)

    run = str(calibration) == "run"
    source = (f"--calibration run (table in {out / 'calibration.csv'})" if run
              else f"--calibration {calibration}")
    hosts = None
    if scheduler is not None:
        from distributed import Client

        from flare_eval.runner.slot_workers import slot_workers

        try:
            client = Client(scheduler, timeout="10s")
        except OSError as err:
            raise ConfigError(f"--scheduler {scheduler}: no dask scheduler answers ({err})") from None
        with client:
            workers = slot_workers(client)
            table = (calibrate_cluster(client, progress=progress) if run
                     else read_calibration(Path(calibration)))
        slots, hosts = [w.slot for w in workers], {w.slot.name: w.host for w in workers}
    else:
        table = calibrate(slots, progress=progress) if run else read_calibration(Path(calibration))
    write_table(table, out / "calibration.csv")
    check_calibration(table, slots, hosts=hosts, allow_uneven=allow_uneven, source=source)


def _failures(results: Path, teams: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every failed load, run and scored case, the report's failure table first."""
    import pandas as pd

    from flare_eval.report.results import load_results

    loads = pd.DataFrame(
        [(team, "", "load", "load_failed", entry["load_error"])
         for team, entry in teams.items() if entry.get("run") == "load_failed"],
        columns=list(FAILURE_COLUMNS))
    table = load_results(results).failures
    frames = [f for f in (loads, table) if not f.empty]
    merged = pd.concat(frames, ignore_index=True) if frames else loads
    return merged[list(FAILURE_COLUMNS)].sort_values(["team", "stage", "case"], kind="stable",
                                                     ignore_index=True)


def _finished(out: Path) -> Evaluation:
    import pandas as pd

    return Evaluation(out, pd.read_csv(out / "results" / RANKING_FOLDER / "leaderboard.csv"),
                      pd.read_csv(out / "failures.csv", keep_default_na=False),
                      out / "report.html")


def evaluate(
    submissions_dir: StrPath,
    images_dir: StrPath,
    labels_dir: StrPath,
    out_dir: StrPath,
    *,
    timeout_s: float | None = None,
    gpu_index: int | None = None,
    slots: Sequence[Slot] | None = None,
    interleave_teams: bool = False,
    calibration: StrPath | None = None,
    allow_uneven_slots: bool = False,
    preset: Preset = FLARE23,
    container: DockerOptions = DockerOptions(),
    limits: OutputLimits = OutputLimits(),
    n_bootstrap: int = 1000,
    seed: int = 0,
    workers: int = 1,
    executor: Executor | None = None,
    scheduler: str | None = None,
    client: Any = None,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Run, score, rank and report every submission; resume a killed evaluation.

    Parameters
    ----------
    submissions_dir
        Folder of ``<team>.tar`` / ``<team>.tar.gz`` files made by ``docker save``.
    images_dir
        Hidden test images ``<id>_0000.nii.gz``.
    labels_dir
        Their references ``<id>.nii.gz``.
    out_dir
        Output folder (layout in the module docs).  Running again with the same arguments
        resumes; other arguments or inputs are refused.
    timeout_s
        Seconds before a case's container is killed (status ``timeout``); ``None``: no limit.
    gpu_index
        GPU given to every container and sampled through NVML; ``None``: none.
    slots
        Run cases side by side, one container per slot, pinned to its cores and GPU
        (:func:`~flare_eval.runner.slots.parse_slots`); ``None``: one at a time on the whole
        host. Not together with ``gpu_index``.
    interleave_teams
        Queue one case of each team in turn instead of team after team, so that a slow team
        cannot hold every slot.
    calibration
        A table of ``flare-eval calibrate`` for these slots (or, with ``scheduler``, for the
        cluster's slot workers), or ``"run"`` to calibrate them first; copied to
        ``OUT/calibration.csv`` and shown in the report. Slots that differ by more than
        :data:`~flare_eval.presets.SLOT_TOLERANCE` are refused.  ``None``: no check.
    allow_uneven_slots
        Warn about uneven slots instead of refusing them.
    preset
        Scoring and ranking rules.
    container
        Container settings (memory, shared memory, network...); ``gpu_index`` replaces its GPU.
    limits
        Bounds of each case's outputs (size, file count, output space; ``docs/security.md``).
    n_bootstrap, seed
        Bootstrap samples of the ranking and their seed.
    workers
        Scoring processes of the local pool (ignored with ``executor``).
    executor
        Where the scoring runs instead, e.g. ``distributed.Client(address).get_executor()``.
        Workers must see the same paths.
    scheduler
        Run the containers on this dask cluster's slot workers (``tcp://HOST:PORT``;
        :mod:`flare_eval.runner.fleet`), each case's results written here as it arrives;
        ``None``: here, on ``slots``. Not together with ``slots`` or ``gpu_index`` (each
        worker is one slot of its host).
    client
        A ``docker.DockerClient``; by default the environment's engine.
    progress
        Called as ``progress(stage, done, total, text)``.

    Returns
    -------
    Evaluation

    Raises
    ------
    ConfigError
        ``out_dir`` holds an evaluation of another configuration or input set, or another
        evaluation is writing there.
    InputError
        No tarball, no test case, images and labels that do not pair.
    RunnerError
        No docker engine answers; or, as :class:`~flare_eval.runner.intake.DiskFullError`, the
        disk filled: the evaluation stopped cleanly and the same call resumes.
    IncompleteRunError
        The engine failed on some cases (status ``error``): everything else is done and kept;
        run again to retry them.  No leaderboard is written.
    """
    from flare_eval.scoring import ScoreOptions

    for name, value, lowest in (("--bootstrap", n_bootstrap, 0), ("--workers", workers, 1)):
        if value < lowest:
            raise ConfigError(f"{name} must be {lowest} or more, got {value}")
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout_s}")
    out, images, labels = Path(out_dir), Path(images_dir), Path(labels_dir)
    report = progress or (lambda stage, done, total, text: None)
    submissions = find_submissions(Path(submissions_dir))
    cases = _test_cases(images, labels)
    options = dataclasses.replace(container, gpu_index=gpu_index)
    if scheduler is not None:
        from flare_eval.runner.fleet import refuse_local_options

        refuse_local_options({"--slots": slots, "--gpu": gpu_index})
    run_slots = [] if scheduler is not None else resolve_slots(slots, gpu_index)
    score_options = ScoreOptions(preset=preset)
    configuration = {
        **score_options.fingerprint(),
        "timeout_s": timeout_s,
        "container": dataclasses.asdict(options),
        "slots": [slot.describe() for slot in run_slots],
        "interleave_teams": interleave_teams,
        # a cluster run's timings come from other hosts: never mixed with a local run's
        **({"runner": "cluster"} if scheduler is not None else {}),
        "output_limits": dataclasses.asdict(limits),
        "n_bootstrap": n_bootstrap,
        "seed": seed,
    }
    with exclusive(out, option="--out", command="evaluate"):
        if calibration is not None:  # before anything runs, and before the manifest is claimed
            _calibrated(out, calibration, run_slots, scheduler=scheduler,
                        allow_uneven=allow_uneven_slots, report=report)
        claim_manifest(out, configuration, submissions, images, labels)
        status = read_status(out)
        if status is not None and status.get("complete"):
            return _finished(out)
        results = out / "results"
        teams: dict[str, dict[str, Any]] = {s.team: {"tarball": s.path.name} for s in submissions}

        def save(stage: str) -> None:
            write_status(out, {"complete": False, "stage": stage, "teams": teams})

        save("run")
        if client is None and scheduler is None:
            from flare_eval.runner import connect

            client = connect()
        total = len(submissions) * len(cases)
        done = 0
        counting = threading.Lock()  # slots finish cases on their own threads

        def advance(n: int, text: str) -> None:
            nonlocal done
            with counting:
                done += n
                report("run", done, total, text)

        if scheduler is not None:
            from flare_eval.runner.fleet import run_teams_on_cluster

            entries = run_teams_on_cluster(
                scheduler, [(s.team, s.path) for s in submissions], images, results,
                options=options, interleave=interleave_teams, timeout_s=timeout_s,
                gpu_tolerance_mib=preset.gpu_tolerance_mib, limits=limits, advance=advance,
                skip=lambda team: _runs_finished(results / team, cases))
        else:
            entries = _run_teams(
                client, submissions, images, results, cases, options=options, slots=run_slots,
                interleave=interleave_teams, timeout_s=timeout_s,
                gpu_tolerance_mib=preset.gpu_tolerance_mib, limits=limits, advance=advance)
        for team, entry in entries.items():
            teams[team].update(entry)
        save("run")
        _score_all(teams, results, labels, score_options, workers=workers, executor=executor,
                   n_cases=len(cases), report=report)
        save("score")
        unfinished = sorted(t for t, e in teams.items() if e["run"] == "incomplete")
        if unfinished:
            raise IncompleteRunError(
                f"the container engine failed on some cases of {unfinished} (status 'error' in "
                "their runs.csv); everything else is done and kept, no leaderboard was written",
                hint="run the same command again to retry those cases",
            )
        return _rank_and_report(out, results, teams, preset=preset, n_bootstrap=n_bootstrap,
                                seed=seed, report=report,
                                calibration=None if calibration is None else out / "calibration.csv")


def _score_all(teams: dict[str, dict[str, Any]], results: Path, labels: Path,
               options: ScoreOptions, *, workers: int, executor: Executor | None, n_cases: int,
               report: ProgressCallback) -> None:
    """Stage 2: score every team that has finished running, on one pool for all teams."""
    from flare_eval.scoring import score_folders

    ready = [team for team, entry in teams.items() if entry["run"] != "incomplete"]
    total = len(teams) * n_cases
    own = executor is None and workers > 1
    pool = ProcessPoolExecutor(max_workers=workers) if own else executor
    try:
        for k, team in enumerate(ready):
            before = k * n_cases
            run = score_folders(
                results / team / "predictions", labels, results / team, options=options,
                executor=pool,
                progress=lambda done, n, record: report("score", before + done, total,
                                                        f"{team}: {record.case}"),
            )
            teams[team]["scored_failed"] = len(run.failed)
    finally:
        if own and pool is not None:
            pool.shutdown(cancel_futures=True)


def _rank_and_report(out: Path, results: Path, teams: dict[str, dict[str, Any]], *,
                     preset: Preset, n_bootstrap: int, seed: int, report: ProgressCallback,
                     calibration: Path | None) -> Evaluation:
    """Stages 3 and 4, once every team is complete; ``status.json`` says so last."""
    from flare_eval.io import write_table
    from flare_eval.ranking import rank_results
    from flare_eval.report import write_report

    report("rank", 0, 1, f"{n_bootstrap} bootstrap samples")
    staging = out / ".staging" / RANKING_FOLDER
    shutil.rmtree(staging.parent, ignore_errors=True)
    ranked = rank_results(results, staging, preset=preset, n_bootstrap=n_bootstrap, seed=seed)
    final = results / RANKING_FOLDER
    shutil.rmtree(final, ignore_errors=True)  # a ranking left by a run killed before its report
    os.replace(staging, final)
    staging.parent.rmdir()
    report("rank", 1, 1, "")
    report("report", 0, 1, "figures")
    path = write_report(results, out / "report.html", figures_dir=out / "figures",
                        calibration=calibration)
    failures = _failures(results, teams)
    write_table(failures, out / "failures.csv")
    report("report", 1, 1, "")
    for team, entry in teams.items():
        entry["failed"] = int((failures["team"] == team).sum())
    write_status(out, {"complete": True, "stage": "done", "teams": teams,
                       "leaderboard": str(Path("results") / RANKING_FOLDER / "leaderboard.csv"),
                       "report": "report.html", "ranking_warnings": ranked.warnings})
    return Evaluation(out, ranked.leaderboard, failures, path)
