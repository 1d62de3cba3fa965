"""Majority-vote ensemble of several submissions, as the FLARE23 paper's top-3 ensemble.

Three simulated teams of different quality predict the same phantoms;
:func:`flare_eval.ensemble.ensemble_folders` combines their folders voxel by voxel (ties go to
the lowest label, so background wins any tie it is part of), and every member and the ensemble
are scored. :func:`flare_eval.ensemble.majority_vote` does the same on arrays in memory.

Run::

    python examples/majority_vote.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from flare_eval import FLARE23
from flare_eval.ensemble import ensemble_folders, majority_vote
from flare_eval.io import read_label, write_label
from flare_eval.phantoms import simulate_prediction, write_phantom_set
from flare_eval.scoring import ScoreOptions, score_folders

MEMBERS = {"team_a": "excellent", "team_b": "good", "team_c": "fair"}


def main(out: Path) -> None:
    ids = write_phantom_set(out / "challenge", cases=2, seed=0)
    for t, (team, quality) in enumerate(MEMBERS.items()):
        for k, case in enumerate(ids):
            label = read_label(out / "challenge" / "labels" / f"{case}.nii.gz")
            prediction = simulate_prediction(label.data, seed=100 * t + k, quality=quality)
            write_label(out / "submissions" / team / f"{case}.nii.gz", prediction,
                        affine=label.affine)

    folders = [out / "submissions" / team for team in MEMBERS]
    ensemble_folders(folders, out / "submissions" / "ensemble", labels=FLARE23.labels)

    options = ScoreOptions(preset=FLARE23)
    for team in [*MEMBERS, "ensemble"]:
        run = score_folders(out / "submissions" / team, out / "challenge" / "labels",
                            out / "scores" / team, options=options)
        print(f"{team:9s} organ DSC {run.summary['Organ_DSC']:.4f}  "
              f"lesion DSC {run.summary['Lesion_DSC']:.4f}")

    # the same vote on arrays: three 1D "volumes", labels 0..2
    votes = [np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), np.array([1, 2, 0, 2])]
    print("majority_vote on arrays:", majority_vote(votes, labels=[1, 2]).tolist())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
    else:
        main(args.out)
