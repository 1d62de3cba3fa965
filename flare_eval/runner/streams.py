"""The bounded tail of a submission's stdout or stderr, read as it comes.

A submission may print gigabytes. Neither backend lets that cost disk or runner memory, nor
slow the case through per-line handling: the bytes are read in chunks from the container's
attached stream or the sandbox's pipe into a :class:`Tail`, which keeps the last
``cap_bytes`` and counts the rest.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Iterator
from typing import IO

__all__ = ["Tail", "read_into"]


class Tail:
    """The last ``cap_bytes`` (at least) of a stream fed in chunks, and the count of the rest."""

    def __init__(self, cap_bytes: int) -> None:
        self.cap = cap_bytes
        self._chunks: collections.deque[bytes] = collections.deque()
        self._kept = 0
        #: Bytes fed and no longer kept.
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._kept += len(data)
        while self._kept - len(self._chunks[0]) >= self.cap:
            first = self._chunks.popleft()
            self._kept -= len(first)
            self.dropped += len(first)

    def data(self) -> bytes:
        """The kept bytes, in order."""
        return b"".join(self._chunks)


def read_into(source: Iterable[tuple[Tail, bytes]] | IO[bytes], tail: Tail | None = None
              ) -> threading.Thread:
    """A started daemon thread feeding ``source`` into tails until it ends.

    ``source`` is a pipe (read into ``tail``, closed at its end), or an iterable of
    ``(tail, chunk)`` pairs (a demultiplexed container stream).
    """
    def pairs_of(pipe: IO[bytes]) -> Iterator[tuple[Tail, bytes]]:
        assert tail is not None
        with pipe:
            while chunk := pipe.read1(1 << 16):  # type: ignore[attr-defined]
                yield tail, chunk

    pairs = pairs_of(source) if hasattr(source, "read1") else source

    def run() -> None:
        try:
            for into, chunk in pairs:  # type: ignore[union-attr]
                into.feed(chunk)
        except (OSError, ValueError):
            pass  # the stream was closed under the reader: the run is over

    thread = threading.Thread(target=run, name="flare-eval-stream", daemon=True)
    thread.start()
    return thread
