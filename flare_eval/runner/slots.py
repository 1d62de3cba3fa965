"""Slots: the share of a host one case runs on (a fixed set of CPU cores, at most one GPU).

Timings are only comparable when every case runs alone on the same hardware. A host with
several GPUs (or many cores) is cut into *slots*, and at most one container runs in a slot at a
time, pinned to its cores (docker ``cpuset_cpus``) and given its GPU by UUID; the GPU sampled
is the slot's own. ``--slots`` takes:

``N``
    ``N`` slots of equal numbers of the cores this process may use (``os.sched_getaffinity``),
    contiguous in core order; cores that do not divide evenly stay unused so that every slot
    is alike. Where NVML finds GPUs, slot ``k`` gets GPU ``k`` (``N`` must not exceed them).
``auto``
    One slot per NVML GPU, the cores split among them as for ``N``; refused on a CPU-only host.
explicit
    Comma-separated ``GPU:CORES`` items, ``GPU`` an NVML index, a UUID (``GPU-...``) or
    ``cpu`` (no GPU), ``CORES`` a core or a range ``A-B``; an item without a colon adds cores
    to the slot before it: ``0:0-3,1:4-7`` (two GPU slots of four cores), ``cpu:0,cpu:1`` (two
    CPU-only slots), ``0:0-3,8-11`` (one slot of eight cores).

Every slot also has a share of the host's memory (:func:`memory_share`: the RAM in proportion
to the slot's cores, so host RAM / N for ``N`` slots that split the cores): a container's
memory limit defaults to it and an explicit ``--memory`` over it is refused, so that one slot's
case cannot take the memory its neighbours' cases run in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flare_eval.errors import ConfigError

__all__ = ["Gpu", "Slot", "cpuset_text", "default_slot", "gpu_inventory",
           "host_cpus", "memory_share", "parse_slots"]

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as NVML names it.

    Attributes
    ----------
    index
        NVML index (PCI bus order, as ``docker --gpus device=N``).
    uuid, name, driver
        NVML's UUID (``GPU-...``), product name and driver version; ``None`` when NVML cannot
        tell (a GPU given by index on a host where NVML does not start).
    """

    index: int
    uuid: str | None = None
    name: str | None = None
    driver: str | None = None

    @property
    def device_id(self) -> str:
        """What the container engine is asked for: the UUID where known, else the index."""
        return self.uuid or str(self.index)


@dataclass(frozen=True)
class Slot:
    """Where one case runs: a set of cores, at most one GPU (and a share of the memory,
    :func:`memory_share`).

    Attributes
    ----------
    name
        Position of the slot in ``--slots`` (``"0"``, ``"1"``...), or ``"host"`` for the
        default, unpinned slot.
    cpus
        Cores the case may run on.
    gpu
        The slot's GPU, or ``None`` for a CPU-only slot.
    pinned
        Whether containers are pinned to ``cpus`` (the default slot is not: it runs as
        without slots, on whatever the engine gives).
    """

    name: str
    cpus: frozenset[int]
    gpu: Gpu | None = None
    pinned: bool = True

    @property
    def cpuset(self) -> str:
        """The cores in cpuset notation (``0-3,8``), as docker's ``cpuset_cpus`` takes them."""
        return cpuset_text(self.cpus)

    def describe(self) -> dict[str, Any]:
        """Plain data of the slot for ``runner.json`` and the manifest (host-independent
        names of the GPU left out: a UUID says which GPU it is)."""
        return {"name": self.name, "cpuset": self.cpuset, "pinned": self.pinned,
                "gpu_index": None if self.gpu is None else self.gpu.index,
                "gpu_uuid": None if self.gpu is None else self.gpu.uuid}


def cpuset_text(cpus: frozenset[int] | set[int]) -> str:
    """Cores as ranges: ``{0, 1, 2, 3, 8}`` -> ``"0-3,8"``.

    Examples
    --------
    >>> cpuset_text({0, 1, 2, 3, 8})
    '0-3,8'
    """
    parts: list[str] = []
    ordered = sorted(cpus)
    start = previous = None
    for cpu in [*ordered, None]:
        if cpu is not None and previous is not None and cpu == previous + 1:
            previous = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = cpu
    return ",".join(parts)


def host_cpus() -> frozenset[int]:
    """The cores this process may run on (its affinity, which a cgroup or taskset narrows)."""
    return frozenset(os.sched_getaffinity(0))


def gpu_inventory(nvml: Any = None) -> tuple[list[Gpu], str | None]:
    """Every GPU NVML sees, with UUID, name and driver; and why there are none, if so.

    Parameters
    ----------
    nvml
        NVML stand-in for tests (``nvmlInit``, ``nvmlShutdown``, ``nvmlDeviceGetCount``,
        ``nvmlDeviceGetHandleByIndex``, ``nvmlDeviceGetUUID``, ``nvmlDeviceGetName``,
        ``nvmlSystemGetDriverVersion``, ``NVMLError``); ``None`` imports ``pynvml``.

    Returns
    -------
    gpus, reason
        The GPUs in index order, and ``None`` or the reason the list is empty.
    """
    if nvml is None:
        try:
            import pynvml as nvml  # the module of the nvidia-ml-py distribution
        except ImportError:
            return [], "the NVML bindings are not installed (pip install nvidia-ml-py)"
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        return [], f"NVML cannot start ({type(err).__name__}: {err})"
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(Gpu(index, _text(nvml.nvmlDeviceGetUUID(handle)),
                            _text(nvml.nvmlDeviceGetName(handle)), driver))
    except nvml.NVMLError as err:
        return [], f"NVML cannot list the GPUs ({type(err).__name__}: {err})"
    finally:
        nvml.nvmlShutdown()
    return gpus, None if gpus else "NVML runs but finds no GPU"


def _text(value: str | bytes) -> str:
    # Older NVML bindings return bytes.
    return value.decode() if isinstance(value, bytes) else value


def default_slot(gpu_index: int | None, *, nvml: Any = None,
                 cpus: frozenset[int] | None = None) -> Slot:
    """The slot of a run without ``--slots``: the whole host, unpinned, ``--gpu`` if given.

    The GPU's UUID, name and driver are looked up where NVML answers, to be recorded.
    """
    gpu = None
    if gpu_index is not None:
        found = {g.index: g for g in gpu_inventory(nvml)[0]}
        gpu = found.get(gpu_index, Gpu(gpu_index))
    return Slot("host", host_cpus() if cpus is None else cpus, gpu, pinned=False)


def memory_share(host_bytes: int, host_cores: int, cpus: frozenset[int] | None) -> int:
    """The bytes of a host's RAM that a case on the cores ``cpus`` may use: in proportion
    to its cores out of the host's ``host_cores`` (all of it for an unpinned run, ``None``).

    The one definition of a slot's memory share: the runner's default memory limit and the
    bound on ``--memory``, for docker and the local backend, here and on a cluster's workers
    (a worker knows its own cores and its host's, not how its host was cut).

    Examples
    --------
    >>> memory_share(32 * 2**30, 16, frozenset(range(8))) / 2**30  # 0:0-7 of 0:0-7,1:8-15
    16.0
    >>> memory_share(32 * 2**30, 16, None) / 2**30
    32.0
    """
    if cpus is None:
        return host_bytes
    return host_bytes * min(len(cpus), host_cores) // max(host_cores, 1)


def parse_slots(spec: str, *, cpus: frozenset[int] | None = None, nvml: Any = None,
                gpus: Sequence[Gpu] | None = None) -> list[Slot]:
    """The slots of a ``--slots`` value (forms in the module docs).

    Parameters
    ----------
    spec
        ``N``, ``auto`` or the explicit ``GPU:CORES,...`` form.
    cpus
        Cores of this host; default :func:`host_cpus`.
    nvml
        NVML stand-in for tests (see :func:`gpu_inventory`).
    gpus
        The host's GPUs instead of asking NVML.

    Returns
    -------
    list of Slot
        In the order given; names ``"0"``, ``"1"``...

    Raises
    ------
    ConfigError
        A malformed item, a core not on this host or in two slots, a GPU that is not there or
        in two slots, more slots than cores, ``auto`` on a host without GPUs. The message
        names the slot and what is wrong.

    Examples
    --------
    >>> [s.cpuset for s in parse_slots("cpu:0,cpu:1-3", cpus=frozenset(range(4)), gpus=[])]
    ['0', '1-3']
    """
    host = host_cpus() if cpus is None else frozenset(cpus)
    text = spec.strip()
    if gpus is None:
        inventory, reason = gpu_inventory(nvml)
    else:
        inventory, reason = list(gpus), None if gpus else "no GPU was given"
    if text == "auto":
        if not inventory:
            raise ConfigError(
                f"--slots auto: makes one slot per GPU, but this host has none ({reason})",
                hint="on a CPU-only host give --slots N or CPU-only slots such as cpu:0,cpu:1")
        slots = _even(text, len(inventory), host, inventory)
    elif text.isdigit():
        n = int(text)
        if n < 1:
            raise ConfigError(f"--slots {spec}: expected 1 or more slots, got {n}")
        if inventory and n > len(inventory):
            raise ConfigError(
                f"--slots {spec}: {n} slots but this host has {len(inventory)} GPU(s) and a slot "
                "holds one GPU", hint="give at most that many slots, or CPU-only slots cpu:CORES")
        slots = _even(text, n, host, inventory[:n])
    else:
        slots = _explicit(text, host, inventory, reason)
    return slots


def _even(spec: str, n: int, host: frozenset[int], gpus: Sequence[Gpu]) -> list[Slot]:
    ordered = sorted(host)
    if n > len(ordered):
        raise ConfigError(
            f"--slots {spec}: {n} slots but this process may use only {len(ordered)} core(s) "
            f"({cpuset_text(host)}); a slot needs at least one core of its own")
    size = len(ordered) // n
    return [Slot(str(k), frozenset(ordered[k * size:(k + 1) * size]),
                 gpus[k] if k < len(gpus) else None) for k in range(n)]


def _explicit(spec: str, host: frozenset[int], inventory: Sequence[Gpu],
              reason: str | None) -> list[Slot]:
    items: list[tuple[str, str, set[int]]] = []  # (item text, gpu part, cores)
    for token in (t.strip() for t in spec.split(",")):
        where = f"--slots {spec}: slot {len(items)}"
        if ":" in token:
            gpu_part, _, cores = token.partition(":")
            items.append((token, gpu_part.strip(), _cores(f"{where} ({token})", cores.strip(), host)))
        elif items:
            last = items[-1]
            where = f"--slots {spec}: slot {len(items) - 1}"
            items[-1] = (f"{last[0]},{token}", last[1],
                         last[2] | _cores(f"{where} ({last[0]},{token})", token, host))
        else:
            raise ConfigError(
                f"--slots {spec}: expected N, auto or GPU:CORES items, found {token!r}",
                hint="e.g. 0:0-3,1:4-7 (GPU 0 with cores 0-3, GPU 1 with cores 4-7) or "
                "cpu:0,cpu:1 (two CPU-only slots)")
    by_index = {g.index: g for g in inventory}
    by_uuid = {g.uuid: g for g in inventory if g.uuid}
    slots: list[Slot] = []
    for k, (item, gpu_part, cores) in enumerate(items):
        where = f"--slots {spec}: slot {k} ({item})"
        for j, other in enumerate(slots):
            shared = cores & other.cpus
            if shared:
                raise ConfigError(f"{where} shares core(s) {cpuset_text(shared)} with slot {j}",
                                  hint="every slot needs cores of its own")
        gpu = None
        if gpu_part != "cpu":
            gpu = by_uuid.get(gpu_part) if not gpu_part.isdigit() else by_index.get(int(gpu_part))
            if gpu is None:
                seen = ", ".join(f"{g.index} ({g.uuid})" for g in inventory) or reason
                raise ConfigError(f"{where}: no GPU {gpu_part!r} on this host (NVML: {seen})",
                                  hint="name a GPU by NVML index or UUID, or use cpu:CORES")
            for j, other in enumerate(slots):
                if other.gpu == gpu:
                    raise ConfigError(f"{where}: GPU {gpu_part} is slot {j}'s already",
                                      hint="a slot holds one GPU of its own")
        slots.append(Slot(str(k), frozenset(cores), gpu))
    return slots


def _cores(where: str, text: str, host: frozenset[int]) -> set[int]:
    found = _RANGE.match(text)
    if found is None:
        raise ConfigError(f"{where}: expected a core or a range A-B of cores, found {text!r}")
    first = int(found.group(1))
    last = int(found.group(2)) if found.group(2) is not None else first
    if last < first:
        raise ConfigError(f"{where}: the range {text} runs backwards")
    cores = set(range(first, last + 1))
    missing = cores - host
    if missing:
        raise ConfigError(f"{where}: core(s) {cpuset_text(missing)} not on this host "
                          f"(this process may use {cpuset_text(host)})")
    return cores
