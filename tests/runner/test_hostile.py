"""Hostile submissions through ``evaluate`` with real containers, and through the local sandbox.

One evaluation runs an honest team beside twelve hostile ones (busybox images built with
``docker import``, no registry), two cases each. Each hostile team tries an attack of
``docs/security.md`` per case; the test pins the exact status of every case, the honest team's
exact scores (it ships the reference labels, so every DSC and NSD is 1 by definition), that no
byte of a refused file (``/etc/shadow`` starts with ``root:``) reaches any output, that nothing
outside the output folder changed, and that no container, process or mount is left.
The evaluation takes about 40 s: 26 containers, one 3 s timeout (the fork bomb), the report.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from flare_eval.organizer import evaluate
from flare_eval.phantoms import write_phantom_set
from flare_eval.runner import DockerOptions, LocalBackend, run_submission
from flare_eval.runner.docker_backend import CONTAINER_LABEL, WORK_LABEL
from flare_eval.runner.intake import OutputLimits, case_folder
from tests.conftest import save_team_image, skip_or_fail

pytest.importorskip("psutil")
pytest.importorskip("matplotlib")

MIB = 1 << 20
#: Tight enough that the disk-fill and file-flood attacks hit them within a second.
LIMITS = OutputLimits(max_bytes=4 * MIB, max_files=1000, output_space=8 * MIB)
#: A sleep no other test uses, to find processes left behind.
LINGER = "sleep 313"

PROLOGUE = """\
f=$(ls /workspace/inputs | head -n 1)
id=${f%_0000.nii.gz}
out=/workspace/outputs
first=FIRST
honest() { cp "/workspace/preds/$id.nii.gz" "$out/$id.nii.gz"; }
"""

#: team -> script body; FIRST is the first case, LABELS and RESULTS host folders.
ATTACKS = {
    "honest": "honest\n",
    # symbolic links to the organizer's label and to the honest team's finished prediction
    "links": 'if [ "$id" = "$first" ]; then ln -s "LABELS/$id.nii.gz" "$out/$id.nii.gz";\n'
             'else ln -s "RESULTS/honest/predictions/$id.nii.gz" "$out/$id.nii.gz"; fi\n',
    # a host secret through a symbolic link; a hard link of a valid copy
    "shadow": 'if [ "$id" = "$first" ]; then ln -s /etc/shadow "$out/$id.nii.gz";\n'
              'else honest; ln "$out/$id.nii.gz" "$out/copy.nii.gz"; fi\n',
    "malformed": 'if [ "$id" = "$first" ]; then cp /workspace/bad/zero.nii.gz "$out/$id.nii.gz";\n'
                 'else cp /workspace/bad/nifti2.nii.gz "$out/$id.nii.gz"; fi\n',
    "malformed2": 'if [ "$id" = "$first" ]; then cp /workspace/bad/float.nii.gz "$out/$id.nii.gz";\n'
                  'else cp /workspace/bad/bomb.nii.gz "$out/$id.nii.gz"; fi\n',
    "specials": 'if [ "$id" = "$first" ]; then mkfifo "$out/$id.nii.gz"; else mkdir "$out/$id.nii.gz"; fi\n',
    # 20000 files beside a valid prediction; 100 MiB written into the 8 MiB output space
    "flood": 'if [ "$id" = "$first" ]; then honest; cd "$out" && seq -w 1 20000 | xargs touch;\n'
             'else dd if=/dev/zero of="$out/fill" bs=1M count=100; exit 0; fi\n',
    # 5 MB on stdout, then an honest answer
    "noisy": "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 5000000; honest\n",
    # how many inputs it sees (exit 40 + n); writing into the inputs
    "snoop": 'if [ "$id" = "$first" ]; then exit $((40 + $(ls -A /workspace/inputs | wc -l)));\n'
             'else echo pwned > "/workspace/inputs/$f" || exit 9; fi\n',
    "lingers": f"({LINGER} &) ; {LINGER} & honest\n",
    # a fork bomb under the pids limit, then the timeout (exec: the last sleep needs no fork,
    # which under the pids limit could fail and end the case as a crash); an allocation over
    # the memory limit
    "bomb": 'if [ "$id" = "$first" ]; then bomb() { bomb | bomb & }; bomb; exec sleep 30;\n'
            'else dd if=/dev/zero of=/dev/null bs=128M count=1; fi\n',
    # network: exit 50 + the number of interfaces if no request got out
    "probe": "wget -q -T 2 -O /dev/null http://10.0.0.1/ && exit 0;"
             " nc -w 2 1.1.1.1 53 </dev/null && exit 0;"
             " exit $((50 + $(grep -c : /proc/net/dev)))\n",
    # a tarball named to inject a command: its name must stay a name
    "$(id)": 'echo "$(id)" > /tmp/who; exit 0\n',
}
APPLETS = ("sh", "ls", "cp", "ln", "head", "yes", "mkfifo", "mkdir", "seq", "xargs", "touch",
           "dd", "wc", "grep", "wget", "nc", "echo", "sleep", "id", "cat")
#: team -> exact statuses of (first case, second case)
EXPECTED = {
    "honest": ("ok", "ok"), "links": ("bad_output", "bad_output"),
    "shadow": ("bad_output", "bad_output"), "malformed": ("bad_output", "bad_output"),
    "malformed2": ("bad_output", "bad_output"), "specials": ("bad_output", "bad_output"),
    "flood": ("bad_output", "no_output"), "noisy": ("ok", "ok"), "snoop": ("crash", "crash"),
    "lingers": ("ok", "ok"), "bomb": ("timeout", "oom"), "probe": ("crash", "crash"),
    "$(id)": ("no_output", "no_output"),
}


def _header_file(header: nib.Nifti1Header, data: bytes) -> bytes:
    raw = header.binaryblock
    raw += b"\0" * (int(header["vox_offset"]) - len(raw)) + data
    return gzip.compress(raw)


def _bad_files() -> dict[str, bytes]:
    """Hand-made outputs: zero-size, NIfTI-2 overflowing, float labels, a gzip bomb's header."""
    zero = nib.Nifti1Header()
    zero.set_data_dtype(np.uint8)
    zero["dim"] = [3, 0, 64, 32, 1, 1, 1, 1]
    zero["vox_offset"] = 352
    huge = nib.Nifti2Header()
    huge.set_data_dtype(np.uint8)
    huge["dim"] = [3, 2**62, 2**62, 2**62, 1, 1, 1, 1]  # 2**186 voxels
    huge["vox_offset"] = 544
    floats = io.BytesIO()
    image = nib.Nifti1Image(np.full((32, 32, 24), 0.5, np.float32), np.eye(4))
    floats.write(gzip.compress(image.to_bytes()))
    bomb = nib.Nifti1Header()
    bomb.set_data_dtype(np.uint8)
    bomb["dim"] = [3, 4096, 4096, 4096, 1, 1, 1, 1]  # 64 GiB announced
    bomb["vox_offset"] = 352
    return {"zero.nii.gz": _header_file(zero, b""), "nifti2.nii.gz": _header_file(huge, b"\0" * 64),
            "float.nii.gz": floats.getvalue(),
            "bomb.nii.gz": _header_file(bomb, b"\0" * (8 * MIB))}


def _rootfs(script: str, files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(shutil.which("busybox"), arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for folder in ("tmp", "workspace", "workspace/preds", "workspace/bad"):
            entry = tarfile.TarInfo(folder)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(entry)
        for name, data in {"workspace/predict.sh": script.encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _tree(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` with its hash and mode (to prove nothing changed)."""
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            info = path.lstat()
            found[str(path)] = f"{info.st_mode:o} " + (
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "")
    return found


def _lingering() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if " ".join(p.info["cmdline"] or []) == LINGER]


def _our_mounts(folders: set[str]) -> list[str]:
    """Output tmpfs mounts left under this test's staging ``folders`` (runs of other tests or
    sessions may share the staging root)."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if "flare-eval-outputs" in line and any(f"{f}/" in line for f in folders)]


@pytest.fixture(scope="module")
def hostile(docker_client, tmp_path_factory):
    """The hidden set (2 phantom cases), the 13 team tarballs, and the finished evaluation."""
    if shutil.which("busybox") is None:
        skip_or_fail("busybox is not installed (apt-get install busybox-static)")
    root = tmp_path_factory.mktemp("hostile")
    cases = write_phantom_set(root / "test", cases=2, seed=5, shape=(32, 32, 24),
                              spacing_mm=(10.0, 10.0, 12.0), prefix="hidden")
    labels, images, out = root / "test" / "labels", root / "test" / "images", root / "out"
    submissions = root / "submissions"
    submissions.mkdir()
    preds = {f"workspace/preds/{c}.nii.gz": (labels / f"{c}.nii.gz").read_bytes() for c in cases}
    bad = {f"workspace/bad/{name}": data for name, data in _bad_files().items()}
    tags = []
    for team, body in ATTACKS.items():
        script = (PROLOGUE + body).replace("FIRST", cases[0]).replace(
            "LABELS", str(labels.resolve())).replace("RESULTS", str((out / "results").resolve()))
        tag = f"flare-eval-hostile-{uuid.uuid4().hex[:8]}:latest"
        save_team_image(docker_client, _rootfs(script, {**preds, **bad}), tag,
                        submissions / f"{team}.tar")
        tags.append(tag)
    before = _tree(labels, images, submissions)
    shadow = Path("/etc/shadow").read_bytes() if os.access("/etc/shadow", os.R_OK) else b""
    result = evaluate(submissions, images, labels, out, timeout_s=3, limits=LIMITS,
                      container=DockerOptions(memory="64m", shm_size="8m", pids_limit=64),
                      n_bootstrap=20, client=docker_client)
    yield {"result": result, "cases": cases, "out": out, "before": before,
           "after": _tree(labels, images, submissions), "shadow": shadow}
    for tag in tags:
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:  # noqa: BLE001 - loaded again by the pipeline, or already gone
            pass




@pytest.mark.docker
@pytest.mark.slow
def test_every_attack_gets_its_exact_status(hostile):
    results = hostile["out"] / "results"
    got = {}
    for team in EXPECTED:
        runs = pd.read_csv(results / team / "runs.csv", keep_default_na=False).set_index("case")
        got[team] = tuple(runs.loc[c, "status"] for c in hostile["cases"])
    assert got == EXPECTED
    runs = {team: pd.read_csv(results / team / "runs.csv", keep_default_na=False)
            for team in EXPECTED}
    messages = {team: list(table["message"]) for team, table in runs.items()}
    assert all("symbolic link" in m for m in messages["links"])
    assert "symbolic link" in messages["shadow"][0] and "hard link" in messages["shadow"][1]
    assert "a FIFO" in messages["specials"][0] and "a directory" in messages["specials"][1]
    # the count, then the first names only: not a 20000-name message
    assert "20001 entries, more than the limit of 1000" in messages["flood"][0]
    assert len(messages["flood"][0]) < 200
    snoop = runs["snoop"]["exit_code"].tolist()
    assert snoop == [41, 9]  # one input visible; the input mount is read-only
    assert int(runs["bomb"]["exit_code"].tolist()[1]) == 137
    assert str(runs["bomb"]["oom_killed"].tolist()[1]) == "True"
    assert runs["probe"]["exit_code"].tolist() == [51, 51]  # loopback only, nothing got out
    # the stdout flood is capped: 1 MiB tail kept per stream (the run's default)
    log = results / "noisy" / "logs" / f"{hostile['cases'][0]}.stdout.txt"
    assert log.stat().st_size <= (1 << 20) + 100 and "bytes dropped" in log.read_text()[:80]


@pytest.mark.docker
@pytest.mark.slow
def test_the_honest_team_gets_its_exact_scores_and_no_attack_wins(hostile):
    results = hostile["out"] / "results"
    # the reference itself: DSC = NSD = 1 for every class of every case, by definition
    honest = pd.read_csv(results / "honest" / "per_case.csv").set_index("Name")
    assert (honest.to_numpy() == 1.0).all() and len(honest) == 2
    assert "Organ_DSC: 1.0000" in (results / "honest" / "scores.txt").read_text()
    for team in ("links", "shadow", "malformed", "specials"):
        # nothing was taken, so every case is scored as missing: the liver (in every
        # phantom) scores 0
        assert (pd.read_csv(results / team / "per_case.csv")["Liver_DSC"] == 0.0).all(), team
    board = hostile["result"].leaderboard
    assert board.loc[board["team"] == "links", "rank"].item() > board.loc[
        board["team"] == "honest", "rank"].item()
    # the command in the tarball's name stayed a name
    assert (results / "$(id)" / "runs.csv").is_file()


@pytest.mark.docker
@pytest.mark.slow
def test_no_byte_of_a_refused_file_leaks_and_nothing_is_left(hostile, docker_client):
    out = hostile["out"]
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"root:" not in data, path
            if hostile["shadow"]:
                assert hostile["shadow"][:32] not in data, path
    assert hostile["after"] == hostile["before"]  # labels, images, tarballs untouched
    # this evaluation's containers (other test runs may share the engine)
    ours = {str(case_folder(out / "results" / team, case)) for team in EXPECTED
            for case in hostile["cases"]}
    left = docker_client.containers.list(all=True, filters={"label": CONTAINER_LABEL})
    assert [c.name for c in left if c.labels.get(WORK_LABEL) in ours] == []
    assert _lingering() == []
    assert _our_mounts(ours) == []
    for team in EXPECTED:
        for case in hostile["cases"]:
            assert not case_folder(out / "results" / team, case).exists()


#: The local backend's attacks, one per case (the sandbox runs the host's busybox).
LOCAL_SH = """\
f=$(ls /workspace/inputs)
id=${f%_0000.nii.gz}
out=/workspace/outputs
case "$id" in
  shadow) ln -s /etc/shadow "$out/$id.nii.gz"; cat /etc/shadow ;;
  fifo) mkfifo "$out/$id.nii.gz" ;;
  remount) mount -o remount,bind,rw /usr 2>/dev/null && exit 0; exit 7 ;;
  writehost) touch HOSTFILE; cat SECRET && exit 0; ls /work && exit 0; exit 8 ;;
  environ) env ;;
  lingers) (sleep 313 &) ; cp "/workspace/inputs/$f" "$out/$id.nii.gz" ;;
  python) python -c 'import sys; print(sys.prefix)' ;;
  whoami) id -u ;;
  snoop) exit $((40 + $(ls -A /workspace/inputs | wc -l))) ;;
  probe) busybox wget -q -T 2 -O /dev/null http://10.0.0.1/ && exit 0
         busybox nc -w 2 1.1.1.1 53 </dev/null && exit 0
         exit $((50 + $(grep -c : /proc/net/dev))) ;;
esac
"""


@pytest.mark.slow
def test_the_local_sandbox_holds(tmp_path, make_inputs, monkeypatch):
    if shutil.which("bwrap") is None or shutil.which("busybox") is None:
        skip_or_fail("the local backend test needs bubblewrap and busybox")
    monkeypatch.setenv("FLARE_EVAL_SECRET_TOKEN", "hunter2")
    host_file = tmp_path / "written-by-the-sandbox"
    submission = tmp_path / "submission"
    submission.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("root:the organizer's secret\n")
    secret.chmod(0o600)
    (submission / "predict.sh").write_text(
        LOCAL_SH.replace("HOSTFILE", str(host_file)).replace("SECRET", str(secret)))
    cases = ["environ", "fifo", "lingers", "probe", "python", "remount", "shadow", "snoop",
             "whoami", "writehost"]
    inputs = make_inputs(cases)
    before = _tree(inputs, submission)
    records = run_submission(LocalBackend(submission), inputs, tmp_path / "out", team="local",
                             timeout_s=10, limits=LIMITS, progress=False)
    status = {r["case"]: (r["status"], r["exit_code"]) for r in records}
    assert status == {
        "environ": ("no_output", 0), "fifo": ("bad_output", 0), "lingers": ("ok", 0),
        "python": ("no_output", 0), "remount": ("crash", 7),
        # one input visible; loopback only, nothing got out
        "snoop": ("crash", 41), "probe": ("crash", 51),
        # the link is refused; 'cat /etc/shadow' finds no readable file and exits 1
        "shadow": ("crash", 1),
        "whoami": ("no_output", 0), "writehost": ("crash", 8),
    }
    logs = tmp_path / "out" / "local" / "logs"
    environ = (logs / "environ.stdout.txt").read_text()
    assert "hunter2" not in environ and "DOCKER_HOST" not in environ
    assert (logs / "whoami.stdout.txt").read_text() == "65534\n"
    import sys

    assert (logs / "python.stdout.txt").read_text() == f"{sys.prefix}\n"
    for path in (tmp_path / "out").rglob("*"):
        assert not path.is_file() or b"root:" not in path.read_bytes(), path
    assert not host_file.exists()
    assert _tree(inputs, submission) == before
    ours = {str(case_folder(tmp_path / "out" / "local", case)) for case in cases}
    assert _lingering() == [] and _our_mounts(ours) == []
