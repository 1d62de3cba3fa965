"""Cases run side by side on slots: one thread per slot takes the next case from one queue.

A slot runs one case at a time (:mod:`flare_eval.runner.slots`), so a case never shares its
cores or GPU with another. The queue's order is the scheduling policy, decided once before
anything runs (:func:`schedule`): by default the teams in order, each team's cases spread over
the slots (on one host the slots are alike, so all of a team's cases run on identical slots);
interleaved, one case of each team in turn, so that a slow team cannot hold every slot.

Each slot has its own :class:`~flare_eval.runner.sampler.ResourceSampler`: the GPU sampled is
the slot's, and the CPU percentages are those of the slot's cores (RAM stays host-wide: the
kernel does not split it by core).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flare_eval.runner.sampler import ResourceSampler
from flare_eval.runner.slots import Slot

__all__ = ["Job", "schedule", "run_on_slots", "slot_cpu_ram"]

_MIB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Job:
    """One case of one team, ready to run on any slot.

    Attributes
    ----------
    team
        The team's name (what :func:`schedule` interleaves by).
    label
        What the progress display shows of it (``"case"``, ``"team: case"``).
    run
        ``run(slot, sampler)`` runs and records the case; returns its status.
    """

    team: str
    label: str
    run: Callable[[Slot, ResourceSampler], str]


def schedule(teams: Sequence[Sequence[Job]], *, interleave: bool = False) -> list[Job]:
    """The queue of every team's jobs: team after team, or one job of each team in turn.

    Examples
    --------
    >>> noop = lambda slot, sampler: "ok"
    >>> teams = [[Job("a", c, noop) for c in "12"], [Job("b", "1", noop)]]
    >>> [f"{j.team}{j.label}" for j in schedule(teams)]
    ['a1', 'a2', 'b1']
    >>> [f"{j.team}{j.label}" for j in schedule(teams, interleave=True)]
    ['a1', 'b1', 'a2']
    """
    if not interleave:
        return [job for jobs in teams for job in jobs]
    rounds = itertools.zip_longest(*teams)
    return [job for round_ in rounds for job in round_ if job is not None]


def slot_cpu_ram(cpus: frozenset[int]) -> Callable[[], tuple[tuple[float, float, float], float]]:
    """The sampler's ``cpu_ram`` for a slot: user, system and idle seconds of its cores only."""
    import psutil

    ordered = sorted(cpus)

    def read() -> tuple[tuple[float, float, float], float]:
        per_cpu = psutil.cpu_times(percpu=True)
        mine = [per_cpu[c] for c in ordered if c < len(per_cpu)]
        return ((sum(t.user for t in mine), sum(t.system for t in mine),
                 sum(t.idle for t in mine)), psutil.virtual_memory().used / _MIB)

    return read


def run_on_slots(
    jobs: Sequence[Job],
    slots: Sequence[Slot],
    *,
    period_s: float,
    per_process_gpu: bool = False,
    nvml: Any = None,
    advance: Callable[[int, str], None] = lambda n, text: None,
) -> None:
    """Run ``jobs`` in queue order, each on the first free slot, one job per slot at a time.

    With one slot the jobs run on the calling thread. A job that raises (a full disk, a lost
    GPU) stops the queue: the other slots finish the job they hold (which is recorded), no new
    job starts, and the first error is raised here. Interrupted (Ctrl-C), the jobs in flight are
    abandoned as by a killed run: their containers and staging folders are removed when the
    run is resumed.

    Parameters
    ----------
    jobs
        The queue (see :func:`schedule`).
    slots
        Where the jobs run.
    period_s, per_process_gpu, nvml
        Settings of each slot's :class:`~flare_eval.runner.sampler.ResourceSampler`.
    advance
        Called as ``advance(1, "<label>: <status>")`` after each job, from the slot's thread.
    """
    samplers = [ResourceSampler(slot.gpu.index if slot.gpu is not None else None,
                                gpu_uuid=slot.gpu.uuid if slot.gpu is not None else None,
                                period_s=period_s, per_process=per_process_gpu, nvml=nvml,
                                cpu_ram=slot_cpu_ram(slot.cpus) if slot.pinned else None)
                for slot in slots]
    queue = deque(jobs)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work(slot: Slot, sampler: ResourceSampler) -> None:
        while True:
            with lock:
                if failures or not queue:
                    return
                job = queue.popleft()
            try:
                status = job.run(slot, sampler)
            except BaseException as err:  # handed to the calling thread below
                with lock:
                    failures.append(err)
                return
            advance(1, f"{job.label}: {status}")

    opened: list[ResourceSampler] = []
    try:
        for sampler in samplers:  # on this thread, so a missing GPU warns once per slot here
            opened.append(sampler.open())
        if len(slots) == 1:
            work(slots[0], samplers[0])
        else:
            threads = [threading.Thread(target=work, args=(slot, sampler), daemon=True,
                                        name=f"flare-eval-slot-{slot.name}")
                       for slot, sampler in zip(slots, samplers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        for sampler in opened:
            sampler.close()
    if failures:
        raise failures[0]
