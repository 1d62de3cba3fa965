"""What a backend reports about one case's run, and the interface every backend offers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flare_eval.runner.sampler import ResourceSampler, Samples
from flare_eval.runner.slots import Slot

if TYPE_CHECKING:
    from flare_eval.runner.intake import SpaceGuard

__all__ = ["Execution", "Backend"]


@dataclass(frozen=True)
class Execution:
    """The raw facts of one run of a submission on one case (no output checks yet).

    Attributes
    ----------
    exit_code
        Exit status of ``predict.sh`` (128 + signal when killed); ``None`` when it never ran
        or was killed on timeout.
    timed_out
        The run was killed after the timeout.
    oom_killed
        The kernel's OOM killer stopped it (docker's ``State.OOMKilled``).
    time_s
        Host monotonic wall time of the whole run (create, start, inference, exit, removal).
    stdout, stderr
        The run's output streams (their tails, not yet capped to the run's log cap).
    samples
        Resource samples taken during the run.
    error
        Set when the runner itself failed (the engine refused to create or start the
        container...): the case was not fairly run and is retried on resume.
    dropped
        Bytes of stdout and of stderr the backend dropped before ``stdout`` and ``stderr``
        (it keeps a bounded tail).
    """

    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    time_s: float
    stdout: bytes
    stderr: bytes
    samples: Samples
    error: str | None = None
    dropped: tuple[int, int] = (0, 0)


class Backend(Protocol):
    """Runs a submission on one case with ``/workspace/inputs`` and ``/workspace/outputs``.

    Attributes
    ----------
    memory
        The memory limit a case runs under (``28g``, ``16384m``; ``runs.csv``), or ``None``.
    """

    memory: str | None

    def run_case(
        self, inputs_dir: Path, outputs_dir: Path, *, timeout_s: float | None,
        sampler: ResourceSampler, name: str, guard: SpaceGuard | None = None,
    ) -> Execution:
        """Run on the single case in ``inputs_dir``; the submission writes to ``outputs_dir``.

        While the case runs, ``guard.watching(kill)`` (when given) may kill it for
        outgrowing its output space; the caller reads ``guard.reason``.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """Plain-data settings recorded in ``run.json`` (and compared on resume)."""
        ...

    def on_slot(self, slot: Slot) -> Backend:
        """The same backend pinned to ``slot``'s cores and given its GPU (see
        :mod:`flare_eval.runner.slots`)."""
        ...
