"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Every file flare-eval writes goes through :func:`atomic_path`: the content is written to a
temporary file in the target's folder, flushed to disk, given the permissions a plain ``open``
would (``0o666`` minus the umask; ``mkstemp`` creates ``0o600``, which would hide score tables and
reports from the other users of a shared results folder) and renamed over the target.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flare_eval.typing import StrPath

__all__ = ["atomic_path"]


@functools.cache
def _umask() -> int:
    """The process umask, read without changing it where the system tells (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    # Elsewhere the only way is to set and restore it, once, at the first write.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: StrPath, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path to write; on leaving the block it replaces ``path``.

    Parameters
    ----------
    path
        The file to create or replace; missing parent folders are made.
    suffix
        Ending of the temporary name, for writers that choose the format by it (``.nii.gz``).

    Yields
    ------
    Path
        An empty file in ``path``'s folder.  When the block raises, it is removed and ``path``
        is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text(), oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    ('done', True)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    tmp = Path(name)
    try:
        yield tmp
        os.fsync(fd)  # the writer used its own handle; fsync acts on the file, not the handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
