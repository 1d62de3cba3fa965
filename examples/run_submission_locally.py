"""Run a submission folder on every case, as the organizers' harness does, without docker.

:class:`flare_eval.runner.LocalBackend` runs the folder's ``predict.sh`` under bubblewrap
(``apt-get install bubblewrap``) with the container contract: the case alone in
``/workspace/inputs`` (read-only), outputs to ``/workspace/outputs/<id>.nii.gz``, the
submission's files in ``/workspace``, no network. Each case is a fresh run, timed on the host;
the outputs are the official efficiency table and ``runs.csv``. Then the predictions are scored.

The submission here is a stand-in: its ``predict.sh`` copies a ready-made prediction of each
case (a simulated team's) from the submission's ``model/`` folder. A real one runs a model
(see ``reference_models/cascade/`` for the template). ``flare-eval run --backend local
--submission DIR --inputs DIR --out DIR`` does the same from the command line.

Run::

    python examples/run_submission_locally.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from flare_eval import FLARE23
from flare_eval.phantoms import write_phantom_set
from flare_eval.runner import LocalBackend, run_submission
from flare_eval.scoring import ScoreOptions, score_folders

PREDICT_SH = """\
#!/bin/sh
# The FLARE contract: every /workspace/inputs/<id>_0000.nii.gz -> /workspace/outputs/<id>.nii.gz
set -e
for image in inputs/*_0000.nii.gz; do
    case_id=$(basename "$image" _0000.nii.gz)
    cp "model/$case_id.nii.gz" "outputs/$case_id.nii.gz"
done
"""


def make_submission(folder: Path, predictions: Path) -> Path:
    """A submission folder: ``predict.sh`` and its "model" (ready-made predictions)."""
    (folder / "model").mkdir(parents=True, exist_ok=True)
    for path in predictions.glob("*.nii.gz"):
        shutil.copy(path, folder / "model" / path.name)
    (folder / "predict.sh").write_text(PREDICT_SH)
    return folder


def main(out: Path) -> None:
    write_phantom_set(out / "challenge", cases=2, seed=0, prediction_quality="excellent")
    submission = make_submission(out / "teamx", out / "challenge" / "predictions")

    # one fresh sandbox per case, timed; resumable (a re-run skips finished cases)
    rows = run_submission(LocalBackend(submission), out / "challenge" / "images", out / "results",
                          team="teamx", timeout_s=60, progress=False)
    runs = pd.DataFrame(rows)
    print(runs[["case", "status", "exit_code", "time_s"]].to_string(index=False))
    tolerance = FLARE23.runtime_tolerance_s
    print(f"all cases under the {tolerance:g} s runtime tolerance: {bool((runs['time_s'] < tolerance).all())}")
    print((out / "results" / "teamx" / "teamx_Efficiency.csv").read_text().strip())

    # score what the submission wrote, as the organizers will; score outputs next to runs.csv
    # make results/teamx/ a team folder that `flare-eval rank results` reads
    run = score_folders(out / "results" / "teamx" / "predictions", out / "challenge" / "labels",
                        out / "results" / "teamx", options=ScoreOptions(preset=FLARE23))
    print(f"Organ DSC {run.summary['Organ_DSC']:.4f}, lesion DSC {run.summary['Lesion_DSC']:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
    else:
        main(args.out)
