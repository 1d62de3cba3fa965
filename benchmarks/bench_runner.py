"""Runner benchmark against the official harness's ways, run in the same script.

    python benchmarks/bench_runner.py [--cases 5]

1. Sampling period with a slow NVML query (a scripted 30 ms query, no GPU needed): our
   deadline scheduler against the official loop (query, then ``sleep(0.1)``).
2. Per-case wall time of a 1 s submission (``sleep 1``, then a copy): ``flare-eval``'s docker backend (create, start,
   wait, logs, remove, output check, records) against the official ``docker container run
   --rm`` through the CLI. Needs a docker engine (``DOCKER_HOST``) and busybox; skipped
   with a message otherwise.
3. ``--stdout-mb N``: one case printing N MB of short lines to stdout: the runner's wall time
   and peak memory (a child process's ``ru_maxrss``), and the size of the kept log.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from flare_eval.runner import DockerBackend, DockerOptions, ResourceSampler, run_submission

PREDICT_SH = (
    'sleep 1\n'
    'f=$(ls /workspace/inputs)\n'
    'cp "/workspace/inputs/$f" "/workspace/outputs/${f%_0000.nii.gz}.nii.gz"\n'
)


class SlowNVML:
    """NVML stand-in whose memory query takes 30 ms (a busy driver)."""

    NVMLError = RuntimeError

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):
        time.sleep(0.03)
        return SimpleNamespace(total=16 * 2**30, free=8 * 2**30)


def bench_sampler(seconds: float = 2.0) -> None:
    nvml = SlowNVML()
    with ResourceSampler(0, nvml=nvml) as sampler:
        sampler.start()
        time.sleep(seconds)
        ours = np.diff(sampler.stop().t_s)
    stamps: list[float] = []
    stop = threading.Event()

    def official() -> None:
        while not stop.is_set():
            nvml.nvmlDeviceGetMemoryInfo(0)
            stamps.append(time.monotonic())
            time.sleep(0.1)

    thread = threading.Thread(target=official)
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    anchor = np.diff(stamps)
    print(f"sampling period, 30 ms query, {seconds:.0f} s: ours {ours.mean() * 1000:.1f} ms "
          f"({ours.size + 1} samples), official loop {anchor.mean() * 1000:.1f} ms "
          f"({anchor.size + 1} samples); ratio official/ours {anchor.mean() / ours.mean():.3f} "
          f"(nominal 0.1 s: ours is off by {abs(ours.mean() - 0.1) * 1000:.1f} ms)")


def _image(client) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(shutil.which("busybox"), arcname="bin/busybox")
        for applet in ("sh", "ls", "cp", "sleep", "yes", "head"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        info = tarfile.TarInfo("workspace/predict.sh")
        info.size = len(PREDICT_SH)
        tar.addfile(info, io.BytesIO(PREDICT_SH.encode()))
    client.api.import_image_from_data(buffer.getvalue(), repository="flare-eval-bench",
                                      tag="latest", changes=["WORKDIR /workspace", "ENV PATH=/bin"])
    return "flare-eval-bench:latest"


def bench_docker(n_cases: int) -> None:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as err:  # any failure: no engine to benchmark on
        print(f"docker per-case time: skipped, no docker engine answers ({err})")
        return
    if shutil.which("busybox") is None or shutil.which("docker") is None:
        print("docker per-case time: skipped, needs busybox and the docker CLI")
        return
    import nibabel as nib

    image = _image(client)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = root / "inputs"
        inputs.mkdir()
        for i in range(n_cases):
            nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)),
                     inputs / f"case{i}_0000.nii.gz")
        ours: list[float] = []
        anchor: list[float] = []
        anchor_no_net: list[float] = []
        statuses: set[str] = set()
        # Alternate blocks so a busy neighbour on a shared machine slows both sides alike.
        for rep in range(2):
            for case in sorted(inputs.iterdir()):
                anchor.append(_official_run(image, case, root))
                anchor_no_net.append(_official_run(image, case, root, "--network=none"))
            records = run_submission(
                DockerBackend(client, image, DockerOptions(memory="64m", shm_size="8m")),
                inputs, root / f"out{rep}", team="bench", progress=False)
            ours += [r["time_s"] for r in records]
            statuses |= {r["status"] for r in records}
    client.images.remove(image, force=True)
    print(f"docker per-case time, {n_cases} cases of 1 s x 2 (statuses {sorted(statuses)}): "
          f"median ours {np.median(ours):.3f} s, official 'docker container run --rm' "
          f"{np.median(anchor):.3f} s; ratio ours/official {np.median(ours) / np.median(anchor):.3f}")
    # Our default sandbox has no network; the namespace costs the same to the official command.
    no_net = np.median(anchor_no_net)
    print(f"  the official command with our default --network=none: median {no_net:.3f} s; "
          f"ratio ours/that {np.median(ours) / no_net:.3f}")


def _official_run(image: str, case: Path, root: Path, *extra: str) -> float:
    """One case the official way: the docker CLI's ``run --rm``, timed around the call."""
    case_in, case_out = root / "official_in", root / "official_out"
    shutil.rmtree(case_in, ignore_errors=True)
    shutil.rmtree(case_out, ignore_errors=True)
    case_in.mkdir()
    case_out.mkdir()
    shutil.copy(case, case_in)
    t0 = time.monotonic()
    subprocess.run(["docker", "container", "run", *extra, "--shm-size=8m", "-m", "64m", "--rm", "-v",
                    f"{case_in}:/workspace/inputs/", "-v", f"{case_out}:/workspace/outputs/",
                    image, "/bin/sh", "-c", "sh predict.sh"], check=True, capture_output=True)
    return time.monotonic() - t0


_LOUD_RUN = """
import sys, time
from pathlib import Path
from flare_eval.runner import DockerBackend, DockerOptions, connect, run_submission
client = connect()
backend = DockerBackend(client, sys.argv[1], DockerOptions(memory="256m", shm_size="8m",
                        command=("sh", "-c", sys.argv[2])))
t0 = time.monotonic()
records = run_submission(backend, Path(sys.argv[3]), Path(sys.argv[4]), team="loud", progress=False)
print(records[0]["status"], time.monotonic() - t0)
"""


def bench_stdout(megabytes: int) -> None:
    """Wall time and peak memory of the runner on a case printing ``megabytes`` MB."""
    import resource

    import docker
    import nibabel as nib

    client = docker.from_env()
    image = _image(client)
    script = f"yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c {megabytes * 1_000_000}"
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)),
                 inputs / "case0_0000.nii.gz")
        done = subprocess.run([sys.executable, "-c", _LOUD_RUN, image, script, str(inputs),
                               str(Path(tmp) / "out")], capture_output=True, text=True)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        log = Path(tmp) / "out" / "loud" / "logs" / "case0.stdout.txt"
        kept = log.stat().st_size if log.exists() else 0
    client.images.remove(image, force=True)
    print(f"{megabytes} MB on stdout: status and runner seconds {done.stdout.strip() or done.stderr[-300:]}; "
          f"runner peak RSS {peak_mib:.0f} MiB; log kept {kept / 2**20:.2f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--stdout-mb", type=int, default=0,
                        help="also time a case printing this many MB (0: skip)")
    args = parser.parse_args()
    bench_sampler()
    bench_docker(args.cases)
    if args.stdout_mb:
        bench_stdout(args.stdout_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
