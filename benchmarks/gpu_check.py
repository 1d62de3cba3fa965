"""Check the real NVML sampling path with a torch CUDA workload (run it on a GPU machine).

    python benchmarks/gpu_check.py [--gpu NVML_INDEX] [--gib 2] [--hold-s 2]

Allocates and fills ``--gib`` GiB on the GPU for ``--hold-s`` seconds while
:class:`flare_eval.runner.ResourceSampler` samples device-wide and per-process memory every
0.1 s, and checks that the sampler saw it. The anchor, run in the same script on a second
thread, is the official harness's loop (query, then ``sleep(0.1)``): the script prints the
ratio of its effective period and sample count to ours. Exits 0 with a "no GPU" message where
torch, CUDA or NVML is missing; 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time


def _no_gpu(reason: str) -> int:
    print(f"no GPU: {reason}; nothing to check (run this on a machine with an NVIDIA GPU)")
    return 0


def _official_loop(nvml, handle, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """The anchor: the official sampler's timing (query, then sleep 0.1 s)."""
    while not stop.is_set():
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
        out.append((time.monotonic(), (info.total - info.free) / 2**20))
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=0, help="NVML index (PCI bus order)")
    parser.add_argument("--gib", type=float, default=2.0, help="GiB to allocate")
    parser.add_argument("--hold-s", type=float, default=2.0, help="seconds to hold it")
    args = parser.parse_args()

    # CUDA's default order is "fastest first"; NVML's is the PCI bus: align them.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    try:
        import torch
    except ImportError:
        return _no_gpu("torch is not installed")
    if not torch.cuda.is_available():
        return _no_gpu("torch sees no CUDA device")
    try:
        import pynvml

        pynvml.nvmlInit()
    except ImportError:
        return _no_gpu("nvidia-ml-py is not installed")
    except pynvml.NVMLError as err:
        return _no_gpu(f"NVML cannot start ({type(err).__name__}: {err})")

    import numpy as np

    from flare_eval.runner import ResourceSampler, official_auc, tolerance_auc, trapezoid_auc

    device = torch.device("cuda", args.gpu)
    torch.ones(1, device=device)  # create the CUDA context before the baseline
    torch.cuda.synchronize(device)
    handle = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
    print(f"GPU {args.gpu}: {pynvml.nvmlDeviceGetName(handle)}, torch {torch.__version__}")

    n_bytes = int(args.gib * 2**30)
    anchor: list[tuple[float, float]] = []
    stop = threading.Event()
    with ResourceSampler(args.gpu, per_process=True) as sampler:
        sampler.start()
        sampler.watch_pid(os.getpid())
        anchor_thread = threading.Thread(target=_official_loop, args=(pynvml, handle, stop, anchor))
        anchor_thread.start()
        time.sleep(0.5)
        block = torch.empty(n_bytes, dtype=torch.uint8, device=device)
        block.fill_(1)
        torch.cuda.synchronize(device)
        t_alloc = time.monotonic()
        time.sleep(args.hold_s)
        del block
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        t_free = time.monotonic()
        time.sleep(0.5)
        samples = sampler.stop()
        stop.set()
        anchor_thread.join()
    pynvml.nvmlShutdown()

    t = np.asarray(samples.t_s)
    gpu = np.asarray(samples.gpu_memory_mib)
    baseline = float(np.median(gpu[t < 0.4]))
    expected_mib = n_bytes / 2**20
    held_s = t_free - t_alloc
    over = tolerance_auc(samples.t_s, samples.gpu_memory_mib, tolerance=baseline + 1)
    periods = np.diff(t)
    drift_ms = 1000 * float(np.max(np.abs(t - 0.1 * np.round(t / 0.1))))
    anchor_t = np.asarray([a for a, _ in anchor])
    anchor_period = float(np.mean(np.diff(anchor_t)))
    print(f"samples: {t.size} over {t[-1]:.2f} s; period mean {periods.mean() * 1000:.1f} ms, "
          f"max {periods.max() * 1000:.1f} ms; largest offset from the 0.1 s grid {drift_ms:.1f} ms; "
          f"late samples {samples.late_samples}")
    print(f"device used: baseline {baseline:.0f} MiB, max {gpu.max():.0f} MiB "
          f"(+{gpu.max() - baseline:.0f}, allocated {expected_mib:.0f})")
    if samples.gpu_process_mib:
        print(f"this process (per-process NVML): max {max(samples.gpu_process_mib):.0f} MiB")
    print(f"AUC official {official_auc(gpu)} MiB*s, trapezoid {trapezoid_auc(t, gpu):.0f} MiB*s; "
          f"above baseline {over:.0f} MiB*s vs allocated x held {expected_mib * held_s:.0f} "
          f"(ratio {over / (expected_mib * held_s):.3f})")
    print(f"anchor (query then sleep 0.1 s): {len(anchor)} samples, mean period "
          f"{anchor_period * 1000:.1f} ms; ratio anchor/ours: period "
          f"{anchor_period / periods.mean():.3f}, samples {len(anchor) / t.size:.3f}")

    checks = {
        "saw the allocation": gpu.max() - baseline >= 0.95 * expected_mib,
        "area within 10 % of allocated x held": abs(over / (expected_mib * held_s) - 1) < 0.10,
        "period held (mean within 5 ms of 100 ms)": abs(periods.mean() - 0.1) < 0.005,
    }
    for name, ok in checks.items():
        print(f"check {name}: {'ok' if ok else 'FAILED'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
