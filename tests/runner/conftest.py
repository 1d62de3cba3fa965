"""Fixtures of the runner tests: tiny cases, a scripted submission, a busybox test image."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import busybox_rootfs

#: Case ids pick the behaviour of the test submission (busybox sh, no Python inside).
PREDICT_SH = """\
f=$(ls /workspace/inputs)
id=${f%_0000.nii.gz}
out=/workspace/outputs
echo "running $id"
case "$id" in
  ok*) cp "/workspace/inputs/$f" "$out/$id.nii.gz" ;;
  hang*) sleep 30 ;;
  crash*) echo "boom on $id" >&2; exit 3 ;;
  oom*) dd if=/dev/zero of=/dev/null bs=64M count=1 ;;
  noout*) echo "forgot to write" ;;
  wrongname*) cp "/workspace/inputs/$f" "$out/$f" ;;
  badshape*) cp bad.nii.gz "$out/$id.nii.gz" ;;
  garbage*) echo garbage > "$out/$id.nii.gz" ;;
  readonly*) touch /workspace/inputs/x || exit 9 ;;
esac
"""

BUSYBOX_APPLETS = ("sh", "ls", "cp", "sleep", "dd", "echo", "cat", "touch")


def _label_file(path: Path, shape: tuple[int, int, int]) -> None:
    data = np.zeros(shape, dtype=np.uint8)
    data[1:3, 1:3, 1:3] = 1
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1.0])), path)


@pytest.fixture
def make_inputs(tmp_path: Path):
    """``make_inputs(ids)`` writes ``<id>_0000.nii.gz`` (4x5x6 uint8) per id into a folder."""

    def make(ids: list[str]) -> Path:
        folder = tmp_path / "inputs"
        folder.mkdir(exist_ok=True)
        for case in ids:
            _label_file(folder / f"{case}_0000.nii.gz", (4, 5, 6))
        return folder

    return make


@pytest.fixture
def submission(tmp_path: Path) -> Path:
    """A submission folder: ``predict.sh`` above and ``bad.nii.gz`` (3x3x3, a wrong shape)."""
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "predict.sh").write_text(PREDICT_SH)
    _label_file(folder / "bad.nii.gz", (3, 3, 3))
    return folder


@pytest.fixture(scope="session")
def busybox_image(docker_client, tmp_path_factory) -> str:
    """A ~2 MB image from a busybox-static rootfs with the test submission in /workspace."""
    folder = tmp_path_factory.mktemp("image")
    _label_file(folder / "bad.nii.gz", (3, 3, 3))
    rootfs = busybox_rootfs(BUSYBOX_APPLETS, {
        "workspace/predict.sh": PREDICT_SH.encode(),
        "workspace/bad.nii.gz": (folder / "bad.nii.gz").read_bytes()})
    tag = f"flare-eval-test-{uuid.uuid4().hex[:8]}"
    docker_client.api.import_image_from_data(
        rootfs, repository=tag, tag="latest",
        changes=["WORKDIR /workspace", "ENV PATH=/bin"],
    )
    yield f"{tag}:latest"
    docker_client.images.remove(f"{tag}:latest", force=True)


MIB = 1024 * 1024


class _FakeNVML:
    """Scripted NVML: used memory as a function of the time since init, a slow query."""

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    def __init__(self, used_mib=lambda t: 1000.0, query_s=0.0, slow_calls=(), processes=(),
                 n_gpus=1):
        self.used_mib, self.query_s, self.slow_calls = used_mib, query_s, slow_calls
        self.processes = processes
        self.n_gpus = n_gpus
        # every handle asked for, in order (which GPU was sampled; "uuid ..." when by UUID)
        self.handles: list = []
        self.calls = 0
        self.shutdown = False

    def nvmlInit(self):
        self.t0 = time.monotonic()

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < self.n_gpus:
            raise self.NVMLError(f"Invalid Argument (index {index})")
        self.handles.append(f"handle{index}")
        return f"handle{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        index = int(uuid.removeprefix("GPU-fake-")) if uuid.startswith("GPU-fake-") else -1
        if not 0 <= index < self.n_gpus:
            raise self.NVMLError(f"Not Found (UUID {uuid})")
        self.handles.append(f"uuid handle{index}")
        return f"handle{index}"

    def nvmlDeviceGetCount(self):
        return self.n_gpus

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-fake-{handle[len('handle'):]}"

    def nvmlDeviceGetName(self, handle):
        return b"Fake GPU"  # older bindings return bytes

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.calls += 1
        time.sleep(self.slow_calls[self.calls - 1] if self.calls <= len(self.slow_calls)
                   else self.query_s)
        used = self.used_mib(time.monotonic() - self.t0)
        total = 16384 * MIB
        return SimpleNamespace(total=total, free=total - int(used * MIB), used=int(used * MIB))

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=mib * MIB) for pid, mib in self.processes]


@pytest.fixture
def FakeNVML() -> type:  # noqa: N802 - a class, used as one
    """The scripted NVML class (construct it with the scenario of the test)."""
    return _FakeNVML
