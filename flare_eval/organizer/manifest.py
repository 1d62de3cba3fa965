"""What an evaluation was started with, checked on every re-run, and how far it has come.

``OUT/manifest.json`` records everything that changes the results of ``flare-eval evaluate``:
the configuration (preset, lesion options, timeout, container settings, bootstrap) and the
inputs (each team tarball's name, size and SHA-256; the name and size of every test image and
label; the three folders).  A re-run into the same ``OUT`` must find the same manifest, or it
is refused with the differences named, so that results of two configurations or two input
sets are never mixed.

``OUT/status.json`` says how far the evaluation has come: ``complete`` is ``false`` until the
leaderboard and the report of a finished evaluation are written, and per team what ran, what
was scored and what failed.  Both files are written atomically.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flare_eval.errors import ConfigError, InputError
from flare_eval.io import atomic_write_text
from flare_eval.report.results import RANKING_FOLDER

__all__ = [
    "MANIFEST_FILE",
    "STATUS_FILE",
    "TARBALL_SUFFIXES",
    "Submission",
    "find_submissions",
    "build_manifest",
    "claim_manifest",
    "read_status",
    "write_status",
]

MANIFEST_FILE = "manifest.json"
STATUS_FILE = "status.json"
#: File endings of ``docker save`` tarballs; the team is the file name without it.
TARBALL_SUFFIXES: tuple[str, ...] = (".tar.gz", ".tgz", ".tar")
_HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class Submission:
    """One team's ``docker save`` tarball."""

    team: str
    path: Path


def find_submissions(folder: Path) -> list[Submission]:
    """Every ``<team>.tar`` / ``.tar.gz`` / ``.tgz`` of ``folder``, sorted by team.

    Raises
    ------
    InputError
        No such folder, or no tarball in it.
    ConfigError
        Two tarballs of one team, or a team name that cannot be a results folder (hidden, or
        ``ranking``, the folder of the leaderboard).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--submissions {folder}: expected a folder, found none")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in TARBALL_SUFFIXES if path.name.endswith(s)), None)
        if suffix is None or not path.is_file():
            continue
        team = path.name[: -len(suffix)]
        if team in found:
            raise ConfigError(f"--submissions {folder}: team {team!r} has two tarballs "
                              f"({found[team].name}, {path.name})", hint="keep one per team")
        if not team or team.startswith(".") or team == RANKING_FOLDER:
            raise ConfigError(f"--submissions {path}: {team!r} cannot name a team "
                              f"(hidden, empty or {RANKING_FOLDER!r}, the leaderboard's folder)",
                              hint="rename the tarball")
        found[team] = path
    if not found:
        raise InputError(f"--submissions {folder}: expected <team>.tar or <team>.tar.gz files "
                         "made by 'docker save', found none")
    return [Submission(team, path) for team, path in sorted(found.items())]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tarball_entry(submission: Submission, previous: dict[str, dict[str, Any]]) -> dict[str, Any]:
    stat = submission.path.stat()
    entry = {"team": submission.team, "file": submission.path.name, "size": stat.st_size,
             "mtime_ns": stat.st_mtime_ns}
    known = previous.get(submission.path.name)
    # Hashing every multi-GB tarball on every resume would cost minutes: an unchanged size and
    # modification time reuse the recorded digest (the image ID is checked again by the runner).
    if known and all(known.get(k) == entry[k] for k in ("size", "mtime_ns")):
        entry["sha256"] = known["sha256"]
    else:
        entry["sha256"] = _sha256(submission.path)
    return entry


def _files(folder: Path) -> list[dict[str, Any]]:
    return [{"file": p.name, "size": p.stat().st_size}
            for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]


def build_manifest(configuration: dict[str, Any], submissions: list[Submission],
                   images_dir: Path, labels_dir: Path, *,
                   previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of an evaluation (see the module docs).

    Parameters
    ----------
    configuration
        Every setting that changes the results, as plain data.
    submissions
        The team tarballs.
    images_dir, labels_dir
        The hidden test set.
    previous
        The manifest already in the output folder, whose digests are reused for tarballs of
        unchanged size and modification time.
    """
    import flare_eval

    known = {e["file"]: e for e in (previous or {}).get("inputs", {}).get("submissions", [])}
    folder = submissions[0].path.parent if submissions else Path()
    return {
        "configuration": json.loads(json.dumps(configuration)),  # tuples as lists, as read back
        "inputs": {
            "submissions_dir": str(folder.resolve()),
            "images_dir": str(Path(images_dir).resolve()),
            "labels_dir": str(Path(labels_dir).resolve()),
            "submissions": [_tarball_entry(s, known) for s in submissions],
            "images": _files(Path(images_dir)),
            "labels": _files(Path(labels_dir)),
        },
        "flare_eval_version": flare_eval.__version__,
        "created_at": (previous or {}).get("created_at")
        or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _comparable(section: Any) -> Any:
    """``section`` without modification times (a touched but identical tarball is the same)."""
    if isinstance(section, dict):
        return {k: _comparable(v) for k, v in section.items() if k != "mtime_ns"}
    if isinstance(section, list):
        return [_comparable(v) for v in section]
    return section


def _describe_list(before: list[dict[str, Any]], now: list[dict[str, Any]]) -> str:
    old = {e["file"]: e for e in _comparable(before)}
    new = {e["file"]: e for e in _comparable(now)}
    parts = [f"{word} {names}" for word, names in (
        ("added", sorted(set(new) - set(old))),
        ("removed", sorted(set(old) - set(new))),
        ("changed", sorted(k for k in set(old) & set(new) if old[k] != new[k])),
    ) if names]
    return "; ".join(parts)


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    differences = []
    for section in ("configuration", "inputs"):
        old, new = before.get(section, {}), now[section]
        for key in sorted(set(old) | set(new)):
            a, b = _comparable(old.get(key)), _comparable(new.get(key))
            if a == b:
                continue
            if isinstance(a, list) and isinstance(b, list):
                differences.append(f"{section}.{key}: {_describe_list(old[key], new[key])}")
            else:
                differences.append(f"{section}.{key}: {json.dumps(a)} then, {json.dumps(b)} now")
    return differences


def claim_manifest(out_dir: Path, configuration: dict[str, Any], submissions: list[Submission],
                   images_dir: Path, labels_dir: Path) -> dict[str, Any]:
    """Write the manifest of a new evaluation, or check that a re-run matches the recorded one.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    ConfigError
        When ``out_dir`` holds an evaluation of another configuration or input set; the
        message names each difference.
    """
    path = Path(out_dir) / MANIFEST_FILE
    previous = json.loads(path.read_text()) if path.is_file() else None
    manifest = build_manifest(configuration, submissions, images_dir, labels_dir,
                              previous=previous)
    if previous is not None:
        differences = _differences(previous, manifest)
        if differences:
            raise ConfigError(
                f"{out_dir} holds an evaluation of another configuration or input set, which "
                "would be mixed with this one: " + " | ".join(differences),
                hint="give a new --out folder (or restore the inputs and options of the first "
                     "run); to re-rank finished results differently use 'flare-eval rank'",
            )
    if manifest != previous:  # new, or modification times to remember
        atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_status(out_dir: Path) -> dict[str, Any] | None:
    """``OUT/status.json``, or ``None`` before the first run."""
    path = Path(out_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_status(out_dir: Path, status: dict[str, Any]) -> None:
    """Write ``OUT/status.json`` atomically, stamped with the time."""
    stamped = {**status, "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(Path(out_dir) / STATUS_FILE, json.dumps(stamped, indent=1) + "\n")
