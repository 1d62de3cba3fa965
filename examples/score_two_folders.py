"""Score a folder of predictions against a folder of references with the FLARE23 rules.

Uses the built-in phantoms (synthetic CT with FLARE23 labels and a simulated team's
predictions, one of them missing), then :func:`flare_eval.scoring.score_folders`, the function
behind ``flare-eval score``. With your own data, skip the phantoms and point ``score_folders``
at your two folders (files paired by name: ``<id>.nii.gz``).

Run::

    python examples/score_two_folders.py [--out DIR]

Without ``--out`` everything goes to a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from flare_eval import FLARE23
from flare_eval.phantoms import write_phantom_set
from flare_eval.scoring import ScoreOptions, score_folders


def main(out: Path) -> None:
    # 1. demo data: 3 phantoms and a "good" simulated team that failed the last case
    write_phantom_set(out / "challenge", cases=3, seed=0, prediction_quality="good",
                      missing_predictions=1)

    # 2. score: the same numbers as `flare-eval score --pred ... --gt ... --out ...`
    run = score_folders(out / "challenge" / "predictions", out / "challenge" / "labels",
                        out / "scores", options=ScoreOptions(preset=FLARE23))

    print(f"Organ DSC {run.summary['Organ_DSC']:.4f}, organ NSD {run.summary['Organ_NSD']:.4f}, "
          f"lesion DSC {run.summary['Lesion_DSC']:.4f}")
    for record in run.failed:  # a missing prediction is a failed case, scored as empty
        print(f"failed case {record.case}: {record.status} ({record.message})")

    # 3. the tidy table: one row per case x class x metric
    long = pd.read_csv(out / "scores" / "metrics_long.csv")
    per_class = long.pivot_table(index="class", columns="metric", values="value", aggfunc="mean",
                                 sort=False)
    print(per_class[["dsc", "nsd"]].round(3).to_string())
    print(f"outputs: {sorted(p.name for p in (out / 'scores').iterdir() if p.is_file())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
    else:
        main(args.out)
