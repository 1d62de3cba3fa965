"""Scoring speed on full-size cases: ``flare-eval score --workers 1`` against the official path.

Makes N full-size phantom cases (512x512x200 voxels, 0.8x0.8x2.5 mm, 13 organs and lesions) with
simulated predictions, then in the same process times

- the I/O floor: reading both label files of every case with flare-eval's reader;
- ``flare-eval score --workers 1`` (the whole command, tables included, run in-process);
- the official FLARE23 path re-expressed on DeepMind's surface-distance package
  (``benchmarks/official_flare23.py``: get_fdata float load, full-volume masks per class);

checks that both give the same rounded numbers, and prints the ratio.  Also reports the peak
memory (RSS high-water mark) of scoring one case in a fresh process.

Run: ``python benchmarks/bench_scoring.py [--cases 2]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_flare23 import official_files  # noqa: E402

from flare_eval.cli.main import main as run_cli  # noqa: E402
from flare_eval.io import read_label  # noqa: E402
from flare_eval.io import write_label  # noqa: E402
from flare_eval.phantoms import make_phantom, simulate_prediction  # noqa: E402

SHAPE, SPACING = (512, 512, 200), (0.8, 0.8, 2.5)


def make_cases(root: Path, n: int) -> None:
    for k in range(n):
        phantom = make_phantom(11 + k, shape=SHAPE, spacing_mm=SPACING, max_lesions=3)
        write_label(root / "labels" / f"case_{k}.nii.gz", phantom.label, affine=phantom.affine)
        pred = simulate_prediction(phantom.label, 500 + k, quality="good")
        write_label(root / "pred" / f"case_{k}.nii.gz", pred, affine=phantom.affine)


def peak_memory_one_case(root: Path) -> float:
    code = (
        "import resource,sys;from flare_eval.cli.main import main;"
        f"main(['score','--pred','{root / 'pred1'}','--gt','{root / 'labels1'}','--out','{root / 'mem'}']);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"making {args.cases} full-size cases {SHAPE} at {SPACING} mm ...", flush=True)
        make_cases(root, args.cases)
        names = sorted(p.name for p in (root / "labels").iterdir())

        t0 = time.perf_counter()
        for name in names:
            read_label(root / "labels" / name)
            read_label(root / "pred" / name)
        io_floor = time.perf_counter() - t0

        # Both sides import their modules before the clock starts (a script's imports cost the
        # same once per run, whatever the number of cases).
        import flare_eval.cli.score  # noqa: F401
        import flare_eval.scoring.batch  # noqa: F401

        t0 = time.perf_counter()
        code = run_cli(["score", "--workers", "1", "--pred", str(root / "pred"),
                           "--gt", str(root / "labels"), "--out", str(root / "ours")])
        ours = time.perf_counter() - t0
        if code not in (0, 4):
            raise SystemExit(f"flare-eval score failed with exit code {code}")

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # surface-distance's deprecated scipy namespaces
            official = {n: official_files(root / "labels" / n, root / "pred" / n) for n in names}
        anchor = time.perf_counter() - t0

        import pandas as pd

        table = pd.read_csv(root / "ours" / "per_case.csv").set_index("Name")
        from flare_eval.presets import FLARE23

        mismatches = sum(
            (table.loc[n, f"{c.name}_DSC"], table.loc[n, f"{c.name}_NSD"]) != official[n][c.label]
            for n in names for c in FLARE23.classes
        )
        (root / "labels1").mkdir()
        (root / "pred1").mkdir()
        (root / "labels1" / names[0]).symlink_to(root / "labels" / names[0])
        (root / "pred1" / names[0]).symlink_to(root / "pred" / names[0])
        peak_mb = peak_memory_one_case(root)

    n = len(names)
    print(f"cases: {n} x {SHAPE}, 14 classes")
    print(f"I/O floor (read both files):      {io_floor / n:.3f} s/case")
    print(f"flare-eval score --workers 1:     {ours / n:.3f} s/case (I/O floor is {io_floor / ours:.0%} of it)")
    print(f"official path on surface-distance: {anchor / n:.3f} s/case")
    print(f"speed-up: {anchor / ours:.1f}x   rounded values differing: {mismatches} of {n * 28}")
    print(f"peak memory, one case in a fresh process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
