"""The organizer tests' challenge: phantom cases and team images built without a registry.

Each team image is a busybox-static rootfs with the team's predictions (made with
``simulate_prediction`` at the team's quality) baked in, ``docker import``-ed, ``docker save``-d
into the submissions folder and removed from the engine, so that the pipeline has to load it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flare_eval.io import read_label, write_label
from flare_eval.phantoms import simulate_prediction, write_phantom_set
from tests.conftest import busybox_rootfs, save_team_image

#: The image's submission: wait SLOW seconds, then copy the baked prediction of the case in
#: /workspace/inputs, unless the case is the team's CRASH case (exit 3, no output) or HANG case
#: (sleeps past any timeout).
PREDICT_SH = """\
f=$(ls /workspace/inputs)
id=${f%_0000.nii.gz}
case "$id" in
  CRASH) echo "boom on $id" >&2; exit 3 ;;
  HANG) sleep 120 ;;
esac
sleep SLOW
cp "/workspace/preds/$id.nii.gz" "/workspace/outputs/$id.nii.gz"
"""
APPLETS = ("sh", "ls", "cp", "sleep", "echo")


@dataclass(frozen=True)
class Team:
    name: str
    quality: str
    crash: str = "-"
    hang: str = "-"
    slow_s: float = 0.0


@dataclass(frozen=True)
class Challenge:
    """The hidden test set and the submissions folder of the tests."""

    images: Path
    labels: Path
    submissions: Path
    cases: list[str]
    tags: list[str]


def _team_rootfs(script: str, predictions: dict[str, bytes]) -> bytes:
    return busybox_rootfs(APPLETS, {"workspace/predict.sh": script.encode(), **{
        f"workspace/preds/{case}.nii.gz": data for case, data in predictions.items()}})


def build_challenge(docker_client, root: Path, *, cases: int,
                    teams: Callable[[list[str]], Sequence[Team]]) -> Challenge:
    """``cases`` phantom cases under ``root/test`` and a tarball per team of ``teams(case ids)``
    in ``root/submissions``; the images are no longer on the engine."""
    ids = write_phantom_set(root / "test", cases=cases, seed=40, shape=(32, 32, 24),
                            spacing_mm=(10.0, 10.0, 12.0), prefix="hidden")
    submissions = root / "submissions"
    submissions.mkdir()
    run_id = uuid.uuid4().hex[:8]
    tags = []
    for t, team in enumerate(teams(ids)):
        predictions = {}
        for k, case in enumerate(ids):
            label = read_label(root / "test" / "labels" / f"{case}.nii.gz")
            path = root / "preds" / team.name / f"{case}.nii.gz"
            write_label(path, simulate_prediction(label.data, 100 * t + k, quality=team.quality),
                        affine=label.affine)
            predictions[case] = path.read_bytes()
        script = (PREDICT_SH.replace("CRASH", team.crash).replace("HANG", team.hang)
                  .replace("SLOW", f"{team.slow_s:g}"))
        tag = f"flare-eval-org-{run_id}-{team.name}:latest"
        save_team_image(docker_client, _team_rootfs(script, predictions), tag,
                        submissions / f"{team.name}.tar")
        tags.append(tag)
    return Challenge(root / "test" / "images", root / "test" / "labels", submissions, ids, tags)


def remove_tags(docker_client, tags: list[str]) -> None:
    """Remove the images the pipeline loaded again (already gone is fine)."""
    for tag in tags:
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:  # noqa: BLE001 - already gone is fine in a clean-up
            pass
