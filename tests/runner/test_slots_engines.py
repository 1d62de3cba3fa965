"""Slots on real engines: two one-core docker slots side by side run a CPU-bound case as fast
as one slot alone, each container sees only its own core, and the local sandbox is pinned too.

Why a 35 % margin for "as fast as alone": each case's time is its container's whole life
(create, start, a ~0.8 s busy loop, exit, removal); side by side, two containers share dockerd
(unpinned), the memory bus and the hypervisor's scheduling of this VM's two vCPUs, and the
machine is shared with other test runs whose load lands on both measurements unevenly. Medians
of several cases absorb single outliers.

"Alone" keeps the neighbour core busy with a busy-loop container pinned to it. This machine is
shared, and measured at load average 4-6 two things made an idle-neighbour "alone" up to 70 %
faster than side by side under the same foreign load: an idle core pulls the other users'
processes off the measured core (the kernel balances load), and docker's cgroup (v1) weight is
split over the cores its containers run on, so two containers each get half the weight against
the host's other processes that one container gets. With a container busy on the neighbouring
core in both measurements, the comparison says what slots promise: a case's time does not
depend on what runs in the neighbouring slot. On a dedicated evaluation host neither effect
exists; benchmarks/bench_slots.py measures the idle-neighbour case. The measurements alternate
(one case alone, two side by side, three rounds), so that a change of the foreign load during
the test falls on both. A broken pinning (both slots on one core) doubles the busy loop's
time (ratio ~2, 1.6 measured under load), outside the margin; serial running shows up in the
intervals check.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flare_eval.runner import DockerBackend, DockerOptions, LocalBackend, run_submission
from flare_eval.runner.docker_backend import CONTAINER_LABEL
from flare_eval.runner.slots import parse_slots
from tests.conftest import busybox_rootfs, skip_or_fail
from tests.runner.conftest import _label_file

pytest.importorskip("psutil")  # the sampler

#: Side-by-side per-case time over alone per-case time must stay within 1 +- this.
MARGIN = 0.35
#: Rounds of one case alone and two side by side.
ROUNDS = 3
#: Iterations of the busy loop: about 0.8 s of one idle core for busybox sh here.
LOOPS = 250_000

BUSY_SH = f"""\
f=$(ls /workspace/inputs)
id=${{f%_0000.nii.gz}}
grep Cpus_allowed_list /proc/self/status
i=0
while [ $i -lt {LOOPS} ]; do i=$((i+1)); done
cp "/workspace/inputs/$f" "/workspace/outputs/$id.nii.gz"
"""


@pytest.fixture(scope="module")
def busy_image(docker_client) -> str:
    """A busybox-static image whose predict.sh prints its allowed cores, then burns one core."""
    rootfs = busybox_rootfs(("sh", "ls", "cp", "grep"),
                            {"workspace/predict.sh": BUSY_SH.encode()})
    tag = f"flare-eval-busy-{uuid.uuid4().hex[:8]}"
    docker_client.api.import_image_from_data(rootfs, repository=tag, tag="latest",
                                             changes=["WORKDIR /workspace", "ENV PATH=/bin"])
    yield f"{tag}:latest"
    docker_client.images.remove(f"{tag}:latest", force=True)


@contextlib.contextmanager
def _busy_core(client, image: str, core: int) -> Iterator[None]:
    """A busy-loop container pinned to ``core`` while the block runs (not a runner container:
    no runner label)."""
    loop = client.containers.run(image, ["sh", "-c", "while :; do :; done"], detach=True,
                                 cpuset_cpus=str(core), network_mode="none")
    try:
        yield
    finally:
        loop.remove(force=True)


def _inputs(folder: Path, ids: list[str]) -> Path:
    folder.mkdir()
    for case in ids:
        _label_file(folder / f"{case}_0000.nii.gz", (4, 5, 6))
    return folder


def _allowed(team_dir: Path, case: str) -> str:
    line = (team_dir / "logs" / f"{case}.stdout.txt").read_text().strip()
    return line.split(":", 1)[1].strip()


@pytest.mark.docker
@pytest.mark.slow
def test_two_one_core_slots_side_by_side_are_as_fast_as_one_alone(docker_client, busy_image,
                                                                   tmp_path):
    if len(parse_slots("2")) < 2:
        skip_or_fail("needs two cores")
    backend = DockerBackend(docker_client, busy_image, DockerOptions(memory="64m", shm_size="8m"))
    alone, together = [], []
    for round_ in range(ROUNDS):
        # alone: a case on slot cpu:0, a container busy on core 1 (see the module docs)
        with _busy_core(docker_client, busy_image, 1):
            alone += run_submission(backend, _inputs(tmp_path / f"a{round_}", [f"a{round_}"]), tmp_path / "alone",
                                    team=f"r{round_}", slots=parse_slots("cpu:0"), timeout_s=30,
                                    progress=False)
        # side by side: two cases at once on slots cpu:0 and cpu:1
        together += run_submission(backend, _inputs(tmp_path / f"t{round_}", [f"t{round_}a", f"t{round_}b"]),
                                   tmp_path / "together", team=f"r{round_}",
                                   slots=parse_slots("cpu:0,cpu:1"), timeout_s=30, progress=False)
    assert [r["status"] for r in alone + together] == ["ok"] * (3 * ROUNDS)
    t_alone = statistics.median(r["time_s"] for r in alone)
    t_together = statistics.median(r["time_s"] for r in together)
    assert abs(t_together / t_alone - 1) <= MARGIN, (t_alone, t_together)

    for round_ in range(ROUNDS):
        team = tmp_path / "together" / f"r{round_}"
        runs = pd.read_csv(team / "runs.csv", dtype={"slot": str, "cpuset": str})
        assert set(zip(runs["slot"], runs["cpuset"])) == {("0", "0"), ("1", "1")}
        # each container saw its slot's core and no other (the kernel's view, from inside)
        for row in runs.itertuples():
            assert _allowed(team, row.case) == row.cpuset
        # side by side, not one after another
        (a0, a1), (b0, b1) = [(pd.Timestamp(r.started_at), pd.Timestamp(r.finished_at))
                              for r in runs.itertuples()]
        assert a0 < b1 and b0 < a1
        assert _allowed(tmp_path / "alone" / f"r{round_}", f"a{round_}") == "0"
    assert docker_client.containers.list(all=True, filters={
        "label": CONTAINER_LABEL, "ancestor": busy_image}) == []


def test_the_local_sandbox_is_pinned_to_its_slot(tmp_path, make_inputs):
    if shutil.which("bwrap") is None:
        skip_or_fail("bubblewrap is not installed (apt-get install bubblewrap)")
    if len(parse_slots("2")) < 2:
        skip_or_fail("needs two cores")
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "predict.sh").write_text(BUSY_SH.replace(str(LOOPS), "10"))
    cases = [f"c{k}" for k in range(4)]
    records = run_submission(LocalBackend(folder), make_inputs(cases), tmp_path / "out",
                             team="t", slots=parse_slots("cpu:0,cpu:1"), progress=False)
    assert [r["status"] for r in records] == ["ok"] * 4
    for record in records:
        assert _allowed(tmp_path / "out" / "t", record["case"]) == record["cpuset"]
    assert {r["slot"] for r in records} <= {"0", "1"}
