"""The slots of a cluster: each slot worker's host, cores, GPU and CPU model.

A slot worker (:mod:`flare_eval.runner.fleet`) is one slot of its host: :func:`slot_workers`
asks every worker of a cluster what it is (host, cores, GPU, CPU model), for the
calibration (:mod:`flare_eval.runner.calibrate`) to measure and check them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flare_eval.errors import ConfigError
from flare_eval.runner.slots import Slot

__all__ = ["SlotWorker", "cpu_model", "slot_workers"]

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
