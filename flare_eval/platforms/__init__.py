"""Hosting platforms: grand-challenge.org evaluation methods and Codabench scoring programs.

Only the platforms' fixed paths are re-exported here (the CLI's defaults, read while building
the parser, must not import numpy); the workers are :mod:`flare_eval.platforms.grand_challenge`
and :mod:`flare_eval.platforms.codabench`.
"""

from __future__ import annotations

from flare_eval.platforms.paths import (
    CODABENCH_OUTPUT,
    CODABENCH_PROGRAM,
    CODABENCH_REF,
    CODABENCH_RES,
    GC_GROUND_TRUTH,
    GC_INPUT,
    GC_OUTPUT,
)

__all__ = ["CODABENCH_OUTPUT", "CODABENCH_PROGRAM", "CODABENCH_REF", "CODABENCH_RES",
           "GC_GROUND_TRUTH", "GC_INPUT", "GC_OUTPUT"]
