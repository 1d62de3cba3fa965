"""The Codabench scoring program, run as the compute worker runs it.

The worker creates a container of the competition's image with the command of the program's
``metadata.yaml`` (a string, split by the docker SDK), working directory ``/app/program``, the
program, output, data, shared and input folders bound, capabilities dropped and
``no-new-privileges``; it then reads ``/app/output/scores.json``.  The image here is built
without a registry: an empty rootfs with ``docker import``, and this machine's Python (with
flare-eval and its dependencies) bound read-only, as an organizer's image would have them
installed.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest

import flare_eval
from flare_eval.cli.main import main
from flare_eval.definition import load_definition
from flare_eval.errors import EXIT_OK, EXIT_PARTIAL
from flare_eval.phantoms import write_phantom_set
from flare_eval.platforms.codabench import leaderboard_keys, run_scoring_program
from flare_eval.presets import FLARE23
from tests.conftest import require_module

yaml = require_module("yaml")

REPO = Path(flare_eval.__file__).resolve().parents[1]
# what the worker drops (compute_worker.py), and its security option
CAP_DROP = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
            "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    """A worker's folders: input/ref (3 references), input/res (2 predictions), and the bundle."""
    root = tmp_path_factory.mktemp("codabench")
    write_phantom_set(root / "phantoms", cases=3, seed=51, shape=(48, 40, 24),
                      spacing_mm=(4.0, 5.0, 7.5), prediction_quality="fair", missing_predictions=1)
    shutil.copytree(root / "phantoms" / "labels", root / "input" / "ref")
    shutil.copytree(root / "phantoms" / "predictions", root / "input" / "res")
    assert main(["bundle", "codabench", "--preset", "flare23", "--out", str(root / "bundle")]) == EXIT_OK
    return root


@pytest.fixture(scope="module")
def python_image(docker_client):
    """An image with nothing but mount points, PATH to this Python and PYTHONPATH to flare-eval."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("bin", "lib", "lib64", "sbin"):  # merged /usr, as the host
            if Path(f"/{name}").is_symlink():
                link = tarfile.TarInfo(name)
                link.type, link.linkname = tarfile.SYMTYPE, str(Path(f"/{name}").readlink())
                tar.addfile(link)
        for name, mode in (("tmp", 0o1777), ("app", 0o755), ("usr", 0o755)):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, mode
            tar.addfile(entry)
    tag = f"flare-eval-codabench-{uuid.uuid4().hex[:8]}"
    docker_client.api.import_image_from_data(
        buffer.getvalue(), repository=tag, tag="latest",
        changes=[f"ENV PATH={Path(sys.executable).parent}:/usr/bin", f"ENV PYTHONPATH={REPO}",
                 "ENV HOME=/tmp"])
    yield f"{tag}:latest"
    docker_client.images.remove(f"{tag}:latest", force=True)


def run_like_the_worker(client, image, root, command):
    """The worker's container: its binds, options and working directory, plus the read-only
    system folders that stand in for the image's installed Python."""
    for name in ("output", "data", "shared"):
        (root / name).mkdir(exist_ok=True)
    binds = {
        str(root / "bundle" / "scoring_program"): {"bind": "/app/program", "mode": "z"},
        str(root / "output"): {"bind": "/app/output", "mode": "z"},
        str(root / "data"): {"bind": "/app/data", "mode": "ro"},
        str(root / "shared"): {"bind": "/app/shared", "mode": "rw"},
        str(root / "input"): {"bind": "/app/input", "mode": "rw"},
        "/usr": {"bind": "/usr", "mode": "ro"},
        sys.base_prefix: {"bind": sys.base_prefix, "mode": "ro"},
        sys.prefix: {"bind": sys.prefix, "mode": "ro"},
        str(REPO): {"bind": str(REPO), "mode": "ro"},
    }
    host_config = client.api.create_host_config(
        auto_remove=False, cap_drop=CAP_DROP, binds=binds, security_opt=["no-new-privileges"],
        network_mode="none")
    container = client.api.create_container(
        image, command=command, working_dir="/app/program", environment=["PYTHONUNBUFFERED=1"],
        host_config=host_config, detach=False)
    try:
        client.api.start(container)
        status = client.api.wait(container, timeout=120)["StatusCode"]
        logs = client.api.logs(container).decode(errors="replace")
    finally:
        client.api.remove_container(container, force=True)
    return status, logs


@pytest.mark.docker
def test_scores_json_equals_score_in_a_worker_container(docker_client, python_image, challenge,
                                                        tmp_path):
    root = tmp_path / "worker"
    shutil.copytree(challenge, root, symlinks=True)
    metadata = yaml.safe_load((root / "bundle" / "scoring_program" / "metadata.yaml").read_text())
    status, logs = run_like_the_worker(docker_client, python_image, root, metadata["command"])
    assert status == 0, logs
    output = root / "output"
    assert sorted(p.name for p in output.iterdir()) == ["detailed_results.html", "scores.json",
                                                        "scores.txt"]
    scores = strict_json(output / "scores.json")
    # the same files through flare-eval score (one prediction is missing: a failed case)
    assert main(["score", "--pred", str(challenge / "input" / "res"), "--gt",
                 str(challenge / "input" / "ref"), "--out", str(tmp_path / "score")]) == EXIT_PARTIAL
    summary = json.loads((tmp_path / "score" / "run.json").read_text())["summary"]
    assert scores == summary  # every scores.txt key, no other
    columns = yaml.safe_load((root / "bundle" / "competition.yaml").read_text())
    keys = [c["key"] for c in columns["leaderboards"][0]["columns"]]
    assert sorted(keys) == sorted(scores) and keys[:2] == ["Organ_DSC", "Organ_NSD"]
    legacy = yaml.safe_load((output / "scores.txt").read_text())
    assert legacy == {k: round(v, 4) for k, v in summary.items()}
    report = (output / "detailed_results.html").read_text()
    assert "phantom_0053: missing_prediction" in report
    # the program carries its definition, and says which one it used
    program = root / "bundle" / "scoring_program"
    assert load_definition(program / "challenge.toml") == FLARE23
    assert FLARE23.content_sha256 in report and FLARE23.content_sha256 in logs


def test_undefined_scores_are_null_and_nothing_to_score_is_an_error(challenge, tmp_path, capsys):
    ref = tmp_path / "ref"
    shutil.copytree(challenge / "input" / "ref", ref)
    for path in ref.iterdir():  # every reference unreadable: every mean is undefined
        path.write_bytes(b"\x1f\x8b not gzip")
    program = challenge / "bundle" / "scoring_program"
    assert run_scoring_program(program, ref=ref, res=challenge / "input" / "res",
                               output=tmp_path / "out") == 0
    text = (tmp_path / "out" / "scores.json").read_text()
    assert "NaN" not in text and strict_json(tmp_path / "out" / "scores.json")["Liver_DSC"] is None
    assert yaml.safe_load((tmp_path / "out" / "scores.txt").read_text())["Organ_NSD"] is None
    assert list(strict_json(tmp_path / "out" / "scores.json")) == leaderboard_keys(FLARE23)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_scoring_program(program, ref=empty, res=challenge / "input" / "res",
                               output=tmp_path / "out2") == 3
    assert f"--gt folder {empty} holds no" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_a_definition_without_organs_has_no_organ_columns(tmp_path, capsys):
    """FLARE24 task 1 (a lesion class alone): the leaderboard is the lesion's two columns, with
    the values of the hand-built cases of tests/test_challenge_flare24.py."""
    from tests.test_challenge_flare24 import _write_task1

    _write_task1(tmp_path)
    assert main(["bundle", "codabench", "--preset", "flare24-task1", "--out",
                 str(tmp_path / "bundle")]) == EXIT_OK
    assert "Organ" not in (tmp_path / "bundle" / "competition.yaml").read_text()
    capsys.readouterr()
    assert run_scoring_program(tmp_path / "bundle" / "scoring_program", ref=tmp_path / "gt",
                               res=tmp_path / "pred", output=tmp_path / "out") == 0
    assert strict_json(tmp_path / "out" / "scores.json") == {"Lesion_DSC": 0.322, "Lesion_NSD": 0.3333}
    assert "Lesion_DSC 0.322, Lesion_NSD 0.3333" in capsys.readouterr().out
