"""Local backend: run a submission folder's ``predict.sh`` without docker, in a bubblewrap sandbox.

For participants checking a submission and for tests. The sandbox (``bwrap``, Debian package
``bubblewrap``) gives the script the same contract as the container: the submission folder's
entries appear in a writable ``/workspace`` (a tmpfs, like a container's writable layer), the
case's input folder at ``/workspace/inputs`` read-only and the output folder at
``/workspace/outputs``; the host's system folders are visible read-only (the submission uses
the host's interpreters and libraries), with fresh ``/tmp``, ``/dev`` and ``/proc``, no network
and its own PID namespace. Timing, sampling and records are those of the docker backend.

With a GPU index the sandbox also gets the host's NVIDIA device nodes and a read-only ``/sys``
(what the NVIDIA container runtime gives a container), and CUDA is pointed at that one GPU in the
PCI bus order NVML and ``docker --gpus device=N`` use.

Memory (swap included) and processes are limited as in a container, through a cgroup of the
case (:mod:`flare_eval.runner.cgroups`) where the runner may manage cgroups (root); elsewhere
they are not, and :meth:`LocalBackend.describe` says so (``"cgroup": null``). Not enforced
here: the shm size; use the docker backend for official runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flare_eval.errors import RunnerError
from flare_eval.runner.cgroups import CaseCgroup, cgroup_support
from flare_eval.runner.docker_backend import PIDS_LIMIT, host_size
from flare_eval.runner.execution import Execution
from flare_eval.runner.intake import SpaceGuard
from flare_eval.runner.sampler import ResourceSampler
from flare_eval.runner.streams import Tail, read_into
from flare_eval.runner.slots import Slot, cpuset_text

__all__ = ["LocalBackend"]

# Host folders the sandbox shows (read-only); everything else of the host stays hidden.
_SYSTEM = ("bin", "etc", "lib", "lib32", "lib64", "libx32", "sbin", "usr")
# Files of /etc a root runner could otherwise read (the sandbox keeps root's file ownership).
_SECRETS = ("etc/shadow", "etc/gshadow", "etc/shadow-", "etc/gshadow-", "etc/sudoers")
# Variables passed from the runner's environment; all others are dropped.
_ENV_ALLOWED = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: uid and gid of the script inside the sandbox (``nobody``).
NOBODY = 65534


#: Most bytes of each stream kept (the tail): gigabytes of output cost no runner memory or disk.
LOG_TAIL_BYTES = 4 << 20


def _signal_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the sandbox and everything in it are gone already


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc)
    proc.wait()


def _python_prefixes() -> list[str]:
    """Folders of the active Python outside the system folders (a venv, pyenv, conda)."""
    found: list[str] = []
    for prefix in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        real = os.path.realpath(prefix)
        top = Path(real).parts[1] if len(Path(real).parts) > 1 else ""
        if top not in _SYSTEM and real not in found and os.path.isdir(real):
            found.append(real)
    return found


class LocalBackend:
    """Runs ``sh predict.sh`` of ``submission`` under bubblewrap.

    Parameters
    ----------
    submission
        Folder holding ``predict.sh`` and whatever it needs.
    network
        ``"none"`` unshares the network; ``"host"`` keeps the host's.
    gpu_index
        GPU the submission may use (PCI bus order, as NVML); none is visible if unset.
    gpu_uuid
        That GPU's NVML UUID where known: CUDA is then shown the GPU by UUID
        (``CUDA_VISIBLE_DEVICES=GPU-...``), as docker's ``--gpus device=`` is given it.
    dev_root
        Where the NVIDIA device nodes are looked up (``/dev``; another folder in tests).
    cpus
        Cores the sandbox is pinned to (with ``taskset``, which every process in it inherits);
        ``None``: any.
    memory
        Memory limit of the case, swap included (``16g``); ``None``: as docker's default (the
        official 28g, or the case's share of this host's RAM where that is less: the slot's
        with ``cpus``). Enforced where cgroups are.
    pids_limit
        Most processes and threads of the case (docker's default). Enforced where cgroups are.

    Raises
    ------
    RunnerError
        When the folder has no ``predict.sh``, ``bwrap`` is not installed, it cannot build
        a sandbox on this host, or a GPU is asked for and no NVIDIA device node exists.
    """

    def __init__(self, submission: Path, *, network: str = "none", gpu_index: int | None = None,
                 gpu_uuid: str | None = None, dev_root: Path = Path("/dev"), cpus: frozenset[int] | None = None,
                 memory: str | None = None, pids_limit: int = PIDS_LIMIT) -> None:
        from docker.utils import parse_bytes

        self.submission = Path(submission).resolve()
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        # Said in runner.json and runs.csv, not warned: a participant's machine has less
        # than the official 28g nearly always.
        self.given_memory = memory  # a slot's share is resolved from it, not from the host's
        self.memory = host_size(memory, ram, "--memory", "this host",
                                host_cores=os.cpu_count() or 1, cpus=cpus)
        self.memory_bytes = int(parse_bytes(self.memory))
        self.pids_limit = pids_limit
        self.cgroup = cgroup_support()
        if not (self.submission / "predict.sh").is_file():
            raise RunnerError(
                f"--submission {submission}: expected a folder with predict.sh, found none",
                hint="the local backend runs 'sh predict.sh' inside the submission folder",
            )
        if network not in ("none", "host"):
            raise RunnerError(f"--network {network!r}: the local backend knows 'none' and 'host'")
        self.network = network
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise RunnerError(
                "the local backend needs bubblewrap ('bwrap'), which is not installed",
                hint="apt-get install bubblewrap, or use --backend docker",
            )
        self.bwrap = bwrap
        self.pin: list[str] = []
        if cpus is not None:
            taskset = shutil.which("taskset")
            if taskset is None:
                raise RunnerError(
                    "the local backend pins a slot's cores with taskset, which is not installed",
                    hint="apt-get install util-linux, or run without --slots")
            self.pin = [taskset, "--cpu-list", cpuset_text(cpus)]
        self.cpus = cpus
        self.dev_root = Path(dev_root)
        self.gpu_index = gpu_index
        self.gpu_uuid = gpu_uuid
        self.gpu_nodes = sorted(Path(dev_root).glob("nvidia*")) if gpu_index is not None else []
        if gpu_index is not None and not self.gpu_nodes:
            raise RunnerError(
                f"--gpu {gpu_index}: no NVIDIA device nodes ({dev_root}/nvidia*) on this host",
                hint="install the NVIDIA driver, or leave out --gpu to run on the CPU",
            )
        self._check_sandbox()

    def describe(self) -> dict[str, Any]:
        return {"backend": "local", "submission": str(self.submission), "network": self.network,
                "gpu_index": self.gpu_index, "gpu_uuid": self.gpu_uuid, "command": ["sh", "predict.sh"], "uid": NOBODY,
                "memory": self.memory, "pids_limit": self.pids_limit, "cgroup": self.cgroup}

    def on_slot(self, slot: Slot) -> LocalBackend:
        """This submission pinned to ``slot``'s cores, with its GPU's device nodes."""
        return LocalBackend(self.submission, network=self.network, dev_root=self.dev_root,
                            gpu_index=None if slot.gpu is None else slot.gpu.index,
                            gpu_uuid=None if slot.gpu is None else slot.gpu.uuid, cpus=slot.cpus,
                            memory=self.given_memory, pids_limit=self.pids_limit)

    def _sandbox_args(self, inputs_dir: Path, outputs_dir: Path) -> list[str]:
        args = [*self.pin, self.bwrap, "--die-with-parent", "--unshare-user", "--uid", str(NOBODY),
                "--gid", str(NOBODY), "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--clearenv"]
        if self.network == "none":
            args.append("--unshare-net")
        for name in _SYSTEM:
            entry = Path("/") / name
            if entry.is_symlink():  # merged-/usr systems: /bin -> usr/bin
                args += ["--symlink", os.readlink(entry), str(entry)]
            elif entry.is_dir():
                args += ["--ro-bind", str(entry), str(entry)]
        for secret in _SECRETS:
            if (Path("/") / secret).exists():
                args += ["--ro-bind", "/dev/null", f"/{secret}"]
        args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/workspace"]
        # After the fresh /tmp: a virtual environment under /tmp stays visible.
        for prefix in _python_prefixes():
            args += ["--ro-bind", prefix, prefix]
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
               "HOME": "/tmp", **{k: os.environ[k] for k in _ENV_ALLOWED if k in os.environ}}
        if sys.prefix != sys.base_prefix:
            env["VIRTUAL_ENV"] = sys.prefix
        if self.gpu_index is not None:
            for node in self.gpu_nodes:
                args += ["--dev-bind", str(node), f"/dev/{node.name}"]
            args += ["--ro-bind", "/sys", "/sys"]
            env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID",
                       CUDA_VISIBLE_DEVICES=self.gpu_uuid or str(self.gpu_index))
        for key, value in sorted(env.items()):
            args += ["--setenv", key, value]
        for entry in sorted(self.submission.iterdir()):
            if entry.name not in ("inputs", "outputs"):
                args += ["--ro-bind", str(entry), f"/workspace/{entry.name}"]
        args += ["--ro-bind", str(inputs_dir.resolve()), "/workspace/inputs",
                 "--bind", str(outputs_dir.resolve()), "/workspace/outputs",
                 "--chdir", "/workspace"]
        return args

    def _check_sandbox(self) -> None:
        # The probe joins a case cgroup too, so a case never fails for a move it cannot make.
        group = CaseCgroup.create(self.memory_bytes, self.pids_limit) if self.cgroup else None
        if self.cgroup and group is None:
            self.cgroup = None
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp)
            (probe / "in").mkdir()
            (probe / "out").mkdir()
            command = [*self._sandbox_args(probe / "in", probe / "out"), "true"]
            try:
                result = subprocess.run(command if group is None else group.join_command(command),
                                        capture_output=True, timeout=30)
            finally:
                if group is not None:
                    group.remove()
        if result.returncode != 0:
            raise RunnerError(
                f"bubblewrap cannot build a sandbox here: {result.stderr.decode(errors='replace').strip()}",
                hint="user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone); "
                "run as root or use --backend docker",
            )

    def run_case(
        self, inputs_dir: Path, outputs_dir: Path, *, timeout_s: float | None,
        sampler: ResourceSampler, name: str, guard: SpaceGuard | None = None,
    ) -> Execution:
        """Run ``sh predict.sh`` in the sandbox; on timeout kill its whole process group."""
        command = [*self._sandbox_args(inputs_dir, outputs_dir), "sh", "predict.sh"]
        group = CaseCgroup.create(self.memory_bytes, self.pids_limit) if self.cgroup else None
        if self.cgroup and group is None:
            sampler.start()  # the caller reads the (empty) samples of every case
            return Execution(None, False, False, 0.0, b"", b"", sampler.stop(),
                             error=f"could not make the case's cgroup ({self.cgroup})")
        if group is not None:
            command = group.join_command(command)
        try:
            return self._run(command, group, timeout_s=timeout_s, sampler=sampler, guard=guard)
        finally:
            if group is not None:
                group.remove()

    def _run(self, command: list[str], group: CaseCgroup | None, *, timeout_s: float | None,
             sampler: ResourceSampler, guard: SpaceGuard | None) -> Execution:
        timed_out = False
        tails = (Tail(LOG_TAIL_BYTES), Tail(LOG_TAIL_BYTES))
        sampler.start()
        t0 = time.monotonic()
        try:
            # A new session makes the sandbox and all it starts one process group to kill.
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            assert proc.stdout is not None and proc.stderr is not None
            readers = [read_into(proc.stdout, tails[0]), read_into(proc.stderr, tails[1])]
            sampler.watch_pid(proc.pid)
            watching = (guard.watching(lambda: _signal_group(proc)) if guard is not None
                        else contextlib.nullcontext())
            try:
                with watching:
                    proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
            except BaseException:  # interrupted: leave nothing running behind
                _kill_group(proc)
                raise
        finally:
            time_s = time.monotonic() - t0
            samples = sampler.stop()
        _kill_group(proc)  # whatever the script left in the background
        for reader in readers:  # the sandbox's PID namespace is gone: the pipes are closed
            reader.join()
        code = proc.returncode
        exit_code = None if timed_out else (128 - code if code < 0 else code)
        oom = group is not None and group.oom_kills() > 0
        return Execution(exit_code, timed_out, oom, time_s, tails[0].data(), tails[1].data(),
                         samples, dropped=(tails[0].dropped, tails[1].dropped))
