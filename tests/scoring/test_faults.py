"""Faults while scoring: a second writer, a full or read-only disk, a killed parent of workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flare_eval.cli.main import main
from flare_eval.errors import EXIT_INPUT, EXIT_PARTIAL, EXIT_USAGE
from flare_eval.phantoms import write_phantom_set
from tests.conftest import skip_or_fail

TABLES = ("per_case.csv", "scores.txt", "metrics_long.csv", "cases.csv", "lesions_per_case.csv",
          "lesions.csv", "run.json")
HOLD = ("import sys, time\nfrom flare_eval.io.lock import exclusive\n"
        "with exclusive(sys.argv[1], option='--out', command='score'):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n")


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    root = tmp_path_factory.mktemp("challenge")
    write_phantom_set(root, cases=3, seed=7, shape=(48, 48, 24), spacing_mm=(6.0, 6.0, 7.5),
                      prediction_quality="good", missing_predictions=1)
    return root


def run_score(challenge, out, *extra):
    return main(["score", "--pred", str(challenge / "predictions"), "--gt", str(challenge / "labels"),
                 "--out", str(out), *extra])


def _tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in TABLES}


def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_lock(challenge, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_score(challenge, out) == EXIT_PARTIAL
    before = _tables(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        capsys.readouterr()
        assert run_score(challenge, out, "--overwrite") == EXIT_USAGE
        err = capsys.readouterr().err
        assert f"score, pid {holder.pid} on host {socket.gethostname()}" in err
        assert _tables(out) == before  # --overwrite did not wipe the holder's folder either
        assert (out / ".flare-eval-cache" / "cases").is_dir()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    # the kernel released the dead holder's lock: the next run takes it and resumes
    assert run_score(challenge, out) == EXIT_PARTIAL
    assert "3 cases (3 reused" in capsys.readouterr().err


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_or_read_only_out_keeps_the_finished_tables_and_exits_3(
        challenge, small_disk, tmp_path, capsys):
    pred = tmp_path / "predictions"
    shutil.copytree(challenge / "predictions", pred)
    out = small_disk / "out"
    args = ["score", "--pred", str(pred), "--gt", str(challenge / "labels"), "--out", str(out)]
    assert main(args) == EXIT_PARTIAL
    before = _tables(out)
    # a changed prediction: the next run rescores it, so every table it writes differs
    shutil.copy(challenge / "labels" / "phantom_0007.nii.gz", pred / "phantom_0007.nii.gz")
    # fill the disk but for one page (tmpfs counts whole pages): the case record and the first
    # small table fit, metrics_long.csv (two pages) does not
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 4096))
    capsys.readouterr()
    assert main(args) == EXIT_INPUT
    err = capsys.readouterr().err
    assert f"--out {out}: cannot write {out}" in err and "No space left on device" in err
    assert "internal error" not in err
    assert _tables(out) == before  # run.json still the old, complete run over its own tables
    assert sorted(p.name for p in (out / ".flare-eval-cache").iterdir()) == ["cases", "config.json"]
    assert not [p for p in out.rglob("*.tmp")]
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(args) == EXIT_INPUT
    assert f"--out {out}: cannot write" in capsys.readouterr().err
    assert _tables(out) == before
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert main(args) == EXIT_PARTIAL
    after = _tables(out)
    assert after["per_case.csv"] != before["per_case.csv"] and b'"complete": true' in after["run.json"]


SCORE_SLOWLY = """
import sys, time
import flare_eval.scoring.batch as batch
real = batch._score_job
def slow(*args):
    time.sleep(600)
batch._score_job = slow
from flare_eval.cli.main import main
main(["score", "--pred", sys.argv[1], "--gt", sys.argv[2], "--out", sys.argv[3], "--workers", "2"])
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_kill_9_of_score_with_workers_leaves_no_worker_running(challenge, tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", SCORE_SLOWLY, str(challenge / "predictions"),
                               str(challenge / "labels"), str(tmp_path / "out")],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    deadline = time.monotonic() + 60
    while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) >= 2, "the pool never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while (alive := [w for w in workers if Path(f"/proc/{w}").exists()
                     and (Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")]) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    for w in alive:  # clean up before failing
        os.kill(w, signal.SIGKILL)
    assert alive == []


# The peak of this process's own memory: VmHWM, not ru_maxrss, which Linux carries over exec
# from the forking parent (pytest, hundreds of MiB late in a full run)
SCORE_AND_PEAK = """\
import json, re, sys
from pathlib import Path
from flare_eval.cli.main import main
code = main(["score", "--pred", sys.argv[1], "--gt", sys.argv[2], "--out", sys.argv[3]])
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"code": code, "peak_mib": peak_kib / 1024}))
"""
MIB = 2**20


def _gzip_of(header: bytes, voxels: bytes, zeros_after: int, path: Path) -> None:
    import isal.igzip

    with isal.igzip.open(path, "wb", compresslevel=1) as out:
        out.write(header + voxels)
        for _ in range(zeros_after // (64 * MIB)):
            out.write(bytes(64 * MIB))


def test_gzip_bombs_cost_no_more_than_the_reference_and_the_batch_goes_on(challenge, tmp_path):
    import nibabel as nib
    import numpy as np
    import pandas as pd

    copy = tmp_path / "c"
    shutil.copytree(challenge, copy)
    labels = sorted((copy / "labels").iterdir())
    # 1. a header announcing 1024^3 voxels (1 GiB inflated, ~1 MiB on disk): the shape differs
    #    from the reference's (48, 48, 24), refused from the header before anything is inflated
    big = nib.Nifti1Header()
    big.set_data_dtype(np.uint8)
    big["dim"] = [3, 1024, 1024, 1024, 1, 1, 1, 1]
    big["vox_offset"] = 352
    _gzip_of(big.binaryblock + bytes(4), b"", 1024 * MIB, copy / "predictions" / labels[0].name)
    # 2. the reference's own header and voxels, then 512 MiB of zeros in the same stream:
    #    nibabel (the official reader) stops at the last voxel, so the case scores as the
    #    reference itself (DSC 1) with a note, and nothing past the voxels is inflated
    _gzip_of(nib.load(labels[1]).to_bytes(), b"", 512 * MIB, copy / "predictions" / labels[1].name)
    done = subprocess.run(
        [sys.executable, "-c", SCORE_AND_PEAK, str(copy / "predictions"), str(copy / "labels"),
         str(tmp_path / "out")],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True, text=True, timeout=300, check=False)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == EXIT_PARTIAL, done.stderr
    # the scorer with three 48x48x24 cases peaks near 150 MiB (numpy, scipy, pandas loaded);
    # inflating either bomb would add 512 MiB or more
    assert result["peak_mib"] < 400, result
    cases = pd.read_csv(tmp_path / "out" / "cases.csv").set_index("case")
    first, second = (labels[i].name.removesuffix(".nii.gz") for i in (0, 1))
    assert cases.loc[first, "status"] == "bad_prediction"
    assert "shape (1024, 1024, 1024) differs from the reference's (48, 48, 24)" in \
        cases.loc[first, "message"]
    assert cases.loc[second, "status"] == "ok"
    assert "holds more data than the header's voxels (ignored)" in cases.loc[second, "message"]
    per_case = pd.read_csv(tmp_path / "out" / "per_case.csv").set_index("Name")
    row = per_case.loc[labels[1].name]
    present = [c for c in row.index if c.endswith("_DSC") and not np.isnan(row[c])]
    assert present and all(row[c] == 1.0 for c in present), row.to_dict()
    assert "warning" in done.stderr and "holds more data" in done.stderr
