"""Scale-out: scoring N cases through a real dask.distributed cluster with 1 and with 2 workers.

Makes N phantom cases (256x256x120 voxels by default, 1.6x1.6x3.0 mm, 13 organs and lesions)
with simulated predictions, then for 1 and for 2 workers starts a ``dask scheduler`` and that
many ``dask worker`` processes (one thread each) on loopback, as ``flare-eval score --scheduler``
would use them, imports flare-eval in every worker, and times
:func:`flare_eval.scoring.score_folders` over the cluster's executor into a fresh folder (tables
included, cluster start-up excluded).  Checks that both runs write the same tables, and prints
both times and their ratio.  On a machine with 2 cores expect less than 2x: the scheduler, the
client and the table writing share the cores with the workers.

Run: ``python benchmarks/bench_dask.py [--cases 6] [--shape 256 256 120]``
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from flare_eval.io import write_label
from flare_eval.phantoms import make_phantom, simulate_prediction
from flare_eval.presets import FLARE23
from flare_eval.scoring import ScoreOptions, score_folders

SPACING = (1.6, 1.6, 3.0)
TABLES = ("per_case.csv", "metrics_long.csv", "lesions.csv", "lesions_per_case.csv", "scores.txt")


def make_cases(root: Path, n: int, shape: tuple[int, int, int]) -> None:
    for k in range(n):
        phantom = make_phantom(31 + k, shape=shape, spacing_mm=SPACING)
        write_label(root / "labels" / f"case_{k}.nii.gz", phantom.label, affine=phantom.affine)
        pred = simulate_prediction(phantom.label, 700 + k, quality="good")
        write_label(root / "pred" / f"case_{k}.nii.gz", pred, affine=phantom.affine)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_cluster(n_workers: int, logs: Path) -> Iterator[str]:
    """A ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on loopback."""
    from distributed import Client

    dask = shutil.which("dask")
    if dask is None:
        raise SystemExit("the dask command line is not installed (pip install 'flare-eval[scale]')")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs.mkdir(parents=True, exist_ok=True)
    handles = [(logs / f"{name}.log").open("w") for name in ["scheduler"] +
               [f"worker{k}" for k in range(n_workers)]]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=handles[0], stderr=subprocess.STDOUT)]
    try:
        deadline = time.time() + 60
        while True:
            try:
                Client(address, timeout="2s").close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError((logs / "scheduler.log").read_text()) from None
                time.sleep(0.5)
        for k in range(n_workers):
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                 "--name", f"w{k}"], stdout=handles[k + 1], stderr=subprocess.STDOUT))
        with Client(address, timeout="10s") as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield address
    finally:
        for proc in procs[::-1]:
            proc.terminate()
            proc.wait(timeout=30)
        for handle in handles:
            handle.close()


def time_scoring(root: Path, n_workers: int) -> float:
    from distributed import Client

    out = root / f"out{n_workers}"
    with local_cluster(n_workers, root / f"logs{n_workers}") as address, \
            Client(address, timeout="10s") as client:
        # imports in every worker first, so that start-up costs are not timed
        client.run(lambda: __import__("flare_eval.scoring.batch"))
        started = time.perf_counter()
        score_folders(root / "pred", root / "labels", out, options=ScoreOptions(preset=FLARE23),
                      executor=client.get_executor())
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 120))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        make_cases(root, args.cases, tuple(args.shape))
        print(f"made {args.cases} cases of {tuple(args.shape)} in "
              f"{time.perf_counter() - started:.1f} s")
        times = {n: time_scoring(root, n) for n in (1, 2)}
        for name in TABLES:
            if (root / "out1" / name).read_bytes() != (root / "out2" / name).read_bytes():
                raise SystemExit(f"{name} differs between 1 and 2 workers")
        for n, seconds in times.items():
            print(f"{n} worker(s): {seconds:.2f} s ({seconds / args.cases:.2f} s a case)")
        print(f"speed-up with 2 workers: {times[1] / times[2]:.2f}x (tables identical)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
