"""Helpers of the CLI verbs: executors (a dask.distributed cluster when ``--scheduler`` is
given, else none) and progress bars that appear with the first piece of work."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from flare_eval.errors import ConfigError

__all__ = ["lazy_progress", "scheduler_client", "scheduler_executor"]


@contextlib.contextmanager
def scheduler_executor(address: str | None) -> Iterator[Executor | None]:
    """A ``concurrent.futures`` executor on the dask scheduler at ``address``, or None."""
    if address is None:
        yield None
        return
    with scheduler_client(address) as client:
        yield client.get_executor()


@contextlib.contextmanager
def scheduler_client(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` of the dask scheduler at ``address``, closed on leaving.

    Raises
    ------
    ConfigError
        dask.distributed is not installed, or no scheduler answers.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(
            "--scheduler needs dask.distributed", hint="pip install 'flare-eval[scale]'"
        ) from None
    try:
        client = Client(address, timeout="10s")
    except OSError as err:
        raise ConfigError(f"no dask scheduler answers at {address} ({err})") from None
    try:
        yield client
    finally:
        client.close()


#: ``update(done, total, description="", task="", **fields)``: the signature of
#: :func:`lazy_progress`'s bar.
ProgressUpdate = Callable[..., None]


@contextlib.contextmanager
def lazy_progress(*columns: Any, **progress_options: Any) -> Iterator[ProgressUpdate]:
    """A rich progress bar that is drawn from its first update on, not before.

    A bar started up front prints an empty ``0/?`` bar (or a blank line) before an error
    raised while the inputs are checked, and one merely made prints a blank line when stopped
    on a console that is no terminal; this one exists only once work is counted. A transient
    bar is not drawn at all on a console that is no terminal: it would leave nothing there
    but rich's closing blank line.

    Parameters
    ----------
    *columns, **progress_options
        Passed to :class:`rich.progress.Progress`.

    Yields
    ------
    callable
        ``update(done, total, description="", task="", **fields)``: one bar per ``task``
        name, made on its first update; ``fields`` are the task's ``{task.fields[...]}``
        for the columns.
    """
    from rich.console import Console
    from rich.progress import Progress

    bar: list[Progress] = []
    tasks: dict[str, Any] = {}
    console = progress_options.get("console") or Console()
    drawn = console.is_terminal or not progress_options.get("transient")

    def update(done: int, total: int | None, description: str = "", task: str = "",
               **fields: Any) -> None:
        if not drawn:
            return
        if not bar:
            bar.append(Progress(*columns, **progress_options))
            bar[0].start()
        if task not in tasks:
            tasks[task] = bar[0].add_task(description, total=total, **fields)
        bar[0].update(tasks[task], completed=done, total=total, description=description,
                      **fields)

    try:
        yield update
    finally:
        if bar:
            bar[0].stop()
