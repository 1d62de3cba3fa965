"""A control group per case of the local backend: its memory (swap included) and process limits.

Docker holds each container to ``--memory`` and ``--pids-limit`` through cgroups; the bubblewrap
sandbox has no such limits of its own (``RLIMIT_NPROC`` is not enforced for a root runner, whose
sandbox user maps to root outside), so a fork bomb or a runaway allocation of a local
submission would reach the host. When the runner may manage cgroups (root, and the ``memory``
and ``pids`` controllers writable below its own cgroup, in v1 or v2), each case gets a child
cgroup of the runner's own, the limits are written there, and the sandbox joins it before
``bwrap`` is executed (a shell writes its PID into ``cgroup.procs``, then ``exec``), so no
process of the case ever runs outside it. The OOM killer's count of the cgroup tells an OOM.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CaseCgroup", "cgroup_support"]

_ROOT = Path("/sys/fs/cgroup")
_CONTROLLERS = ("memory", "pids")


def _own_paths() -> dict[str, str]:
    """Controller (v1) or ``""`` (v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _bases() -> tuple[str, dict[str, Path]] | None:
    """(``"v1"`` or ``"v2"``, controller -> folder to make case cgroups in), or ``None``."""
    if os.geteuid() != 0:
        return None
    try:
        own = _own_paths()
    except OSError:
        return None
    if (_ROOT / "cgroup.controllers").is_file():  # the unified hierarchy at the root: v2
        base = _ROOT / own.get("", "/").lstrip("/")
        try:
            enabled = (base / "cgroup.subtree_control").read_text().split()
            missing = [c for c in _CONTROLLERS if c not in enabled]
            if missing:  # refused where the runner's cgroup holds processes and is not the root
                (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
        except OSError:
            return None
        return "v2", {c: base for c in _CONTROLLERS}
    bases = {}
    for controller in _CONTROLLERS:
        mount = _ROOT / controller
        if controller not in own or not (mount / "cgroup.procs").is_file():
            return None
        bases[controller] = mount / own[controller].lstrip("/")
    if not all(os.access(base, os.W_OK) for base in bases.values()):
        return None
    return "v1", bases


def cgroup_support() -> str | None:
    """``"v1"`` or ``"v2"`` where case cgroups can be made here, else ``None``."""
    found = _bases()
    return None if found is None else found[0]


@dataclass
class CaseCgroup:
    """One case's cgroup (a folder per hierarchy: one in v2, ``memory`` and ``pids`` in v1)."""

    version: str
    folders: dict[str, Path]

    @classmethod
    def create(cls, memory_bytes: int, pids_max: int) -> CaseCgroup | None:
        """A fresh cgroup with these limits, or ``None`` where cgroups cannot be managed here."""
        found = _bases()
        if found is None:
            return None
        version, bases = found
        name = f"flare-eval-{uuid.uuid4().hex[:12]}"
        folders = {c: base / name for c, base in bases.items()}
        group = cls(version, folders)
        try:
            for folder in set(folders.values()):
                folder.mkdir()
            memory, pids = folders["memory"], folders["pids"]
            (pids / "pids.max").write_text(str(pids_max))
            if version == "v2":
                (memory / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(FileNotFoundError):  # no swap accounting
                    (memory / "memory.swap.max").write_text("0")
            else:
                (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                with contextlib.suppress(FileNotFoundError):  # no swap accounting
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        except OSError:
            group.remove()
            return None
        return group

    def join_command(self, command: list[str]) -> list[str]:
        """``command`` started by a shell that first moves itself into this cgroup."""
        procs = " ".join(shlex.quote(str(folder / "cgroup.procs"))
                         for folder in sorted(set(self.folders.values())))
        # Exit 125 (as 'docker run' when the engine fails) if the move is refused: the runner
        # reports it as its own error, not the submission's.
        script = f'for f in {procs}; do echo $$ > "$f" || exit 125; done; exec "$@"'
        return ["/bin/sh", "-c", script, "flare-eval-cgroup", *command]

    def oom_kills(self) -> int:
        """Processes the OOM killer stopped in this cgroup (0 where the kernel does not say)."""
        memory = self.folders["memory"]
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        try:
            for line in (memory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def remove(self, wait_s: float = 10.0) -> None:
        """Kill what is left in the cgroup and remove its folders.

        The case's PID namespace has ended, but its processes leave asynchronously (a fork
        bomb's take a moment), and a folder with a process in it cannot be removed.
        """
        deadline = time.monotonic() + wait_s
        for folder in set(self.folders.values()):
            while True:
                try:
                    left = (folder / "cgroup.procs").read_text().split()
                except OSError:
                    break  # removed already, or never made
                for pid in left:
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
                try:
                    folder.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left for the operator: named by its flare-eval- prefix
                    time.sleep(0.02)
