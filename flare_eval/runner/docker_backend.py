"""Docker backend: one fresh container per case, as the official FLARE harness, but supervised.

The official command was ``docker container run --shm-size=28gb -m 28G --gpus="device=N"
--rm -v inputs:/workspace/inputs/ -v outputs:/workspace/outputs/ <team>:latest /bin/bash -c
"sh predict.sh"``. Here each case gets a container created, started, watched and removed
through the docker SDK, with a timeout, the exit code, the OOM flag and the logs recorded.

Command: the script is run as ``sh predict.sh`` in the image's working directory, which is
the interpreter the official harness used (its ``/bin/bash -c`` only wrapped that call); not
requiring ``/bin/bash`` lets minimal images run. The image's entrypoint is kept, as with
``docker run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flare_eval.errors import RunnerError
from flare_eval.runner.execution import Execution
from flare_eval.runner.intake import SpaceGuard
from flare_eval.runner.sampler import ResourceSampler
from flare_eval.runner.streams import Tail, read_into
from flare_eval.runner.slots import Slot

__all__ = ["CONTAINER_LABEL", "WORK_LABEL", "DEADLINE_LABEL", "DockerOptions", "DockerBackend",
           "OFFICIAL_MEMORY", "fit_to_host",
           "connect", "load_image", "remove_expired"]

#: Label put on every container this runner creates (to find leftovers).
CONTAINER_LABEL = "flare-eval.runner"
#: Label naming the case's work folder: unique to one case of one results folder.
WORK_LABEL = "flare-eval.work"
#: Label holding the Unix time after which the container may be removed by anyone: the
#: timeout, enforced from the engine side when the runner that started it was killed.
DEADLINE_LABEL = "flare-eval.deadline"
#: Grace past a case's timeout before another run removes its container.
_DEADLINE_GRACE_S = 60.0


def remove_expired(client: Any, now: float | None = None) -> list[str]:
    """Remove every runner container past its deadline label; returns their names.

    Called before each case and by ``flare-eval run --cleanup``: a container whose runner
    was SIGKILLed runs on only until the next run or cleanup after its deadline. A container
    without a deadline (no timeout) is removed when its own case is run again.
    """
    import docker.errors

    now = time.time() if now is None else now
    removed = []
    for container in client.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
        deadline = container.labels.get(DEADLINE_LABEL)
        if deadline is not None and float(deadline) < now:
            try:
                container.remove(force=True)
                removed.append(container.name)
            except docker.errors.NotFound:
                pass  # its own runner removed it meanwhile
    return removed


#: Most processes and threads of a case (docker ``--pids-limit``; the local backend's cgroup).
PIDS_LIMIT = 4096


def _work_key(inputs_dir: Path) -> str:
    return str(inputs_dir.resolve().parent)


@dataclass(frozen=True)
class DockerOptions:
    """Container settings of a run (defaults: the official ones, plus a safe sandbox).

    Attributes
    ----------
    gpu_index
        GPU passed as ``--gpus device=N``; ``None`` requests no GPU.
    gpu_uuid
        The GPU asked for by UUID instead (``--gpus device=GPU-...``): the index order of the
        engine's host, which a slot's index came from, is not needed then.
    cpuset_cpus
        Cores the container is pinned to (``--cpuset-cpus 0-3``); ``None``: any.
    memory
        Memory limit (``-m``), swap included so an overrun is an OOM kill, not swapping.
        ``None``: the official 28g, or the case's share of the engine host's RAM where that is
        less (the slot's, :func:`~flare_eval.runner.slots.memory_share`; see :func:`fit_to_host`).
    shm_size
        Size of ``/dev/shm`` (``--shm-size``); ``None`` as ``memory``.
    network
        Network mode; ``none`` cuts the container off.
    pids_limit
        Most processes and threads in the container.
    log_bytes
        Most bytes of each of the container's streams kept while it runs (the tail): they
        are read from the attached container as they come, not through a log driver, so a
        submission printing gigabytes costs neither disk nor runner memory, and it is not
        slowed by the engine's per-line logging (500 MB of short lines: 3x faster here).
    command
        Command run in the image's working directory.
    labels
        Extra labels of every container (each also gets ``flare-eval.runner=1`` and
        ``flare-eval.case=<id>``, to find leftovers).
    """

    gpu_index: int | None = None
    gpu_uuid: str | None = None
    cpuset_cpus: str | None = None
    memory: str | None = None
    shm_size: str | None = None
    network: str = "none"
    pids_limit: int = PIDS_LIMIT
    log_bytes: int = 4 << 20
    command: tuple[str, ...] = ("sh", "predict.sh")
    labels: dict[str, str] = field(default_factory=dict)


# The official harness's container memory and /dev/shm (docker run -m 28G --shm-size 28G)
OFFICIAL_MEMORY = "28g"


def host_size(given: str | None, host_bytes: int, option: str, where: str, *,
              host_cores: int = 1, cpus: frozenset[int] | None = None) -> str:
    """A memory size for a case on ``cpus`` of a host (named ``where``) of ``host_bytes``
    of RAM and ``host_cores`` cores.

    The case's share is :func:`~flare_eval.runner.slots.memory_share` (all of the host for
    an unpinned run). Unset (None), the official 28g, lowered to the share where it is less
    (said in ``runner.json`` and ``runs.csv``, ``memory``); a value given explicitly that
    exceeds the share is refused, as the case could take its neighbours' memory (or, over
    the host, never be held to it).

    Raises
    ------
    ConfigError
        An explicit size over the share, or one docker cannot parse.

    Examples
    --------
    >>> host_size(None, 64 * 2**30, "--memory", "a host")
    '28g'
    >>> host_size(None, 64 * 2**30, "--memory", "a host", host_cores=8, cpus=frozenset({0, 1}))
    '16384m'
    """
    from docker.errors import DockerException
    from docker.utils import parse_bytes

    from flare_eval.errors import ConfigError
    from flare_eval.runner.slots import cpuset_text, memory_share

    try:
        size = parse_bytes(given or OFFICIAL_MEMORY)
    except DockerException as err:
        raise ConfigError(f"{option} {given!r}: not a size ({err})", hint="e.g. 16g, 512m") from None
    share = memory_share(host_bytes, host_cores, cpus)
    if given is not None and size > share:
        whose = (f"the {host_bytes / 2**30:.1f} GiB of RAM of {where}" if cpus is None else
                 f"the {share / 2**30:.1f} GiB share of RAM of the slot on cores "
                 f"{cpuset_text(cpus)} ({len(cpus)} of the {host_cores} cores of {where}, "
                 f"{host_bytes / 2**30:.1f} GiB)")
        raise ConfigError(f"{option} {given} exceeds {whose}",
                          hint=f"give at most {share // 2**20}m, or leave it unset")
    if given is None and size > share:
        return f"{share // 2**20}m"
    return given or OFFICIAL_MEMORY


def fit_to_host(options: DockerOptions, host_bytes: int, *, host_cores: int = 1,
                cpus: frozenset[int] | None = None) -> DockerOptions:
    """``options`` with ``memory`` and ``shm_size`` resolved against the share of the engine
    host's RAM of a case on ``cpus`` (:func:`host_size`)."""
    from dataclasses import replace

    where = "the docker engine's host"
    return replace(options, memory=host_size(options.memory, host_bytes, "--memory", where,
                                             host_cores=host_cores, cpus=cpus),
                   shm_size=host_size(options.shm_size, host_bytes, "--shm-size", where,
                                      host_cores=host_cores, cpus=cpus))


def connect() -> Any:
    """A ``docker.DockerClient`` of the environment's engine (``DOCKER_HOST`` honoured), checked.

    Raises
    ------
    RunnerError
        When no engine answers.
    """
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        raise RunnerError(f"no docker engine answers ({err})",
                          hint="start dockerd, or set DOCKER_HOST") from None
    return client


def load_image(client: Any, image: str) -> str:
    """The image to run: ``docker load`` a ``docker save`` tarball, or check a named image.

    Parameters
    ----------
    client
        A ``docker.DockerClient``.
    image
        Path of a tarball (``.tar``, ``.tar.gz``) or an image name/ID known to the engine.

    Returns
    -------
    str
        An image reference (its first tag, else its ID).

    Raises
    ------
    RunnerError
        When the tarball is not a docker image, holds several images, or the name is unknown.
    """
    import docker.errors

    path = Path(image)
    if path.is_file():
        try:
            with path.open("rb") as stream:
                images = client.images.load(stream)
        except docker.errors.DockerException as err:
            raise RunnerError(
                f"--image {path}: the engine could not load it as a docker image ({err})",
                hint="pass a tarball made by 'docker save IMAGE -o team.tar.gz' or an image name",
            ) from None
        if len(images) != 1:
            raise RunnerError(
                f"--image {path}: expected a tarball of exactly one image, it held {len(images)}"
                f" ({[i.tags or i.id for i in images]})",
                hint="save one image per team: docker save team:latest -o team.tar.gz",
            )
        loaded = images[0]
        return loaded.tags[0] if loaded.tags else loaded.id
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RunnerError(
            f"--image {image!r}: neither an existing file nor an image known to the engine",
            hint="check the path of the tarball, or 'docker images' for the name",
        ) from None
    return found.tags[0] if found.tags else found.id


class DockerBackend:
    """Runs each case in a fresh container of ``image``.

    Parameters
    ----------
    client
        A ``docker.DockerClient``.
    image
        The image reference (see :func:`load_image`).
    options
        Container settings.
    cpus
        The slot's cores (set by :meth:`on_slot`): the memory share and its bound are the
        slot's; ``None``: the whole host's.
    """

    def __init__(self, client: Any, image: str, options: DockerOptions = DockerOptions(), *,
                 cpus: frozenset[int] | None = None) -> None:
        self.client = client
        self.image = image
        self.given = options  # a slot's share is resolved from these, not from the host's
        info = client.info()
        self.options = fit_to_host(options, int(info["MemTotal"]), host_cores=int(info["NCPU"]),
                                   cpus=cpus)

    @property
    def memory(self) -> str | None:
        """The memory limit of each case's container (``runs.csv``, ``memory``)."""
        return self.options.memory

    def describe(self) -> dict[str, Any]:
        image_id = self.client.images.get(self.image).id
        o = self.options
        return {
            "backend": "docker", "image": self.image, "image_id": image_id,
            "gpu_index": o.gpu_index, "memory": o.memory, "shm_size": o.shm_size,
            "network": o.network, "pids_limit": o.pids_limit, "command": list(o.command),
            "cap_drop": ["ALL"], "log_bytes": o.log_bytes,
        }

    def on_slot(self, slot: Slot) -> DockerBackend:
        """This image and these settings, pinned to ``slot``'s cores and given its GPU (by UUID
        where NVML named it)."""
        gpu = slot.gpu
        options = dataclasses.replace(
            self.given, cpuset_cpus=slot.cpuset, gpu_index=None if gpu is None else gpu.index,
            gpu_uuid=None if gpu is None else gpu.uuid)
        return DockerBackend(self.client, self.image, options, cpus=slot.cpus)

    def _remove_leftovers(self, inputs_dir: Path) -> None:
        # A runner killed outright (SIGKILL, power loss) cannot remove its container; the
        # resumed run finds it by the case's work folder, which no other run shares.
        label = f"{WORK_LABEL}={_work_key(inputs_dir)}"
        for leftover in self.client.containers.list(all=True, filters={"label": label}):
            leftover.remove(force=True)

    def _create(self, inputs_dir: Path, outputs_dir: Path, name: str,
                timeout_s: float | None) -> Any:
        from docker.types import DeviceRequest, LogConfig

        o = self.options
        deadline = ({} if timeout_s is None else
                    {DEADLINE_LABEL: f"{time.time() + timeout_s + _DEADLINE_GRACE_S:.0f}"})
        devices = (
            [DeviceRequest(device_ids=[o.gpu_uuid or str(o.gpu_index)], capabilities=[["gpu"]])]
            if o.gpu_index is not None or o.gpu_uuid is not None else None
        )
        return self.client.containers.create(
            self.image,
            command=list(o.command),
            volumes={
                str(inputs_dir.resolve()): {"bind": "/workspace/inputs", "mode": "ro"},
                str(outputs_dir.resolve()): {"bind": "/workspace/outputs", "mode": "rw"},
            },
            shm_size=o.shm_size,
            mem_limit=o.memory,
            memswap_limit=o.memory,
            network_mode=o.network,
            privileged=False,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=o.pids_limit,
            device_requests=devices,
            cpuset_cpus=o.cpuset_cpus,
            # No log driver: the streams are read from the attached container (see _Streams);
            # even the 'local' driver handles every line and slowed a 500 MB print 3x.
            log_config=LogConfig(type="none"),
            labels={CONTAINER_LABEL: "1", "flare-eval.case": name, WORK_LABEL: _work_key(inputs_dir),
                    **deadline, **o.labels},
            detach=True,
        )

    def run_case(
        self, inputs_dir: Path, outputs_dir: Path, *, timeout_s: float | None,
        sampler: ResourceSampler, name: str, guard: SpaceGuard | None = None,
    ) -> Execution:
        """Create, start, watch and remove one container; see :class:`Execution`.

        The container is removed in every outcome, also when creating or starting it fails;
        a container left by a killed earlier run of the same case and results folder is
        removed first.
        Waiting uses a blocking ``wait()`` on a helper thread: the SDK's ``wait(timeout=...)``
        raises a connection error over a unix socket instead of a timeout.
        """
        import docker.errors

        container = None
        exit_code: int | None = None
        timed_out = oom = False
        streams = _Streams(self.options.log_bytes)
        error: str | None = None
        t_exit: float | None = None
        try:
            remove_expired(self.client)
        except docker.errors.DockerException:
            pass  # the case itself reports an engine that does not answer
        sampler.start()
        t0 = time.monotonic()
        try:
            self._remove_leftovers(inputs_dir)
            container = self._create(inputs_dir, outputs_dir, name, timeout_s)
            streams.attach(self.client, container.id)  # before the start: nothing is missed
            container.start()
            waited: dict[str, Any] = {}

            def wait() -> None:
                try:
                    waited["result"] = container.wait()
                except Exception as err:  # reported below: the engine went away mid-run
                    waited["error"] = err

            waiter = threading.Thread(target=wait, name="flare-eval-wait", daemon=True)
            waiter.start()
            # Looked up while the case runs, so the lookup never delays the exit.
            state = self.client.api.inspect_container(container.id)["State"]
            sampler.watch_pid(state.get("Pid") or None)
            watching = (guard.watching(lambda: _kill(container)) if guard is not None
                        else contextlib.nullcontext())
            with watching:
                waiter.join(None if timeout_s is None
                            else max(0.0, t0 + timeout_s - time.monotonic()))
            if waiter.is_alive():
                timed_out = True
                try:
                    container.kill()
                except docker.errors.APIError:
                    pass  # it exited by itself between the deadline and the kill
                waiter.join()
            t_exit = time.monotonic()
            if "error" in waited:
                error = f"lost track of the container: {waited['error']}"
            container.reload()
            state = container.attrs["State"]
            oom = bool(state.get("OOMKilled"))
            if not timed_out:
                exit_code = int(state.get("ExitCode"))
        except docker.errors.DockerException as err:
            error = f"docker: {err}"
        finally:
            streams.close()
            t_remove = time.monotonic()
            t_exit = t_remove if t_exit is None else t_exit
            try:
                if container is not None:
                    container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as err:
                error = error or f"docker could not remove container {container.id}: {err}"
            finally:
                samples = sampler.stop()
            # The official time covers 'docker run --rm' as a whole, removal included.
            time_s = (t_exit - t0) + (time.monotonic() - t_remove)
        out, err = streams.tails[1], streams.tails[2]
        return Execution(exit_code, timed_out, oom, time_s, out.data(), err.data(), samples,
                         error, dropped=(out.dropped, err.dropped))


def _kill(container: Any) -> None:
    import docker.errors

    try:
        container.kill()
    except docker.errors.APIError:
        pass  # it exited by itself meanwhile


class _Streams:
    """The tails of an attached container's stdout and stderr, read on a thread as they come."""

    #: Seconds the reader may take to drain the stream after the container is gone.
    drain_s = 10.0

    def __init__(self, cap_bytes: int) -> None:
        self.tails = {1: Tail(cap_bytes), 2: Tail(cap_bytes)}
        self.socket: Any = None
        self.thread: threading.Thread | None = None

    def attach(self, client: Any, container_id: str) -> None:
        """Attach to the (created, not yet started) container and start reading."""
        # A CancellableStream of (stdout, stderr) chunks; its close() closes the socket.
        self.socket = client.api.attach(container_id, stdout=True, stderr=True, stream=True,
                                        logs=False, demux=True)
        self.thread = read_into((self.tails[n], chunk) for pair in self.socket
                                for n, chunk in enumerate(pair, start=1) if chunk)

    def close(self) -> None:
        """Let the reader drain what the exited container wrote, then close the socket."""
        if self.thread is not None:
            self.thread.join(self.drain_s)
        if self.socket is not None:
            with contextlib.suppress(Exception):  # closed already, or the engine went away
                self.socket.close()  # cancels a stream still open (the reader timed out)
            # A stream that ended is left open by that (docker-py 7): its response holds the
            # socket until it is closed too.
            response = getattr(self.socket, "_response", None)
            if response is not None:
                response.close()
        if self.thread is not None:
            self.thread.join()
