"""Resource sampling during a container run: GPU memory through NVML, CPU and RAM through psutil.

A :class:`ResourceSampler` runs on its own thread and takes one sample per period on absolute
deadlines ``t0 + k * period_s``, so a slow NVML query delays one sample but never shifts the
later ones (the official harness slept 0.1 s *after* each query and drifted). Every sample is
timestamped with the monotonic clock. The GPU value is the official one: device-wide used
memory of the chosen GPU, ``total - free`` in MiB, no baseline subtracted. Optionally the
memory of the container's own processes is summed as well (NVML reports host PIDs; they are
matched against the process tree of the container's first process, so the runner must see the
host's PID namespace, as it does when it runs on the host beside dockerd).

Without a GPU index, without the NVML library or without a driver the sampler still records
CPU and RAM; :attr:`ResourceSampler.gpu_warning` says why the GPU lists are absent.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flare_eval.errors import RunnerError
from flare_eval.runner.efficiency import OFFICIAL_PERIOD_S

__all__ = ["Samples", "ResourceSampler", "GpuUnavailableWarning", "check_gpu", "process_tree_pids"]

_MIB = 1024.0 * 1024.0


class GpuUnavailableWarning(UserWarning):
    """No GPU memory is sampled: no GPU index, no NVML library or no driver."""


@dataclass(frozen=True)
class Samples:
    """What one sampling session recorded; every list has one entry per sample.

    Attributes
    ----------
    t_s
        Monotonic time at which each sample's queries began, in seconds since the session
        started.
    gpu_memory_mib
        Device-wide used GPU memory (``total - free``) in MiB; ``None`` when not sampled.
    gpu_process_mib
        GPU memory of the watched process tree in MiB; ``None`` when not sampled.
    cpu_list
        ``[user, system, idle]`` percentages of all host CPUs since the previous sample.
    ram_mib
        Host used RAM (``psutil.virtual_memory().used``) in MiB.
    late_samples
        Deadlines missed because a query took longer than a period (those samples are
        skipped, not bunched up).
    """

    t_s: tuple[float, ...]
    gpu_memory_mib: tuple[float, ...] | None
    gpu_process_mib: tuple[float, ...] | None
    cpu_list: tuple[tuple[float, float, float], ...]
    ram_mib: tuple[float, ...]
    late_samples: int = 0


def process_tree_pids(root_pid: int) -> set[int]:
    """Host PIDs of ``root_pid`` and all its descendants; empty when it has exited."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        return {root_pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


def check_gpu(index: int, nvml: Any | None = None) -> str:
    """The name of GPU ``index``, checked before any case runs.

    Without this, every case of a run asked to use a GPU the host lacks would end as ``error``
    (docker cannot grant the device) after the whole batch was tried.

    Raises
    ------
    ConfigError
        No NVML bindings, no driver, or no GPU of that index on this host.
    """
    from flare_eval.errors import ConfigError

    hint = "run without --gpu (no GPU memory is sampled then), or on the GPU host"
    try:
        nvml = nvml if nvml is not None else _load_nvml()
    except ImportError:
        raise ConfigError(f"--gpu {index}: the NVML bindings are not installed",
                          hint="pip install nvidia-ml-py") from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        raise ConfigError(f"--gpu {index}: no NVIDIA driver answers on this host ({err})",
                          hint=hint) from None
    try:
        count = nvml.nvmlDeviceGetCount()
        if index >= count:
            raise ConfigError(f"--gpu {index}: this host has {count} GPU(s), indices 0..{count - 1}",
                              hint="nvidia-smi -L lists them")
        name = nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(index))
        return name.decode() if isinstance(name, bytes) else str(name)
    finally:
        nvml.nvmlShutdown()


def _load_nvml() -> Any:
    import pynvml  # the module of the nvidia-ml-py distribution

    return pynvml


class ResourceSampler:
    """Samples GPU memory, CPU and RAM every ``period_s`` on a background thread.

    Parameters
    ----------
    gpu_index
        NVML index of the evaluation GPU, or ``None`` to sample no GPU.
    gpu_uuid
        The same GPU's NVML UUID (``GPU-...``) where known: the GPU is then opened by UUID,
        which names one device whatever the enumeration order, as the engine is given it.
    period_s
        Sampling period in seconds (0.1 as the official harness).
    per_process
        Also sum the GPU memory of the watched process tree (see :meth:`watch_pid`).
    nvml
        An object with the ``pynvml`` functions used here (``nvmlInit``, ``nvmlShutdown``,
        ``nvmlDeviceGetHandleByIndex``, ``nvmlDeviceGetHandleByUUID``, ``nvmlDeviceGetMemoryInfo``,
        ``nvmlDeviceGetComputeRunningProcesses``, ``NVMLError``); ``None`` imports
        ``pynvml`` from nvidia-ml-py. Tests inject a scripted fake.
    clock
        Monotonic clock in seconds.
    cpu_ram
        Returns ``(cpu_times, ram_mib)`` where ``cpu_times`` is ``(user, system, idle)``
        cumulative seconds; ``None`` uses psutil.

    Notes
    -----
    Use it as a context manager (NVML is initialised once) and call :meth:`start` and
    :meth:`stop` around each case. CPU percentages are ``100 * delta / total`` of the
    cumulative times between samples (the official code divided by ``total + 0.1``, a bias
    of a few percent that is not reproduced).
    """

    def __init__(
        self,
        gpu_index: int | None,
        *,
        gpu_uuid: str | None = None,
        period_s: float = OFFICIAL_PERIOD_S,
        per_process: bool = False,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_ram: Callable[[], tuple[tuple[float, float, float], float]] | None = None,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.gpu_index = gpu_index
        self.gpu_uuid = gpu_uuid
        self.period_s = period_s
        self.per_process = per_process
        self._nvml = nvml
        self._clock = clock
        self._cpu_ram = cpu_ram or _psutil_cpu_ram
        self._handle: Any = None
        #: Why GPU memory is not sampled, or ``None`` when it is.
        self.gpu_warning: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._watch_pid: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._t: list[float] = []
        self._gpu: list[float] = []
        self._gpu_proc: list[float] = []
        self._cpu: list[tuple[float, float, float]] = []
        self._ram: list[float] = []
        self._late = 0
        self._failure: Exception | None = None

    # -- NVML session -------------------------------------------------------------------

    def open(self) -> ResourceSampler:
        """Initialise NVML for the chosen GPU; on failure warn once and sample no GPU."""
        if self.gpu_index is None:
            self.gpu_warning = "no GPU index given: GPU memory is not sampled"
            return self
        try:
            nvml = self._nvml if self._nvml is not None else _load_nvml()
        except ImportError:
            self._disable_gpu("the NVML bindings are not installed (pip install nvidia-ml-py)")
            return self
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as err:
            self._disable_gpu(f"NVML cannot start ({type(err).__name__}: {err}); no driver or "
                              "no NVIDIA library on this host")
            return self
        try:
            self._handle = (nvml.nvmlDeviceGetHandleByUUID(self.gpu_uuid) if self.gpu_uuid
                            else nvml.nvmlDeviceGetHandleByIndex(self.gpu_index))
        except nvml.NVMLError as err:
            nvml.nvmlShutdown()
            named = f"UUID {self.gpu_uuid}" if self.gpu_uuid else f"index {self.gpu_index}"
            self._disable_gpu(f"GPU {named} is not usable ({err})")
        return self

    def _disable_gpu(self, reason: str) -> None:
        self.gpu_warning = f"{reason}: GPU memory is not sampled, GPU columns stay empty"
        self._handle = None
        warnings.warn(self.gpu_warning, GpuUnavailableWarning, stacklevel=3)

    def close(self) -> None:
        """Stop a running session and shut NVML down."""
        if self._thread is not None:
            self.stop()
        if self._handle is not None:
            self._nvml.nvmlShutdown()
            self._handle = None

    def __enter__(self) -> ResourceSampler:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def samples_gpu(self) -> bool:
        """Whether GPU memory is being sampled."""
        return self._handle is not None

    # -- one sampling session per case --------------------------------------------------

    def start(self) -> None:
        """Start sampling (first sample now) on a new thread."""
        if self._thread is not None:
            raise RuntimeError("ResourceSampler.start called twice without stop")
        self._reset()
        self._watch_pid = None
        self._stop.clear()
        self._prev_cpu = self._cpu_ram()[0]
        self._thread = threading.Thread(target=self._loop, name="flare-eval-sampler", daemon=True)
        self._thread.start()

    def watch_pid(self, pid: int | None) -> None:
        """Sum per-process GPU memory over this PID's process tree from now on."""
        self._watch_pid = pid

    def stop(self) -> Samples:
        """Stop sampling and return what was recorded since :meth:`start`.

        Raises
        ------
        RunnerError
            When a query failed on the sampling thread (e.g. the GPU fell off the bus).
        """
        if self._thread is None:
            raise RuntimeError("ResourceSampler.stop called before start")
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RunnerError(
                f"resource sampling failed during the case ({type(failure).__name__}: {failure})",
                hint="check the GPU with nvidia-smi; the run resumes from this case",
            ) from failure
        gpu = tuple(self._gpu) if self.samples_gpu else None
        gpu_proc = tuple(self._gpu_proc) if self.samples_gpu and self.per_process else None
        return Samples(tuple(self._t), gpu, gpu_proc, tuple(self._cpu), tuple(self._ram), self._late)

    def _loop(self) -> None:
        try:
            self._schedule()
        except Exception as err:  # any failure on this thread is re-raised by stop()
            self._failure = err

    def _schedule(self) -> None:
        t0 = self._clock()
        k = 0
        while True:
            self._sample(self._clock() - t0)
            k += 1
            deadline = t0 + k * self.period_s
            now = self._clock()
            if now > deadline:
                # Skip the deadlines already missed instead of sampling in a burst to catch up.
                missed = int((now - deadline) // self.period_s) + 1
                self._late += missed
                k += missed
                deadline = t0 + k * self.period_s
            if self._stop.wait(max(0.0, deadline - self._clock())):
                return

    def _sample(self, t_s: float) -> None:
        cpu_times, ram_mib = self._cpu_ram()
        delta = [now - before for now, before in zip(cpu_times, self._prev_cpu)]
        self._prev_cpu = cpu_times
        total = sum(delta)
        cpu = tuple(100.0 * d / total for d in delta) if total > 0 else (0.0, 0.0, 100.0)
        if self._handle is not None:
            info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            self._gpu.append((info.total - info.free) / _MIB)
            if self.per_process:
                self._gpu_proc.append(self._process_mib())
        self._t.append(t_s)
        self._cpu.append(cpu)  # type: ignore[arg-type]
        self._ram.append(ram_mib)

    def _process_mib(self) -> float:
        if self._watch_pid is None:
            return 0.0
        pids = process_tree_pids(self._watch_pid)
        used = 0
        for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
            # usedGpuMemory is None where the driver hides it (e.g. some Windows/WSL setups).
            if proc.pid in pids and proc.usedGpuMemory is not None:
                used += proc.usedGpuMemory
        return used / _MIB


def _psutil_cpu_ram() -> tuple[tuple[float, float, float], float]:
    import psutil

    times = psutil.cpu_times()
    return (times.user, times.system, times.idle), psutil.virtual_memory().used / _MIB
