"""Taking a submission's outputs without trusting them, and the neutral folder each case runs in.

A container controls everything under ``/workspace/outputs``: it may leave a symbolic link
to any host path (the host path of its mounts is in ``/proc/self/mountinfo``), a hard link,
a FIFO that blocks a reader, a directory, a file of any size, or a hundred thousand files.
So the runner never reads the folder in place: :func:`take_output` looks at the one expected
name without following links, accepts only a regular file with a single link and a bounded
size, and copies its bytes through a descriptor opened with ``O_NOFOLLOW`` into a folder of the
runner's own before anything parses them. What it refuses is described by its kind and size,
never by its content.

:func:`stage_case` gives every case a folder under a private root in the temporary directory
(``$TMPDIR/flare-eval-stage-<uid>``, mode 0700), named by a hash of the results folder and the
case: it holds the case's input and an empty output folder and nothing else, so no path the
container can learn leads to labels, other teams or results. When the runner may mount (root),
the output folder is a tmpfs of ``output_space`` bytes, which bounds what a case can write.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flare_eval.errors import RunnerError

__all__ = ["OutputLimits", "DiskFullError", "Taken", "SpaceGuard", "stage_case", "release_case",
           "remove_stale_cases", "take_output", "summarise_names"]

MIB = 1 << 20


@dataclass(frozen=True)
class OutputLimits:
    """Bounds of what one case may write (defaults: far above any FLARE prediction).

    Attributes
    ----------
    max_bytes
        Largest accepted ``<id>.nii.gz`` (a 512x512x1000 uint8 label map gzips to a few MB).
    max_files
        Most entries in ``/workspace/outputs`` before the case is ``bad_output``.
    output_space
        Most bytes the case's output folder may hold. When the runner may mount (root) it is
        the size of a tmpfs there: writes beyond it fail inside the submission with "No space
        left on device". Otherwise :class:`SpaceGuard` kills the case once the folder holds
        more (checked every ``SpaceGuard.period_s``; every entry counts at least one 4 KiB
        block, so a flood of empty files is bounded too).
    """

    max_bytes: int = 512 * MIB
    max_files: int = 1000
    output_space: int = 1024 * MIB


class DiskFullError(RunnerError):
    """The runner's own disk is full: the run stops cleanly and resumes once space is freed."""


def disk_full(folder: Path, needed_bytes: int) -> DiskFullError:
    """The error for a full disk under ``folder``, naming it and the free space needed."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    return DiskFullError(
        f"no space left on the device of {folder} ({free // MIB} MiB free, at least "
        f"{max(needed_bytes, MIB) // MIB} MiB more needed); the run stopped, finished cases are kept",
        hint="free space there, then run the same command again to resume",
    )


def _stage_root() -> Path:
    root = Path(tempfile.gettempdir()) / f"flare-eval-stage-{os.getuid()}"
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(root)
    # Another user of a shared /tmp could have planted the name first.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RunnerError(f"staging folder {root}: expected a folder of uid {os.getuid()}, "
                          "found something else", hint="remove it, or set TMPDIR")
    os.chmod(root, 0o700)
    return root


def case_folder(team_dir: Path, case: str) -> Path:
    """The staging folder of ``case`` of the results folder ``team_dir`` (stable across runs)."""
    key = hashlib.sha256(f"{Path(team_dir).resolve()}\0{case}".encode()).hexdigest()[:24]
    return _stage_root() / key


def _mount_tmpfs(folder: Path, size: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777,nosuid,nodev",
                           "flare-eval-outputs", str(folder)], capture_output=True)
    return done.returncode == 0


#: Folder-usage floor of one entry: a file system spends at least a block (and an inode) on it.
_BLOCK = 4096


def _usage_over(folder: Path, limit: int) -> int | None:
    """Bytes under ``folder`` (links not followed) once they pass ``limit``; ``None`` below it.

    The walk stops as soon as the limit is passed, so a flood of entries costs one bounded scan.
    """
    used = 0
    pending = [str(folder)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    used += max(info.st_blocks * 512, _BLOCK)
                    if used > limit:
                        return used
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
        except OSError:
            continue  # removed, or made unreadable by the submission: what it holds is not ours
    return None


class SpaceGuard:
    """Holds a running case to ``limits.output_space`` where no tmpfs does (the runner is not root).

    :meth:`watching` measures the output folder every ``period_s`` on a thread while the
    backend waits for the case, and calls the backend's ``kill`` once the folder holds more;
    :attr:`reason` then says so and the case is ``bad_output``. A folder that is the output
    tmpfs is bounded by the kernel and not measured.

    Parameters
    ----------
    outputs_dir
        The case's output folder.
    limits
        Its bounds (``output_space``).
    period_s
        Seconds between two measurements: how long a case may write past the bound.
    """

    period_s = 0.2

    def __init__(self, outputs_dir: Path, limits: OutputLimits, period_s: float | None = None) -> None:
        self.outputs_dir = Path(outputs_dir)
        self.limit = limits.output_space
        self.period_s = self.period_s if period_s is None else period_s
        self.reason: str | None = None

    @contextmanager
    def watching(self, kill: Callable[[], None]) -> Iterator[None]:
        """Measure the folder while the block runs; ``kill()`` the case once it is over."""
        if os.path.ismount(self.outputs_dir):  # the output tmpfs: the kernel holds the bound
            yield
            return
        done = threading.Event()

        def watch() -> None:
            while not done.wait(self.period_s):
                used = _usage_over(self.outputs_dir, self.limit)
                if used is not None:
                    self.reason = (f"/workspace/outputs held more than the output space of "
                                   f"{self.limit} bytes ({used} counted); the case was killed")
                    kill()
                    return

        thread = threading.Thread(target=watch, name="flare-eval-space-guard", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def _remove(folder: Path) -> None:
    if os.path.ismount(folder):  # the output tmpfs
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def release_case(work: Path) -> None:
    """Remove a case's staging folder, unmounting its output tmpfs first."""
    _remove(work / "outputs")
    shutil.rmtree(work, ignore_errors=True)


#: Lock file of a staging folder, held by the run whose case is in it.
_HELD = ".held"
#: A staging folder younger than this is never taken for a leftover (its run may be about
#: to take its lock).
_STALE_AFTER_S = 10.0


@contextmanager
def holding(work: Path) -> Iterator[None]:
    """Hold ``work`` (a case's staging folder) for the block, then release it.

    The lock (``flock``, dropped by the kernel however the run dies) tells
    :func:`remove_stale_cases` of any later run that the folder is in use.
    """
    work.mkdir(parents=True, exist_ok=True)
    with (work / _HELD).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            release_case(work)


def remove_stale_cases() -> list[Path]:
    """Remove every staging folder of this user that no live run holds; returns them.

    A runner killed outright (``kill -9``) leaves its case's folder, and as root its output
    tmpfs, behind; a resumed run of the same results folder releases it, and so does any
    later run or ``flare-eval run --cleanup`` through this, for runs that are never resumed.
    """
    removed = []
    for work in sorted(_stage_root().iterdir()):
        try:
            if time.time() - work.lstat().st_mtime < _STALE_AFTER_S:
                continue
            with (work / _HELD).open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                release_case(work)
        except BlockingIOError:
            continue  # a live run's case
        except OSError:
            continue  # not a folder, or removed meanwhile
        removed.append(work)
    return removed


def stage_case(input_image: Path, work: Path, limits: OutputLimits) -> tuple[Path, Path]:
    """Fresh ``work/inputs`` (the case's image) and empty ``work/outputs``; see the module docs.

    Raises
    ------
    DiskFullError
        When the input cannot be copied for lack of space.
    """
    for leftover in ("inputs", "outputs"):  # of a killed run of this case
        _remove(work / leftover)
    inputs, outputs = work / "inputs", work / "outputs"
    inputs.mkdir(parents=True)
    outputs.mkdir()
    if not _mount_tmpfs(outputs, limits.output_space):
        outputs.chmod(0o777)  # the submission may run as any user inside the container
    try:
        try:
            os.link(input_image, inputs / input_image.name)
        except OSError as err:  # another filesystem: copy instead
            if err.errno == errno.ENOSPC:
                raise
            shutil.copy2(input_image, inputs / input_image.name)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise disk_full(work, Path(input_image).stat().st_size) from None
        raise
    return inputs, outputs


def summarise_names(names: list[str], total: int, shown: int = 5) -> str:
    """``names`` for a message: ``ascii()`` of each (no control characters), at most ``shown``."""
    if total == 0:
        return "nothing"
    listed = ", ".join(ascii(n)[1:-1][:80] for n in names[:shown])
    more = f" and {total - shown} more" if total > shown else ""
    return f"{total} entr{'y' if total == 1 else 'ies'} ({listed}{more})"


@dataclass(frozen=True)
class Taken:
    """What :func:`take_output` found: ``path`` of the private copy, or the refusal."""

    status: str  # "ok", "no_output" or "bad_output"
    message: str
    path: Path | None = None


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def take_output(outputs_dir: Path, accepted: tuple[str, ...], dest_dir: Path,
                limits: OutputLimits) -> Taken:
    """Copy the one ``outputs_dir/<name>`` of the ``accepted`` names to ``dest_dir/<name>`` if
    it is a plain, bounded regular file.

    Parameters
    ----------
    outputs_dir
        The case's output folder (written by the submission: untrusted).
    accepted
        The file names the case's output may have, ``<id>.nii.gz`` first (then ``.nii``,
        ``.mha``, ``.nrrd``): exactly one must be there; two are refused, not one picked.
    dest_dir
        Where the copy goes (a folder of the runner's own), under the same name; replaced.
    limits
        Size and count bounds.

    Returns
    -------
    Taken

    Raises
    ------
    DiskFullError
        When ``dest``'s disk fills during the copy.
    """
    dir_fd = os.open(outputs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        names: list[str] = []
        total = 0
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                total += 1
                if len(names) < 5:
                    names.append(entry.name)
        present = {}
        for candidate in accepted:
            try:
                present[candidate] = os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
        if not present:
            others = f" (or {', '.join(accepted[1:])})" if len(accepted) > 1 else ""
            return Taken("no_output", f"expected {accepted[0]}{others} in /workspace/outputs, "
                                      f"found {summarise_names(sorted(names), total)}")
        if len(present) > 1:
            return Taken("bad_output", f"/workspace/outputs holds {len(present)} outputs of one "
                                       f"case ({', '.join(present)}); none was read")
        ((name, info),) = present.items()
        dest = dest_dir / name
        if total > limits.max_files:
            return Taken("bad_output", f"/workspace/outputs holds {total} entries, more than the "
                                       f"limit of {limits.max_files}; none was read")
        refused = _refusal(name, info, limits)
        if refused:
            return Taken("bad_output", refused)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY,
                         dir_fd=dir_fd)
        except OSError as err:
            return Taken("bad_output", f"{name} could not be opened ({errno.errorcode.get(err.errno, err.errno)})")
        try:
            opened = os.fstat(fd)
            # Swapped between the look and the open: judge what was opened.
            refused = _refusal(name, opened, limits)
            if refused:
                return Taken("bad_output", refused)
            return _copy(fd, name, dest, limits)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _refusal(name: str, info: os.stat_result, limits: OutputLimits) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return f"{name} is {_kind(info.st_mode)}, not a regular file; it was not read"
    if info.st_nlink > 1:
        return f"{name} is a hard link ({info.st_nlink} names of one file); it was not read"
    if info.st_size == 0:
        return f"{name} is empty (0 bytes)"
    if info.st_size > limits.max_bytes:
        return (f"{name} has {info.st_size} bytes, more than the limit of {limits.max_bytes}; "
                "it was not read")
    return None


def _copy(fd: int, name: str, dest: Path, limits: OutputLimits) -> Taken:
    dest.unlink(missing_ok=True)
    copied = 0
    try:
        with dest.open("xb") as out:
            while chunk := os.read(fd, MIB):
                copied += len(chunk)
                if copied > limits.max_bytes:  # grown since fstat
                    break
                out.write(chunk)
    except OSError as err:
        dest.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise disk_full(dest.parent, copied) from None
        raise
    if copied > limits.max_bytes:
        dest.unlink(missing_ok=True)
        return Taken("bad_output", f"{name} grew beyond the limit of {limits.max_bytes} bytes "
                                   "while it was read")
    return Taken("ok", "", dest)
