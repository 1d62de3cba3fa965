"""The manifest of an evaluation (no docker needed): tarballs found, digests, changes refused,
and the checks ``evaluate`` makes before it touches an engine."""

from __future__ import annotations

import json
import os

import pytest

from flare_eval.errors import ConfigError, InputError
from flare_eval.organizer import MANIFEST_FILE, claim_manifest, evaluate, find_submissions
from flare_eval.phantoms import write_phantom_set

# SHA-256 of b"abc" (FIPS 180-2, appendix B.1)
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.fixture
def inputs(tmp_path):
    submissions = tmp_path / "subs"
    submissions.mkdir()
    (submissions / "alpha.tar").write_bytes(b"abc")
    (submissions / "beta.tar.gz").write_bytes(b"abcd")
    (submissions / "notes.txt").write_text("not a submission")
    write_phantom_set(tmp_path / "test", cases=2, seed=5, shape=(16, 16, 12),
                      spacing_mm=(20.0, 20.0, 24.0))
    return submissions, tmp_path / "test" / "images", tmp_path / "test" / "labels"


def test_find_submissions(inputs, tmp_path):
    submissions, _, _ = inputs
    assert [(s.team, s.path.name) for s in find_submissions(submissions)] == [
        ("alpha", "alpha.tar"), ("beta", "beta.tar.gz")]
    (submissions / "alpha.tgz").write_bytes(b"x")
    with pytest.raises(ConfigError, match="team 'alpha' has two tarballs"):
        find_submissions(submissions)
    (submissions / "alpha.tgz").unlink()
    (submissions / "ranking.tar").write_bytes(b"x")
    with pytest.raises(ConfigError, match="'ranking' cannot name a team"):
        find_submissions(submissions)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="found none"):
        find_submissions(tmp_path / "empty")


def test_manifest_records_and_refuses_changes(inputs, tmp_path):
    submissions, images, labels = inputs
    out = tmp_path / "out"
    out.mkdir()
    config = {"timeout_s": 5.0, "seed": 0}
    first = claim_manifest(out, config, find_submissions(submissions), images, labels)
    assert first["inputs"]["submissions"][0]["sha256"] == ABC_SHA256
    assert [e["file"] for e in first["inputs"]["labels"]] == ["phantom_0005.nii.gz",
                                                              "phantom_0006.nii.gz"]
    assert json.loads((out / MANIFEST_FILE).read_text()) == first
    # the same again is accepted; a touched but identical tarball too (digest recomputed)
    claim_manifest(out, config, find_submissions(submissions), images, labels)
    os.utime(submissions / "alpha.tar", ns=(1, 1))
    again = claim_manifest(out, config, find_submissions(submissions), images, labels)
    assert again["inputs"]["submissions"][0] == {**first["inputs"]["submissions"][0],
                                                 "mtime_ns": 1}
    with pytest.raises(ConfigError, match=r"configuration\.timeout_s: 5\.0 then, 6\.0 now"):
        claim_manifest(out, {**config, "timeout_s": 6.0}, find_submissions(submissions),
                       images, labels)
    (submissions / "alpha.tar").write_bytes(b"abd")  # same size, other content
    with pytest.raises(ConfigError, match=r"inputs\.submissions: changed \['alpha\.tar'\]"):
        claim_manifest(out, config, find_submissions(submissions), images, labels)
    (submissions / "alpha.tar").write_bytes(b"abc")
    (labels / "phantom_0006.nii.gz").unlink()
    with pytest.raises(ConfigError, match=r"inputs\.labels: removed \['phantom_0006\.nii\.gz'\]"):
        claim_manifest(out, config, find_submissions(submissions), images, labels)


def test_evaluate_checks_before_touching_an_engine(inputs, tmp_path):
    submissions, images, labels = inputs
    with pytest.raises(ConfigError, match="--bootstrap must be 0 or more, got -1"):
        evaluate(submissions, images, labels, tmp_path / "o", n_bootstrap=-1)
    with pytest.raises(ConfigError, match="--timeout must be a positive"):
        evaluate(submissions, images, labels, tmp_path / "o", timeout_s=0)
    (labels / "phantom_0006.nii.gz").unlink()
    with pytest.raises(InputError, match=r"images without a label: \['phantom_0006'\]"):
        evaluate(submissions, images, labels, tmp_path / "o")
    assert not (tmp_path / "o").exists()
