"""One writer per output folder: an advisory lock that names its holder and dies with it.

``fcntl.flock`` is released by the kernel when the holding process dies, however it dies
(``kill -9`` included), so a lock left behind by a killed run is never mistaken for a live one:
the next run simply takes it.  The holder's PID and host are written into the lock file only so
that the refusal can name them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from flare_eval.errors import ConfigError, InputError
from flare_eval.typing import StrPath

__all__ = ["LOCK_NAME", "die_with_parent", "exclusive", "output_errors"]

#: Name of the lock file inside the locked folder.
LOCK_NAME = ".flare-eval.lock"


@contextlib.contextmanager
def exclusive(folder: StrPath, *, option: str, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the duration of the block, or refuse at once.

    Parameters
    ----------
    folder
        Folder to write into (created when missing).
    option
        The argument that named it (``--out``), for the messages.
    command
        What takes the lock (``score``, ``run``, ``evaluate``), for the holder's message.

    Raises
    ------
    ConfigError
        Another live process holds the lock; the message names its PID, host and command.
    InputError
        The folder cannot be created or written (read-only, full disk).
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
    except OSError as err:
        raise InputError(f"{option} {folder}: cannot write there ({err.strerror})",
                         hint="give a writable folder with free space") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            raise ConfigError(
                f"{option} {folder}: another flare-eval is writing there ({holder})",
                hint="wait for it to finish, or give another folder; a killed run leaves no lock",
            ) from None
        # the file's text only names the holder: the kernel lock is what excludes, so a full
        # disk that cannot take the name must not stop the run here
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
            handle.write(f"{command}, pid {os.getpid()} on host {socket.gethostname()}\n")
            handle.flush()
        yield


@contextlib.contextmanager
def output_errors(folder: StrPath, *, option: str) -> Iterator[None]:
    """Report a failed write under ``folder`` (read-only, disk full) as a bad ``option``, exit 3.

    Without it such a failure surfaces as an unexpected ``OSError``, i.e. as a bug.
    """
    try:
        yield
    except OSError as err:
        where = err.filename or folder
        raise InputError(f"{option} {folder}: cannot write {where} ({err.strerror or err})",
                         hint="free some space or give a writable folder; finished results "
                         "there are unchanged") from None


def die_with_parent(parent_pid: int) -> None:
    """Pool-worker initializer: the worker is killed when its parent dies, even by ``kill -9``.

    Without it ``kill -9`` of ``score --workers N`` leaves N workers running.  Linux only
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op.
    """
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
