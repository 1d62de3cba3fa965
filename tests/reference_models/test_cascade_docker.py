"""The one true end-to-end test of a submission: the cascade in a real container, run by the runner.

The image is built without a registry by ``offline_image.py`` (this machine's Python, torch CPU,
the model and a static busybox, ``docker import``ed), then ``run_submission`` starts one fresh
container per case through the docker backend, exactly as an organiser's run would.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from flare_eval.phantoms import write_phantom_set
from flare_eval.presets import FLARE23
from flare_eval.scoring.case import score_files
from tests.conftest import require_module, skip_or_fail

pytest.importorskip("torch")
require_module("psutil")

import offline_image  # noqa: E402  (reference_models/cascade, on sys.path through conftest.py)
from flare_eval.runner import DockerBackend, DockerOptions, run_submission  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def cascade_image(docker_client, tmp_path_factory) -> str:
    """The cascade as an image imported from a root filesystem tarball; removed afterwards."""
    if shutil.which("busybox") is None:
        skip_or_fail("busybox is not installed (apt-get install busybox-static)")
    tar = tmp_path_factory.mktemp("cascade-image") / "rootfs.tar"
    offline_image.write_rootfs(tar)
    tag = f"flare-eval-cascade-{uuid.uuid4().hex[:8]}"
    docker_client.api.import_image_from_file(str(tar), repository=tag, tag="latest",
                                             changes=offline_image.image_changes())
    tar.unlink()
    yield f"{tag}:latest"
    docker_client.images.remove(f"{tag}:latest", force=True)


def _reoriented_pli(image_path: Path, out_path: Path) -> None:
    """Store the phantom with axes (P, L, I) instead of (L, P, S): same voxels, other order."""
    source = nib.load(str(image_path))
    data = np.asarray(source.dataobj)
    nz = data.shape[2]
    # new[i, j, k] = old[j, i, nz - 1 - k]
    permute = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, nz - 1], [0, 0, 0, 1]], dtype=float)
    nib.save(nib.Nifti1Image(data.transpose(1, 0, 2)[:, :, ::-1].copy(), source.affine @ permute),
             str(out_path))


def test_cascade_image_runs_through_the_docker_runner(docker_client, cascade_image, tmp_path):
    data = tmp_path / "phantoms"
    # seeds from 9100 on were never used in training (train_baseline.sh uses 0-19)
    (case,) = write_phantom_set(data, cases=1, seed=9100)
    inputs = data / "images"
    _reoriented_pli(inputs / f"{case}_0000.nii.gz", inputs / f"{case}pli_0000.nii.gz")

    backend = DockerBackend(docker_client, cascade_image, DockerOptions(memory="4g", shm_size="256m"))
    records = run_submission(backend, inputs, tmp_path / "out", team="cascade", timeout_s=300,
                             progress=False)
    assert [(r["case"], r["status"]) for r in records] == [(case, "ok"), (f"{case}pli", "ok")], records
    predictions = tmp_path / "out" / "cascade" / "predictions"

    for name in (case, f"{case}pli"):
        source = nib.load(str(inputs / f"{name}_0000.nii.gz"))
        out = nib.load(str(predictions / f"{name}.nii.gz"))
        assert out.shape == source.shape and out.get_data_dtype() == np.uint8
        np.testing.assert_allclose(out.affine, source.affine, atol=1e-5)

    # the container reorients to RAS before the networks: the same voxels in another stored
    # order must give the same labels, voxel for voxel
    plain = np.asarray(nib.load(str(predictions / f"{case}.nii.gz")).dataobj)
    pli = np.asarray(nib.load(str(predictions / f"{case}pli.nii.gz")).dataobj)
    np.testing.assert_array_equal(pli[:, :, ::-1].transpose(1, 0, 2), plain)

    record = score_files(data / "labels" / f"{case}.nii.gz", predictions / f"{case}.nii.gz", preset=FLARE23)
    dsc = {c["label"]: c["dsc"] for c in record.classes}
    assert record.status == "ok"
    assert dsc[1] > 0.9  # the liver, the largest organ: a real segmentation, not a blank mask
    assert np.mean([dsc[label] for label in range(1, 14)]) > 0.6
