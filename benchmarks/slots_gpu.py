"""The GPU path of slots, calibration and the fleet on one GPU machine, self-checking.

    python benchmarks/slots_gpu.py [WORK_DIR]      (or: sh benchmarks/slots_gpu.sh [WORK_DIR])

On a machine with an NVIDIA GPU (one is enough; made for one H200 and 16 cores, about 3
minutes, beside ``sh benchmarks/cascade_gpu.sh``), with torch (CUDA), nvidia-ml-py,
bubblewrap and flare-eval[all]:

1. UUID selection: the first GPU by its NVML UUID in ``--slots UUID:<half the cores>,cpu:<the
   other half>``, a GPU slot beside a CPU-only slot.
2. ``flare-eval calibrate`` on those slots: the GPU workload timed on the GPU slot only.
3. The reference cascade (local backend, ``--per-process-gpu``) on two full-size phantoms,
   one per slot: the GPU slot's case ran on CUDA and its GPU (by UUID and NVML index) was
   sampled, device-wide and for the case's own processes; the CPU slot's case saw no GPU and
   sampled none; each case pinned to its slot's cores.
4. ``benchmarks/gpu_check.py``: NVML sampling of a known torch allocation (period, area, the
   per-process figure).
5. The fleet: two ``dask worker`` slot workers (``FLARE_EVAL_SLOT=UUID:cores`` and
   ``cpu:cores``) and ``flare-eval calibrate --scheduler``: the GPU worker's GPU found by UUID on
   the worker and timed there.
6. Where the docker engine has the NVIDIA runtime and busybox is installed: the runner's docker
   backend on the same slots (``--gpus device=UUID``): the GPU slot's container sees its GPU's
   device node, the CPU slot's none.

Prints one ``PASS``, ``FAIL`` or ``SKIP`` line per check and the figures; exits 1 when a check
fails, 0 otherwise (also on a machine without a GPU: nothing to check, one ``SKIP`` line).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Most seconds any one step may take (a hung step is a FAIL, not a hung script).
STEP_TIMEOUT_S = 240
RESULTS: list[bool] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    """Print one PASS/FAIL line and remember it."""
    RESULTS.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{f' ({detail})' if detail else ''}", flush=True)
    return bool(ok)


def skip(name: str, why: str) -> None:
    print(f"SKIP {name}: {why}", flush=True)


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A step as a user runs it; its output is printed when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
                              env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired:
        print(f"  {' '.join(command)}: over {STEP_TIMEOUT_S} s", flush=True)
        return subprocess.CompletedProcess(command, 124, "", "")
    if done.returncode != 0:
        print(f"  {' '.join(command)}: exit {done.returncode}\n{done.stdout[-2000:]}"
              f"{done.stderr[-2000:]}", flush=True)
    return done


def gpu_slot_spec(gpu_uuid: str, cpus: frozenset[int]) -> str:
    """``--slots`` of one GPU slot (given by UUID) on the lower half of ``cpus`` and one
    CPU-only slot on the upper half (both halves alike in size)."""
    from flare_eval.runner.slots import cpuset_text

    ordered = sorted(cpus)
    half = len(ordered) // 2
    if half < 1:
        raise ValueError(f"two slots need two cores, this process may use {len(ordered)}")
    return (f"{gpu_uuid}:{cpuset_text(frozenset(ordered[:half]))},"
            f"cpu:{cpuset_text(frozenset(ordered[half:2 * half]))}")


def main(work: Path) -> int:
    import pandas as pd

    from flare_eval.runner.slots import gpu_inventory, host_cpus, parse_slots

    gpus, reason = gpu_inventory()
    if not gpus:
        skip("every check", f"no NVIDIA GPU here ({reason}); run this on a GPU machine")
        return 0
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gpu = gpus[0]
    print(f"NVML: {[(g.index, g.uuid, g.name, g.driver) for g in gpus]}")
    started = time.monotonic()

    # 1. UUID selection
    spec = gpu_slot_spec(str(gpu.uuid), host_cpus())
    slots = parse_slots(spec)
    print(f"--slots {spec}")
    check("the GPU named by UUID is slot 0's, at its NVML index",
          slots[0].gpu is not None and slots[0].gpu.index == gpu.index and slots[1].gpu is None,
          f"slot 0: GPU {slots[0].gpu}")

    # 2. calibration, with the GPU workload
    table_path = work / "calibration.csv"
    done = run("flare-eval", "calibrate", "--slots", spec, "--out", str(table_path),
               "--no-progress")
    if check("flare-eval calibrate ran", done.returncode == 0):
        table = pd.read_csv(table_path, dtype={"slot": str, "cpuset": str})
        print(table.to_string(index=False))
        timed_gpu = table[(table["workload"] == "gpu") & table["seconds"].notna()]
        check("the GPU workload was timed on the GPU slot alone and together, and only there",
              sorted(timed_gpu["mode"]) == ["alone", "together"]
              and set(timed_gpu["slot"]) == {"0"} and set(timed_gpu["gpu_uuid"]) == {gpu.uuid},
              f"{len(timed_gpu)} GPU rows timed")
        check("the CPU workload was timed on both slots",
              int(table[table["workload"] == "cpu"]["seconds"].notna().sum()) == 4)

    # 3. the reference cascade on both slots, GPU memory sampled per slot and per process
    cases = work / "cases"
    run("flare-eval", "phantoms", "--out", str(cases), "--cases", "2", "--seed", "9200",
        "--shape", "512", "512", "128", "--spacing", "0.8", "0.8", "2.5")
    done = run("flare-eval", "run", "--backend", "local", "--submission",
               str(ROOT / "reference_models" / "cascade"), "--inputs", str(cases / "images"),
               "--out", str(work / "run"), "--team", "cascade", "--slots", spec,
               "--per-process-gpu", "--timeout", "180", "--no-progress")
    team = work / "run" / "cascade"
    if check("flare-eval run --slots on the cascade ran", (team / "runs.csv").is_file()):
        runs = pd.read_csv(team / "runs.csv", dtype={"slot": str, "cpuset": str})
        print(runs[["case", "status", "time_s", "max_gpu_mib", "n_gpu_samples", "slot", "cpuset",
                    "gpu_index", "gpu_uuid", "gpu_name", "gpu_driver"]].to_string(index=False))
        check("every case ran", (runs["status"] == "ok").all(), f"{list(runs['status'])}")
        check("each case was pinned to its slot's cores",
              all(row.cpuset == slots[int(row.slot)].cpuset for row in runs.itertuples()))
        check("both slots ran a case", set(runs["slot"]) == {"0", "1"})
        for row in runs.itertuples():
            document = json.loads((team / "efficiency" / f"{row.case}_0000.json").read_text())
            device = document.get("gpu_memory") or []
            own = document.get("gpu_process_memory") or []
            log = (team / "logs" / f"{row.case}.stdout.txt").read_text()
            if row.slot == "0":
                check("the GPU slot's case ran on CUDA", "on cuda" in log, log.strip()[-80:])
                check("the GPU slot's case names its GPU by UUID and NVML index",
                      row.gpu_uuid == gpu.uuid and int(row.gpu_index) == gpu.index)
                check("the GPU slot's GPU was sampled (device-wide)", max(device, default=0) > 0,
                      f"max {max(device, default=0):.0f} MiB over {len(device)} samples")
                check("the case's own processes were sampled on it, within the device's use",
                      0 < max(own, default=0) <= max(device, default=0) + 1,
                      f"own max {max(own, default=0):.0f} MiB")
            else:
                check("the CPU slot's case saw no GPU", "on cpu" in log, log.strip()[-80:])
                check("the CPU slot's case sampled no GPU and names none",
                      not device and pd.isna(row.gpu_uuid), f"{len(device)} GPU samples")

    # 4. NVML sampling of a known allocation
    done = run(sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--gpu", str(gpu.index),
               "--gib", "2", "--hold-s", "2")
    print(done.stdout.strip())
    check("benchmarks/gpu_check.py", done.returncode == 0)

    # 5. the fleet: calibration on slot workers, the GPU found by UUID on the worker
    _fleet(work, spec, gpu.uuid)

    # 6. docker --gpus device=UUID through the runner
    _docker(work, spec, cases / "images", gpu)

    print(f"{len(RESULTS)} checks, {RESULTS.count(False)} failed, "
          f"{time.monotonic() - started:.0f} s")
    return 0 if all(RESULTS) else 1


def _fleet(work: Path, spec: str, gpu_uuid: str | None) -> None:
    import pandas as pd

    try:
        import distributed
    except ImportError:
        skip("the fleet's calibration", "dask.distributed is not installed")
        return
    gpu_item, cpu_item = spec.split(",")
    cluster = distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                       host="127.0.0.1", dashboard_address=":0")
    workers = [subprocess.Popen(
        [sys.executable, "-m", "dask", "worker", cluster.scheduler_address, "--name", name,
         "--nthreads", "1", "--no-nanny", "--resources", "SLOT=1", "--no-dashboard"],
        env={**os.environ, "FLARE_EVAL_SLOT": item}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL) for name, item in (("g0", gpu_item), ("c0", cpu_item))]
    try:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
        table_path = work / "fleet_calibration.csv"
        done = run("flare-eval", "calibrate", "--scheduler", cluster.scheduler_address,
                   "--out", str(table_path), "--no-progress")
    finally:
        for process in workers:
            process.kill()
            process.wait(timeout=30)
        cluster.close()
    if check("flare-eval calibrate --scheduler ran", done.returncode == 0):
        table = pd.read_csv(table_path, dtype={"slot": str, "cpuset": str})
        print(table.to_string(index=False))
        gpu_rows = table[table["workload"] == "gpu"]
        check("the GPU worker's GPU, found by UUID there, was timed alone and together",
              set(gpu_rows["slot"]) == {"g0"} and set(gpu_rows["gpu_uuid"]) == {gpu_uuid}
              and gpu_rows["seconds"].notna().sum() == 2)


def _docker(work: Path, spec: str, images: Path, gpu) -> None:
    busybox = shutil.which("busybox")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True) if shutil.which(
        "docker") else None
    if info is None or info.returncode != 0 or "nvidia" not in info.stdout.lower() or not busybox:
        skip("docker --gpus device=UUID", "no docker engine with the NVIDIA runtime, or no "
             "busybox to build the test image from")
        return
    import pynvml

    pynvml.nvmlInit()
    try:
        minor = pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(gpu.index))
    finally:
        pynvml.nvmlShutdown()
    tag = f"flare-eval-slots-gpu-{os.getpid()}:latest"
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp)
        for folder in ("bin", "dev", "tmp", "workspace"):
            (rootfs / folder).mkdir()
        shutil.copy(busybox, rootfs / "bin" / "busybox")
        for applet in ("sh", "ls"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        # the case lists its devices and writes no prediction (status no_output: only the
        # devices matter here)
        (rootfs / "workspace" / "predict.sh").write_text("ls /dev >&2\n")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "--change", "WORKDIR /workspace", "--change",
                        "ENV PATH=/bin", "-", tag], stdin=tar.stdout, check=True,
                       capture_output=True)
        tar.wait()
    tarball = work / "devices.tar"
    try:
        subprocess.run(["docker", "save", tag, "-o", str(tarball)], check=True)
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)
    run("flare-eval", "run", "--image", str(tarball), "--inputs", str(images), "--out",
        str(work / "docker"), "--team", "devices", "--slots", spec, "--timeout", "60",
        "--no-progress")
    team = work / "docker" / "devices"
    import pandas as pd

    if not check("flare-eval run --image --slots ran", (team / "runs.csv").is_file()):
        return
    runs = pd.read_csv(team / "runs.csv", dtype={"slot": str})
    for row in runs.itertuples():
        devices = set((team / "logs" / f"{row.case}.stderr.txt").read_text().split())
        gpus_seen = sorted(d for d in devices if d.startswith("nvidia") and d[6:].isdigit())
        if row.slot == "0":
            check(f"the GPU slot's container (--gpus device={gpu.uuid}) sees its GPU only",
                  gpus_seen == [f"nvidia{minor}"], f"{gpus_seen}")
        else:
            check("the CPU slot's container sees no GPU", gpus_seen == [], f"{gpus_seen}")


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/flare-eval-slots-gpu")))
