"""The slots of a cluster: each slot worker's host, cores, GPU and hardware identity.

A slot worker (:mod:`flare_eval.runner.fleet`) is one slot of its host: :func:`slot_workers`
asks every worker of a cluster what it is (host, cores, GPU, CPU model), for the
calibration (:mod:`flare_eval.runner.calibrate`) to measure and check them. Two slots are
*alike* when they have the same CPU model, number of cores and GPU model
(:attr:`SlotWorker.identity`): :func:`place_teams` gives each team the slots of one identity,
so that all of a team's cases run on alike hardware, across hosts too.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flare_eval.errors import ConfigError
from flare_eval.runner.slots import Slot

__all__ = ["SlotWorker", "cpu_model", "place_teams", "slot_workers"]

#: Where Linux names each core's CPU model.
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class SlotWorker:
    """One slot worker of a cluster.

    Attributes
    ----------
    address
        The worker's dask address (``tcp://HOST:PORT``).
    host
        Its host name.
    slot
        Its slot, named as the worker (``FLARE_EVAL_SLOT``, :func:`~flare_eval.runner.fleet.worker_slot`).
    cpu_model
        The model name of its cores (:func:`cpu_model`).
    """

    address: str
    host: str
    slot: Slot
    cpu_model: str

    @property
    def identity(self) -> tuple[str, int, str]:
        """``(CPU model, number of cores, GPU model or "no GPU")``: what makes slots alike."""
        gpu = self.slot.gpu
        gpu_name = "no GPU" if gpu is None else (gpu.name or f"GPU {gpu.device_id}")
        return self.cpu_model, len(self.slot.cpus), gpu_name


def cpu_model(cpus: frozenset[int], *, cpuinfo: str | None = None) -> str:
    """The model name of the cores ``cpus`` (``/proc/cpuinfo``), ``" + "``-joined if they differ.

    Hybrid CPUs have cores of two kinds: the model is read per core. Where ``/proc/cpuinfo``
    says nothing (not Linux), :func:`platform.processor` names the CPU.

    Examples
    --------
    >>> text = "processor\\t: 0\\nmodel name\\t: A\\n\\nprocessor\\t: 1\\nmodel name\\t: B\\n"
    >>> cpu_model(frozenset({1}), cpuinfo=text)
    'B'
    """
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            cpuinfo = ""
    models: dict[int, str] = {}
    core = None
    for line in cpuinfo.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor" and value.isdigit():
            core = int(value)
        elif key == "model name" and core is not None:
            models[core] = value
    names = sorted({models[c] for c in cpus if c in models})
    return " + ".join(names) or platform.processor() or platform.machine() or "unknown CPU"


def _describe(dask_worker: Any) -> dict[str, Any]:
    """What a worker says about itself (run there by :func:`slot_workers`)."""
    from flare_eval.runner.fleet import worker_slot

    slot = worker_slot(str(dask_worker.name))
    return {"host": socket.gethostname(), "slot": slot, "cpu_model": cpu_model(slot.cpus)}


def slot_workers(client: Any) -> list[SlotWorker]:
    """Every slot worker of the cluster of ``client`` (those with the resource ``SLOT``), by name.

    Raises
    ------
    ConfigError
        The cluster has no slot worker, or a worker's ``FLARE_EVAL_SLOT`` is wrong.
    """
    from flare_eval.runner.fleet import SLOT_RESOURCE

    info = client.scheduler_info(n_workers=-1)["workers"]
    addresses = sorted(a for a, w in info.items() if w.get("resources", {}).get(SLOT_RESOURCE))
    if not addresses:
        raise ConfigError(
            f"the dask cluster has no slot worker ({len(info)} worker(s), none with the "
            f"resource {SLOT_RESOURCE})",
            hint="start each worker as: FLARE_EVAL_SLOT=0:0-7 dask worker ADDRESS --nthreads 1 "
                 "--resources SLOT=1 (docs/scale-out.md)")
    described = client.run(_describe, workers=addresses)
    workers = [SlotWorker(address, d["host"], d["slot"], d["cpu_model"])
               for address, d in described.items()]
    return sorted(workers, key=lambda w: w.slot.name)


def place_teams(teams: Sequence[tuple[str, int]], workers: Sequence[SlotWorker], *,
                ran_on: Mapping[str, set[str]]) -> dict[str, list[SlotWorker]]:
    """The slots each team's cases may run on: all of one identity.

    Parameters
    ----------
    teams
        ``(team, cases left to run)`` in order.
    workers
        The cluster's slot workers (:func:`slot_workers`).
    ran_on
        Per team, the slots (worker names) its finished cases ran on: a resumed team keeps
        their identity.

    Returns
    -------
    dict
        Per team, the workers of one identity. A team that has not run yet goes to the
        identity whose slots have the least work per slot so far (teams in order; ties to
        the identity with more slots, then by name), so that the cluster is used evenly.

    Raises
    ------
    ConfigError
        A team's finished cases ran on slots none of which is in the cluster now, or on
        slots of different identities.

    Examples
    --------
    >>> from flare_eval.runner.slots import Slot
    >>> ws = [SlotWorker(f"tcp://h:{k}", "h", Slot(f"w{k}", frozenset({k})), m)
    ...       for k, m in enumerate(["A", "A", "B"])]
    >>> placed = place_teams([("t1", 4), ("t2", 4), ("t3", 4)], ws, ran_on={})
    >>> {t: [w.slot.name for w in p] for t, p in placed.items()}
    {'t1': ['w0', 'w1'], 't2': ['w2'], 't3': ['w0', 'w1']}
    """
    groups: dict[tuple[str, int, str], list[SlotWorker]] = {}
    for worker in workers:
        groups.setdefault(worker.identity, []).append(worker)
    by_name = {w.slot.name: w for w in workers}
    load = dict.fromkeys(groups, 0)
    placed: dict[str, list[SlotWorker]] = {}
    for team, n_cases in teams:
        known = {by_name[name].identity for name in ran_on.get(team, set()) if name in by_name}
        if len(known) > 1:
            raise ConfigError(f"team {team}: its finished cases ran on slots of different "
                              f"hardware ({sorted(ran_on[team])})",
                              hint="its timings are not comparable: rerun the team in a new --out")
        if ran_on.get(team) and not known:
            raise ConfigError(
                f"team {team}: its finished cases ran on slots {sorted(ran_on[team])}, none of "
                f"which is in the cluster now (slots: {sorted(by_name)})",
                hint="start those workers again under the same --name, so that the team's "
                     "cases run on the same hardware")
        identity = next(iter(known)) if known else min(
            groups, key=lambda i: (load[i] / len(groups[i]), -len(groups[i]), i))
        load[identity] += n_cases
        placed[team] = groups[identity]
    return placed
