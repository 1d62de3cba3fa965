"""Scoring folders of cases: pairing files, per-case records, resumable batches, official tables."""

from __future__ import annotations

from flare_eval.scoring.batch import ScoreOptions, score_folders
from flare_eval.scoring.case import CaseRecord, score_files
from flare_eval.scoring.outputs import (
    official_summary,
    per_case_table,
    scores_txt,
    tidy_table,
)

__all__ = [
    "CaseRecord",
    "ScoreOptions",
    "official_summary",
    "per_case_table",
    "score_files",
    "score_folders",
    "scores_txt",
    "tidy_table",
]
