"""The fixed paths of the hosting platforms' containers (plain constants: the CLI's defaults)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["GC_INPUT", "GC_GROUND_TRUTH", "GC_OUTPUT", "CODABENCH_PROGRAM", "CODABENCH_REF",
           "CODABENCH_RES", "CODABENCH_OUTPUT"]

#: grand-challenge.org: the jobs and predictions.json, the ground truth, the metrics.json folder.
GC_INPUT = Path("/input")
GC_GROUND_TRUTH = Path("/opt/ml/input/data/ground_truth")
GC_OUTPUT = Path("/output")

#: Codabench / CodaLab compute worker: the scoring program's folder (its working directory),
#: the reference data, the submission's results, and the scores folder.
CODABENCH_PROGRAM = Path("/app/program")
CODABENCH_REF = Path("/app/input/ref")
CODABENCH_RES = Path("/app/input/res")
CODABENCH_OUTPUT = Path("/app/output")
