"""Executors for the CLI: a dask.distributed cluster when ``--scheduler`` is given, else none."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Executor

from flare_eval.errors import ConfigError

__all__ = ["scheduler_executor"]


@contextlib.contextmanager
def scheduler_executor(address: str | None) -> Iterator[Executor | None]:
    """A ``concurrent.futures`` executor on the dask scheduler at ``address``, or None."""
    if address is None:
        yield None
        return
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
        yield client.get_executor()
    finally:
        client.close()
