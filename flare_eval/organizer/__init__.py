"""The organizer's pipeline: every team tarball run, scored, ranked and reported, resumably.

:func:`evaluate` is ``flare-eval evaluate``; :mod:`flare_eval.organizer.manifest` records the
configuration and inputs an evaluation was started with and checks every re-run against them.
Importing this package loads neither docker nor dask nor matplotlib.
"""

from __future__ import annotations

from flare_eval.organizer.manifest import (
    MANIFEST_FILE,
    STATUS_FILE,
    TARBALL_SUFFIXES,
    Submission,
    build_manifest,
    claim_manifest,
    find_submissions,
    read_status,
    write_status,
)
from flare_eval.organizer.pipeline import FAILURE_COLUMNS, Evaluation, ProgressCallback, evaluate

__all__ = [
    "FAILURE_COLUMNS",
    "MANIFEST_FILE",
    "STATUS_FILE",
    "TARBALL_SUFFIXES",
    "Evaluation",
    "ProgressCallback",
    "Submission",
    "build_manifest",
    "claim_manifest",
    "evaluate",
    "find_submissions",
    "read_status",
    "write_status",
]
