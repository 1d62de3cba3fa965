"""A slot's memory share on the real engine: each container of ``--slots cpu:0,cpu:1`` is held
to its slot's share of the engine host's RAM (half, on this 2-core host), as the kernel reports
the limit inside the container, and ``runs.csv`` and ``runner.json`` record it; a ``--memory``
over the share is refused before anything runs, in one line.

The oracle is the cgroup's own limit read by ``predict.sh`` in the container
(``memory.max`` in cgroup v2, ``memory.limit_in_bytes`` in v1) against the engine's
``MemTotal`` and ``NCPU`` (``docker info``) divided by hand.
"""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest

from flare_eval.cli.main import main
from tests.conftest import busybox_rootfs, skip_or_fail
from tests.runner.conftest import _label_file

pytestmark = pytest.mark.docker
pytest.importorskip("psutil")  # the sampler

LIMIT_SH = """\
f=$(ls /workspace/inputs)
id=${f%_0000.nii.gz}
cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
cp "/workspace/inputs/$f" "/workspace/outputs/$id.nii.gz"
"""


@pytest.fixture(scope="module")
def limit_image(docker_client) -> str:
    rootfs = busybox_rootfs(("sh", "ls", "cp", "cat"), {"workspace/predict.sh": LIMIT_SH.encode()})
    tag = f"flare-eval-memshare-{uuid.uuid4().hex[:8]}"
    docker_client.api.import_image_from_data(rootfs, repository=tag, tag="latest",
                                             changes=["WORKDIR /workspace", "ENV PATH=/bin"])
    yield f"{tag}:latest"
    docker_client.images.remove(f"{tag}:latest", force=True)


def test_each_slot_s_container_is_held_to_its_share(docker_client, limit_image, tmp_path):
    info = docker_client.info()
    if info["NCPU"] < 2 or len(__import__("os").sched_getaffinity(0)) < 2:
        skip_or_fail("needs two cores")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for case in ("c1", "c2"):
        _label_file(inputs / f"{case}_0000.nii.gz", (4, 5, 6))
    args = ["run", "--image", limit_image, "--inputs", str(inputs), "--team", "t",
            "--slots", "cpu:0,cpu:1", "--timeout", "30", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    # one core of NCPU: MemTotal / NCPU, in whole MiB (the official 28g where that is less)
    share_mib = min(info["MemTotal"] // info["NCPU"] // 2**20, 28 * 1024)
    expected = "28g" if share_mib == 28 * 1024 else f"{share_mib}m"
    team = tmp_path / "out" / "t"
    runs = pd.read_csv(team / "runs.csv", dtype=str)
    assert list(runs["memory"]) == [expected, expected]
    for case in runs["case"]:
        seen = int((team / "logs" / f"{case}.stdout.txt").read_text().split()[0])
        assert seen == share_mib * 2**20, case  # the kernel's limit inside the container
    slots = json.loads((team / "runner.json").read_text())["slots"]
    assert [s["memory"] for s in slots] == [expected, expected]

    over = f"{share_mib + 1}m"
    assert main([*args, "--out", str(tmp_path / "over"), "--memory", over]) == 2
    assert not (tmp_path / "over" / "t" / "efficiency").exists() or not any(
        (tmp_path / "over" / "t" / "efficiency").iterdir())
