"""Cases run on many hosts: a dask.distributed cluster of slot workers, results kept here.

Each worker is one slot (:mod:`flare_eval.runner.slots`): it declares the resource ``SLOT=1``
(``dask worker ADDRESS --nthreads 1 --resources SLOT=1``), names its cores and GPU in the
environment variable ``FLARE_EVAL_SLOT`` (one ``--slots`` item, such as ``0:0-7`` or
``cpu:0``; unset: the whole host, unpinned, no GPU) and runs containers on its own docker
engine (its ``DOCKER_HOST``). Every case is one task that needs ``SLOT=1``, so a worker runs
one case at a time.

A worker runs its case with the same code as a local run (:class:`~flare_eval.runner.run.TeamRun`:
staging, intake, checks, records) into a staging folder of its own host, and sends the
case's record, the prediction's bytes (after the runner's intake and checks) and the logs'
tails back; the organizer's process writes them into its ``--out``, the record last and
atomically, as each case arrives. The worker never writes the organizer's folder.

Inputs: each case's task carries its input image's bytes (read as the task is sent, a few
tasks per worker in flight, so the organizer and the scheduler hold that many images, not the
test set); no worker reads a path of the organizer's.

Images: the organizer computes the tarball's image ID (the SHA-256 of the image config it
holds). Before the cases run, it asks one worker of every host whether its engine holds that
ID and, where not, sends the tarball there in chunks of :data:`UPLOAD_CHUNK_BYTES` (one in
memory at a time) into the host's temporary folder, loads it and removes the copy; once per
host (the slot workers of a host share its engine and a lock in its temporary folder). A
worker whose engine still lacks the image (a host that joined later) loads the tarball from
the organizer's path where it sees it (a shared file system), else refuses the case as
``error``; a loaded image with another ID refuses the case as ``error`` too (the copies differ).

Placement: all of a team's cases run on slots of one hardware identity (CPU model, number of
cores, GPU model; :func:`~flare_eval.runner.slot_workers.place_teams`), so that its timings
are comparable: each task may run only on those workers (``workers=``). A team resumed goes
back to the identity its finished cases ran on.

Crash safety: a worker that dies takes its case with it; dask runs the task again on another
worker and only one result comes back per case. The organizer (or the scheduler) killed, the
run started again skips every case whose record arrived, as a local run does; the organizer
writes a case's record after its other files, so a case killed half-written runs again. A
try of a case waits for an earlier try of it still running on its host (a killed organizer's
task, which the worker's thread cannot stop), as both use the case's staging folder there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from flare_eval.errors import ConfigError, RunnerError
from flare_eval.io import atomic_write_text
from flare_eval.io.atomic import atomic_path
from flare_eval.io.layout import LABEL_EXTENSIONS
from flare_eval.runner.docker_backend import DockerOptions
from flare_eval.runner.execution import Backend, Execution
from flare_eval.runner.intake import OutputLimits, SpaceGuard
from flare_eval.runner.sampler import ResourceSampler
from flare_eval.runner.slots import Slot

__all__ = ["SLOT_RESOURCE", "SLOT_ENV", "CaseTask", "CaseResult", "tarball_image_ids",
           "worker_slot", "refuse_local_options", "run_case_task", "run_teams_on_cluster",
           "run_submission_on_cluster"]

#: The dask resource every case needs one of; each slot worker declares one.
SLOT_RESOURCE = "SLOT"
#: Environment variable of a worker naming its slot (one ``--slots`` item).
SLOT_ENV = "FLARE_EVAL_SLOT"
#: Seconds without a result after which the organizer checks that every team with cases in
#: flight still has a slot worker to run them: dask would hold a case whose workers all left
#: forever (a worker that comes back has another address).
STRANDED_CHECK_S = 15.0


def tarball_image_ids(tarball: Path) -> frozenset[str]:
    """The IDs an engine may give the one image of a ``docker save`` tarball.

    The classic image store names an image by the SHA-256 of its config; the containerd
    store by that of its manifest or index. All are digests of the tarball's own bytes.

    Raises
    ------
    RunnerError
        The file is no ``docker save`` tarball of exactly one image.
    """
    try:
        with tarfile.open(tarball, "r:*") as archive:
            manifest = json.load(_member(archive, "manifest.json"))
            if not isinstance(manifest, list) or len(manifest) != 1:
                raise RunnerError(
                    f"{tarball}: expected a docker save tarball of exactly one image, its "
                    f"manifest.json lists {len(manifest) if isinstance(manifest, list) else 0}",
                    hint="save one image per team: docker save team:latest -o team.tar.gz")
            ids = {_digest(_member(archive, manifest[0]["Config"]))}
            names = set(archive.getnames())
            if "index.json" in names:
                ids.add(_digest(_member(archive, "index.json")))
                for entry in json.load(_member(archive, "index.json")).get("manifests", []):
                    ids.add(entry["digest"])
    except (tarfile.TarError, OSError, KeyError, TypeError, ValueError) as err:
        raise RunnerError(
            f"{tarball}: not a docker save tarball ({type(err).__name__}: {err})",
            hint="pass a tarball made by 'docker save IMAGE -o team.tar.gz'") from None
    return frozenset(ids)


def _member(archive: tarfile.TarFile, name: str) -> Any:
    stream = archive.extractfile(name)
    if stream is None:
        raise KeyError(f"{name} is not a file in the tarball")
    return stream


def _digest(stream: Any) -> str:
    return "sha256:" + hashlib.sha256(stream.read()).hexdigest()


def refuse_local_options(given: dict[str, object]) -> None:
    """Refuse the options of a local run given with ``--scheduler``: ``{option: value}``,
    where a value other than ``None`` or ``False`` was given.

    Raises
    ------
    ConfigError
        Naming every such option (on a cluster each worker is one slot of its host).
    """
    named = [option for option, value in given.items() if value is not None and value is not False]
    if named:
        raise ConfigError(f"--scheduler and {', '.join(named)}: on a cluster each worker is one "
                          "slot of its host, running docker", hint="set FLARE_EVAL_SLOT per "
                          "worker (docs/scale-out.md) and calibrate each host there")


def worker_slot(name: str, spec: str | None = None) -> Slot:
    """The slot of this worker: ``spec`` (default ``$FLARE_EVAL_SLOT``), named ``name``.

    Raises
    ------
    ConfigError
        ``spec`` does not name exactly one slot of this host.
    """
    from flare_eval.runner.slots import default_slot, parse_slots

    spec = os.environ.get(SLOT_ENV) if spec is None else spec
    if not spec:
        return dataclasses.replace(default_slot(None), name=name)
    slots = parse_slots(spec)
    if len(slots) != 1:
        raise ConfigError(f"{SLOT_ENV}={spec}: a worker is one slot, this names {len(slots)}",
                          hint="start one worker per slot, e.g. FLARE_EVAL_SLOT=0:0-7")
    return dataclasses.replace(slots[0], name=name)


@dataclass(frozen=True)
class CaseTask:
    """One case of one team, as sent to a worker (plain, picklable data).

    Attributes
    ----------
    run_key
        Names the organizer's run (host and ``--out``): the worker's staging folder of the
        case is derived from it, so a case tried again on one host reuses it.
    team, case
        The team and the case id.
    tarball
        The team's ``docker save`` tarball at the organizer's path: loaded from there by a
        worker whose engine lacks the image and that sees the file (a shared file system);
        else the organizer has shipped it to the worker's host (:func:`_ship_images`).
    image_ids
        What the organizer computed from it (:func:`tarball_image_ids`).
    image_name, image
        The case's input file name and bytes (the worker reads no path of the organizer's).
    options, timeout_s, gpu_tolerance_mib, period_s, log_cap_bytes, limits
        As for :func:`~flare_eval.runner.run.run_submission`.
    """

    run_key: str
    team: str
    case: str
    tarball: str
    image_ids: frozenset[str]
    image_name: str
    image: bytes
    options: DockerOptions
    timeout_s: float | None
    gpu_tolerance_mib: float
    period_s: float
    log_cap_bytes: int
    limits: OutputLimits


@dataclass(frozen=True)
class CaseResult:
    """What comes back of one case: its record and the files the organizer writes.

    Attributes
    ----------
    team, case
        As in the task.
    document
        The case's efficiency JSON (its ``record`` is the ``runs.csv`` row).
    prediction
        ``(file name, bytes)`` of the valid prediction, or ``None``.
    logs
        ``{"stdout": text, "stderr": text}``, the capped tails.
    """

    team: str
    case: str
    document: dict[str, Any]
    prediction: tuple[str, bytes] | None
    logs: dict[str, str]


class _Refused:
    """A backend that runs nothing: the case is recorded as ``error`` with ``message``."""

    memory = None

    def __init__(self, message: str) -> None:
        self.message = message

    def run_case(self, inputs_dir: Path, outputs_dir: Path, *, timeout_s: float | None,
                 sampler: ResourceSampler, name: str, guard: SpaceGuard | None = None
                 ) -> Execution:
        sampler.start()
        return Execution(None, False, False, 0.0, b"", b"", sampler.stop(), error=self.message)

    def describe(self) -> dict[str, Any]:
        return {"backend": "refused"}

    def on_slot(self, slot: Slot) -> _Refused:
        return self


def _host_folder() -> Path:
    folder = Path(tempfile.gettempdir()) / f"flare-eval-fleet-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _image_on_host(client: Any, image_ids: frozenset[str], source: str | None) -> str | None:
    """Load the team's image from the tarball at ``source`` into this host's engine unless
    there; the error, if any (``source`` ``None``: none here to load from)."""
    from flare_eval.runner.docker_backend import load_image

    if any(_has(client, image_id) for image_id in image_ids):
        return None
    # One load per host: the slot workers of a host share its engine.
    with (_host_folder() / f"image-{_image_key(image_ids)}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any(_has(client, image_id) for image_id in image_ids):
            return None
        if source is None:
            return (f"image {' or '.join(sorted(image_ids))} is not on the engine of host "
                    f"{socket.gethostname()} and its tarball is not here: the organizer ships "
                    "it to the hosts in the cluster when the team's cases start; run again")
        try:
            loaded = client.images.get(load_image(client, source)).id
        except RunnerError as err:
            return f"on host {socket.gethostname()}: {err.message}"
    if loaded not in image_ids:
        return (f"on host {socket.gethostname()}, {source} loads as image {loaded}, but "
                f"the organizer's copy is image {' or '.join(sorted(image_ids))}: the "
                "copies differ")
    return None


def _image_key(image_ids: frozenset[str]) -> str:
    return hashlib.sha256("\0".join(sorted(image_ids)).encode()).hexdigest()[:24]


#: Bytes of a tarball sent to a host per task: the organizer holds one chunk at a time.
UPLOAD_CHUNK_BYTES = 64 << 20


def _engine_has(image_ids: frozenset[str]) -> bool:
    """On a worker: whether its engine holds the image."""
    from flare_eval.runner.docker_backend import connect

    client = connect()
    return any(_has(client, image_id) for image_id in image_ids)


def _upload_path(image_ids: frozenset[str]) -> Path:
    return _host_folder() / f"upload-{_image_key(image_ids)}.tar"


def _write_chunk(image_ids: frozenset[str], offset: int, data: bytes) -> None:
    """On a worker: write ``data`` at ``offset`` of the host's copy of the tarball (a chunk
    sent again lands where it did)."""
    fd = os.open(_upload_path(image_ids), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _load_upload(image_ids: frozenset[str], size: int) -> str | None:
    """On a worker: load the host's copy of the tarball (``size`` bytes), then remove it;
    the error, if any (the image ID is checked as for a tarball read by path)."""
    from flare_eval.runner.docker_backend import connect

    path = _upload_path(image_ids)
    try:
        if path.stat().st_size != size:
            return (f"on host {socket.gethostname()}, the tarball arrived with "
                    f"{path.stat().st_size} of its {size} bytes")
        return _image_on_host(connect(), image_ids, str(path))
    finally:
        path.unlink(missing_ok=True)


def _ship_images(client: Any, images: Sequence[tuple[Path, frozenset[str]]]) -> None:
    """Send each tarball to every host of the cluster whose engine lacks its image, in
    chunks (:data:`UPLOAD_CHUNK_BYTES`), and load it there: before any case runs, so that no
    load disturbs a neighbour slot's timing. A host is asked through one of its workers."""
    hosts: dict[str, str] = {}
    for address, info in sorted(client.scheduler_info(n_workers=-1)["workers"].items()):
        hosts.setdefault(str(info.get("host", address)), address)
    for tarball, image_ids in images:
        for address in hosts.values():
            on = {"workers": [address], "allow_other_workers": False, "pure": False}
            # A failed load, or a worker lost meanwhile, shows in the cases' records of that
            # host (status error, the reason), which a rerun runs again.
            with contextlib.suppress(Exception):
                if client.submit(_engine_has, image_ids, **on).result():
                    continue
                size = tarball.stat().st_size
                with tarball.open("rb") as stream:
                    for offset in range(0, size, UPLOAD_CHUNK_BYTES):
                        client.submit(_write_chunk, image_ids, offset,
                                      stream.read(UPLOAD_CHUNK_BYTES), **on).result()
                client.submit(_load_upload, image_ids, size, **on).result()


def _has(client: Any, image_id: str) -> bool:
    import docker.errors

    try:
        return client.images.get(image_id).id == image_id
    except docker.errors.ImageNotFound:
        return False


def run_case_task(task: CaseTask) -> CaseResult:
    """Run one case on this worker's slot and engine (the function each dask task calls).

    The case runs through :class:`~flare_eval.runner.run.TeamRun` into a staging folder of
    this host (left again before returning); a record already there, of an earlier try on
    this host whose result never arrived, is sent instead of running the case again.
    """
    from distributed import get_worker

    from flare_eval.runner.docker_backend import DockerBackend, connect

    slot = worker_slot(str(get_worker().name))
    client = connect()
    refusal = _image_on_host(client, task.image_ids,
                             task.tarball if Path(task.tarball).is_file() else None)
    backend: Backend = (_Refused(refusal) if refusal is not None else
                        DockerBackend(client, _local_id(client, task.image_ids), task.options))
    key = hashlib.sha256(f"{task.run_key}\0{task.team}\0{task.case}".encode()).hexdigest()[:24]
    stage = _host_folder() / key
    with (_host_folder() / f"{key}.lock").open("a") as held:
        # An earlier try of this case on this host may still run (its organizer or scheduler
        # was killed, the worker's thread cannot be stopped): this try waits for it to end.
        fcntl.flock(held, fcntl.LOCK_EX)
        return _run_staged(task, backend, slot, stage)


def _run_staged(task: CaseTask, backend: Backend, slot: Slot, stage: Path) -> CaseResult:
    """:func:`run_case_task` in the case's staging folder ``stage`` of this host, held."""
    from flare_eval.runner.pool import run_on_slots
    from flare_eval.runner.run import TeamRun

    inputs = stage / ".inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / Path(task.image_name).name).write_bytes(task.image)
    try:
        with TeamRun(backend, inputs, stage, team=task.team,
                     timeout_s=task.timeout_s, gpu_index=None, slots=[],
                     gpu_tolerance_mib=task.gpu_tolerance_mib, period_s=task.period_s,
                     log_cap_bytes=task.log_cap_bytes, limits=task.limits,
                     retry_failed=False) as run:
            # the stage's settings leave the slot out (each record names it): a case tried
            # again on another slot of this host reuses the stage
            run.todo = [(case, image) for case, image in run.todo if case == task.case]
            run_on_slots(run.jobs(), [slot], period_s=task.period_s)
            document = run.records[task.case]
            team_dir = run.team_dir
        predictions = [team_dir / "predictions" / f"{task.case}{extension}"
                       for extension in LABEL_EXTENSIONS]
        found = next((p for p in predictions if p.is_file()), None)
        return CaseResult(
            task.team, task.case, document,
            None if found is None else (found.name, found.read_bytes()),
            {stream: (team_dir / "logs" / f"{task.case}.{stream}.txt").read_text("utf-8")
             for stream in ("stdout", "stderr")})
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _local_id(client: Any, image_ids: frozenset[str]) -> str:
    return next(image_id for image_id in sorted(image_ids) if _has(client, image_id))


class _Cluster:
    """The settings a team folder of a cluster run records (``runner.json``); runs nothing
    here (:class:`~flare_eval.runner.run.TeamRun` keeps the organizer's folder)."""

    def __init__(self, image_ids: frozenset[str], options: DockerOptions) -> None:
        # through JSON, so that a resumed run compares like with like (tuples become lists)
        self._settings = json.loads(json.dumps({
            "backend": "docker", "runner": "cluster", "image_ids": sorted(image_ids),
            **dataclasses.asdict(options)}))

    def describe(self) -> dict[str, Any]:
        return dict(self._settings)


def _store(team_dir: Path, result: CaseResult) -> None:
    """Write one arrived case into the organizer's team folder, its record last."""
    for extension in LABEL_EXTENSIONS:  # stale ones of an earlier, retried run (any format)
        (team_dir / "predictions" / f"{result.case}{extension}").unlink(missing_ok=True)
    if result.prediction is not None:
        name, data = result.prediction
        with atomic_path(team_dir / "predictions" / Path(name).name,
                         suffix="".join(Path(name).suffixes)) as tmp:
            tmp.write_bytes(data)
    for stream, text in result.logs.items():
        atomic_write_text(team_dir / "logs" / f"{result.case}.{stream}.txt", text)
    atomic_write_text(team_dir / "efficiency" / f"{result.case}_0000.json",
                      json.dumps(result.document))


def _alike_slots(client: Any, runs: dict[str, Any]) -> dict[str, list[str]]:
    """Per team, the addresses of the slot workers its cases may run on: all of one hardware
    identity (:func:`~flare_eval.runner.slot_workers.place_teams`), the one its finished
    cases ran on when resumed."""
    from flare_eval.runner.slot_workers import place_teams, slot_workers

    if not runs:
        return {}
    ran_on = {}
    for team, run in runs.items():
        todo = {case for case, _ in run.todo}
        ran_on[team] = {str(document["record"]["slot"]) for case, document in run.records.items()
                        if case not in todo}
    placed = place_teams([(team, len(run.todo)) for team, run in runs.items()],
                         slot_workers(client), ran_on=ran_on)
    return {team: [worker.address for worker in workers] for team, workers in placed.items()}


def _check_not_stranded(client: Any, teams: set[str], placed: dict[str, list[str]]) -> None:
    """Refuse to wait for cases none of whose slot workers is in the cluster any more.

    Raises
    ------
    RunnerError
        Every worker a team's cases may run on has left (died, or came back under another
        address), or the scheduler is gone: the cases that arrived are kept; the same
        command, once those workers (or the scheduler) are started again, resumes.
    """
    try:
        alive = set(client.scheduler_info(n_workers=-1)["workers"])
    except OSError as err:  # the scheduler died under the run
        raise RunnerError(f"the dask scheduler does not answer any more ({err}); the cases "
                          "that arrived are kept",
                          hint="start it again and run the same command again to resume") from None
    for team in sorted(teams):
        if not alive & set(placed[team]):
            raise RunnerError(
                f"team {team}: none of the slot workers its cases run on "
                f"({', '.join(sorted(placed[team]))}) is in the cluster any more, and its "
                "cases would wait for them forever; the cases that arrived are kept",
                hint="start those workers again under the same --name (the team's hardware) "
                     "and run the same command again to resume")


def run_teams_on_cluster(
    address: str,
    teams: Sequence[tuple[str, Path]],
    images_dir: Path,
    results: Path,
    *,
    options: DockerOptions,
    interleave: bool,
    timeout_s: float | None,
    gpu_tolerance_mib: float,
    limits: OutputLimits,
    advance: Callable[[int, str], None],
    skip: Callable[[str], bool],
    retry_failed: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run every team's unfinished cases on the cluster at ``address``; ``status.json`` entries.

    Parameters
    ----------
    address
        The dask scheduler (``tcp://HOST:PORT``).
    teams
        ``(team, tarball)`` pairs, in order.
    images_dir
        The test images: each case's is sent with its task (no worker reads this folder).
    results
        The organizer's results folder: ``results/<team>/`` as a local run writes it.
    options, timeout_s, gpu_tolerance_mib, limits
        As for :func:`~flare_eval.runner.run.run_submission`.
    interleave
        Queue one case of each team in turn (:func:`~flare_eval.runner.pool.schedule`).
    advance
        ``advance(n, text)`` as cases arrive.
    skip
        ``skip(team)``: the team already ran every case (its tarball is not read again).
    retry_failed
        Run again the cases recorded with any status but ``ok`` (``error`` always runs again).

    Raises
    ------
    ConfigError
        No scheduler answers at ``address``, the cluster has no slot worker, or a resumed
        team's finished cases ran on slots none of which is there now (a team's cases run on
        slots of one hardware identity: :func:`~flare_eval.runner.slot_workers.place_teams`).
    RunnerError
        A case failed on the cluster (a worker raised, or dask gave up after workers died
        under it): the cases that arrived are kept, the same call resumes.
    """
    from distributed import Client, wait
    from distributed.client import FuturesCancelledError

    from flare_eval.runner import OFFICIAL_PERIOD_S
    from flare_eval.runner.pool import Job, schedule
    from flare_eval.runner.run import TeamRun, find_cases, write_tables

    n_cases = len(find_cases(images_dir))
    entries: dict[str, dict[str, Any]] = {}
    run_key = f"{socket.gethostname()}\0{results.resolve()}"
    with contextlib.ExitStack() as held:
        try:
            client = held.enter_context(Client(address, timeout="10s"))
        except OSError as err:
            raise ConfigError(f"--scheduler {address}: no dask scheduler answers ({err})") from None
        runs: dict[str, TeamRun] = {}
        shipping: list[tuple[Path, frozenset[str]]] = []
        queues: list[list[Job]] = []
        tasks: dict[str, CaseTask] = {}
        for team, tarball in teams:
            if skip(team):  # spare reading a multi-GB tarball on a resume
                advance(n_cases, f"{team}: already ran")
                entries[team] = {"run": "done"}
                continue
            try:
                image_ids = tarball_image_ids(tarball)
            except RunnerError as err:
                (results / team / "predictions").mkdir(parents=True, exist_ok=True)
                advance(n_cases, f"{team}: not loadable")
                entries[team] = {"run": "load_failed", "load_error": err.message}
                continue
            entries[team] = {"image_id": min(image_ids)}
            run = held.enter_context(TeamRun(
                cast(Backend, _Cluster(image_ids, options)), images_dir, results, team=team,
                timeout_s=timeout_s, gpu_index=None, slots=[], gpu_tolerance_mib=gpu_tolerance_mib,
                period_s=OFFICIAL_PERIOD_S, log_cap_bytes=1 << 20, limits=limits,
                retry_failed=retry_failed))
            advance(len(run.cases) - len(run.todo), f"{team}: resumed")
            runs[team] = run
            if run.todo:
                shipping.append((tarball, image_ids))
            for case, image in run.todo:
                # the image's bytes are read as the task is sent (see below), not all at once
                tasks[f"{team}: {case}"] = CaseTask(
                    run_key, team, case, str(tarball), image_ids, str(image), b"", options,
                    timeout_s, gpu_tolerance_mib, OFFICIAL_PERIOD_S, 1 << 20, limits)
            # the queue's order is the local runner's (schedule), run by whichever slot is free
            queues.append([Job(team, label, run_case_task) for label in tasks
                           if tasks[label].team == team])  # type: ignore[arg-type]
        order = deque(tasks[job.label] for job in schedule(queues, interleave=interleave))
        placed = _alike_slots(client, runs)
        _ship_images(client, shipping)

        team_of: dict[str, str] = {}  # a case's task key: its team

        def send() -> Any:
            task = order.popleft()
            image = Path(task.image_name)
            # Dask runs tasks of equal priority in submission order: higher first.
            future = client.submit(
                run_case_task, dataclasses.replace(task, image_name=image.name,
                                                   image=image.read_bytes()),
                resources={SLOT_RESOURCE: 1}, workers=placed[task.team], priority=len(order),
                pure=False, key=f"flare-eval-{task.team}-{task.case}-{uuid.uuid4().hex[:8]}")
            team_of[future.key] = task.team
            return future

        # The organizer and the scheduler hold the input images of the cases sent and not
        # yet done: a few per worker, so a free slot always has its next case at hand.
        window = max(4, 2 * len(client.scheduler_info(n_workers=-1)["workers"]))
        pending = {send() for _ in range(min(window, len(order)))}
        failure: str | None = None
        while pending:
            try:
                done, pending = wait(pending, timeout=STRANDED_CHECK_S,
                                     return_when="FIRST_COMPLETED")
            except TimeoutError:
                _check_not_stranded(client, {team_of[f.key] for f in pending}, placed)
                continue
            except FuturesCancelledError as err:  # the scheduler's connection lost
                raise RunnerError(f"the cases in flight were lost on the cluster ({err}); the "
                                  "cases that arrived are kept",
                                  hint="run the same command again to resume") from None
            for future in done:
                if order:
                    pending.add(send())
                try:
                    result = future.result()
                except Exception as err:  # noqa: BLE001 - reported once the others are in
                    failure = failure or f"{future.key}: {type(err).__name__}: {err}"
                    continue
                run = runs[result.team]
                _store(run.team_dir, result)
                run.records[result.case] = result.document
                write_tables(run.team_dir, run.team, run.records)
                advance(1, f"{result.team}: {result.case}: "
                           f"{result.document['record']['status']}")
        if failure is not None:
            raise RunnerError(f"a case failed on the cluster ({failure}); the cases that "
                              "arrived are kept", hint="run the same command again to resume")
        for team, run in runs.items():
            errors = sum(r["status"] == "error" for r in run.finish())
            entries[team].update(run="incomplete" if errors else "done", engine_errors=errors)
    return entries


def run_submission_on_cluster(
    address: str,
    tarball: Path,
    inputs_dir: Path,
    out_dir: Path,
    *,
    team: str,
    options: DockerOptions,
    timeout_s: float | None,
    gpu_tolerance_mib: float,
    retry_failed: bool = False,
    progress: bool | Callable[[int, str], None] = True,
) -> list[dict[str, Any]]:
    """One team's cases on the cluster at ``address`` (``flare-eval run --scheduler``): as
    :func:`~flare_eval.runner.run.run_submission` writes ``out_dir/<team>/``, through
    :func:`run_teams_on_cluster`; returns the ``runs.csv`` rows in case order.

    Raises
    ------
    ConfigError
        No scheduler answers at ``address``.
    RunnerError
        The tarball is no ``docker save`` tarball of one image, or a case failed on the
        cluster (the arrived cases are kept; the same call resumes).
    """
    from flare_eval.runner.intake import OutputLimits
    from flare_eval.runner.run import case_progress, find_cases, recorded_rows

    with case_progress(progress, len(find_cases(inputs_dir))) as advance:
        entry = run_teams_on_cluster(
            address, [(team, Path(tarball))], Path(inputs_dir), Path(out_dir), options=options,
            interleave=False, timeout_s=timeout_s, gpu_tolerance_mib=gpu_tolerance_mib,
            limits=OutputLimits(), advance=advance, skip=lambda team: False,
            retry_failed=retry_failed)[team]
    if entry["run"] == "load_failed":
        raise RunnerError(entry["load_error"],
                          hint="pass a tarball made by 'docker save IMAGE -o team.tar.gz'")
    return recorded_rows(Path(out_dir) / team)
