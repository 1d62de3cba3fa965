"""The sampler against a scripted fake NVML: period, drift, late samples, units, no-GPU paths."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from flare_eval.errors import RunnerError
from flare_eval.runner.efficiency import tolerance_auc
from flare_eval.runner.sampler import GpuUnavailableWarning, ResourceSampler
from tests.conftest import require_module

# The sampler reads CPU and RAM through psutil (the "runner" extra).
require_module("psutil")


def _sample_for(sampler: ResourceSampler, seconds: float):
    sampler.start()
    time.sleep(seconds)
    return sampler.stop()


def test_deadlines_hold_the_period_despite_slow_queries(FakeNVML):
    # Each query takes 40 ms. Sleeping 0.1 s after each query (the official loop) would put
    # sample k at k * 0.14 s: sample 7 at 0.98 s instead of 0.7 s. Deadlines keep k * 0.1.
    nvml = FakeNVML(query_s=0.04)
    with ResourceSampler(0, nvml=nvml) as sampler:
        samples = _sample_for(sampler, 1.02)
    t = np.asarray(samples.t_s)
    assert 10 <= t.size <= 11
    # t is read as each query starts: at its deadline, plus scheduling jitter only.
    offsets = t - 0.1 * np.arange(t.size)
    assert np.all(offsets >= 0.0)
    assert np.all(offsets < 0.035)
    # no cumulative drift: the last offset is no larger than the first beyond jitter
    assert abs(offsets[-1] - offsets[1]) < 0.03
    assert samples.late_samples == 0
    assert nvml.shutdown


def test_a_query_longer_than_a_period_skips_deadlines_instead_of_bunching(FakeNVML):
    # The third query (started at 0.2 s) takes 0.25 s: it ends at 0.45 s, past the deadlines
    # 0.3 and 0.4 s, which are skipped; the next sample is at the 0.5 s deadline.
    nvml = FakeNVML(slow_calls=(0.0, 0.0, 0.25))
    with ResourceSampler(0, nvml=nvml) as sampler:
        samples = _sample_for(sampler, 0.93)
    t = np.asarray(samples.t_s)
    assert samples.late_samples == 2
    np.testing.assert_allclose(t[:4], [0.0, 0.1, 0.2, 0.5], atol=0.03)
    assert np.all(np.diff(t[3:]) > 0.07)


def test_gpu_values_are_total_minus_free_in_mib_and_the_area_follows_the_script(FakeNVML):
    # 4096 MiB baseline, 5120 MiB during [0.3, 0.6) s: over the 4096 MiB tolerance the area
    # is 1024 MiB * 0.3 s = 307.2 MiB*s, give or take one 0.1 s sample at each edge.
    nvml = FakeNVML(used_mib=lambda t: 5120.0 if 0.3 <= t < 0.6 else 4096.0)
    with ResourceSampler(0, nvml=nvml) as sampler:
        samples = _sample_for(sampler, 0.95)
    assert set(samples.gpu_memory_mib) <= {4096.0, 5120.0}
    assert samples.gpu_memory_mib.count(5120.0) in (2, 3, 4)
    area = tolerance_auc(samples.t_s, samples.gpu_memory_mib, tolerance=4096)
    assert 307.2 - 102.4 - 10 <= area <= 307.2 + 102.4 + 10
    assert len(samples.cpu_list) == len(samples.ram_mib) == len(samples.t_s)
    assert all(abs(sum(c) - 100.0) < 1e-6 for c in samples.cpu_list[1:])
    assert samples.gpu_process_mib is None


def test_per_process_memory_sums_only_the_watched_process_tree(FakeNVML):
    # Our PID uses 512 MiB, PID 1 (not ours) 999 MiB: only 512 counts once watched.
    nvml = FakeNVML(processes=((os.getpid(), 512), (1, 999)))
    with ResourceSampler(0, nvml=nvml, per_process=True) as sampler:
        sampler.start()
        time.sleep(0.15)
        sampler.watch_pid(os.getpid())
        time.sleep(0.25)
        samples = sampler.stop()
    assert samples.gpu_process_mib[0] == 0.0
    assert samples.gpu_process_mib[-1] == 512.0
    assert set(samples.gpu_process_mib) <= {0.0, 512.0}


def test_missing_library_warns_and_samples_cpu_and_ram_only(FakeNVML):
    class NoLibrary(FakeNVML):
        def nvmlInit(self):
            raise self.NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    with pytest.warns(GpuUnavailableWarning, match="NVML cannot start.*LibraryNotFound"):
        sampler = ResourceSampler(0, nvml=NoLibrary()).open()
    samples = _sample_for(sampler, 0.25)
    sampler.close()
    assert samples.gpu_memory_mib is None
    assert len(samples.ram_mib) >= 2 and samples.ram_mib[0] > 0


def test_unknown_gpu_index_warns(FakeNVML):
    with pytest.warns(GpuUnavailableWarning, match="GPU index 3 is not usable"):
        sampler = ResourceSampler(3, nvml=FakeNVML()).open()
    assert not sampler.samples_gpu


def test_real_nvml_path_without_a_gpu_warns_or_samples():
    """On a host without NVIDIA library or driver the real pynvml path warns and goes on."""
    pytest.importorskip("pynvml")
    import pynvml

    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        has_gpu = True
    except pynvml.NVMLError:
        has_gpu = False
    if has_gpu:
        with ResourceSampler(0) as sampler:
            samples = _sample_for(sampler, 0.25)
        assert samples.gpu_memory_mib and samples.gpu_memory_mib[0] > 0
    else:
        with pytest.warns(GpuUnavailableWarning, match="NVML cannot start"):
            sampler = ResourceSampler(0).open()
        assert sampler.gpu_warning is not None and not sampler.samples_gpu


def test_no_gpu_index_samples_no_gpu_without_warning():
    with ResourceSampler(None) as sampler:
        samples = _sample_for(sampler, 0.15)
    assert samples.gpu_memory_mib is None and "no GPU index" in sampler.gpu_warning


def test_a_failing_query_surfaces_as_a_runner_error_on_stop(FakeNVML):
    class FallsOffTheBus(FakeNVML):
        lost = True

        def nvmlDeviceGetMemoryInfo(self, handle):
            if self.lost and self.calls >= 2:
                raise self.NVMLError("GPU is lost")
            return super().nvmlDeviceGetMemoryInfo(handle)

    nvml = FallsOffTheBus()
    with ResourceSampler(0, nvml=nvml) as sampler:
        sampler.start()
        time.sleep(0.35)
        with pytest.raises(RunnerError, match="sampling failed.*GPU is lost"):
            sampler.stop()
        # the failure is not carried over to the next case
        nvml.lost = False
        sampler.start()
        time.sleep(0.15)
        assert len(sampler.stop().gpu_memory_mib) >= 2
