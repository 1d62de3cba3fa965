"""The tables of a scoring run, built from case records: official formats and the tidy long table.

- :func:`per_case_table`: the official per-case CSV, ``Name`` then 14 ``<class>_DSC`` then
  14 ``<class>_NSD`` (FLARE23 names: ``Liver`` ... ``LK``, ``Lesion``).
- :func:`official_summary` / :func:`scores_txt`: ``scores.txt``: each column's mean of the
  rounded per-case values, rounded to 4 places; ``Organ_DSC`` / ``Organ_NSD`` the rounded mean of
  the 13 rounded organ column means (the lesion excluded), as the official script computes them,
  and absent for a definition without organ classes.
  NaN values (an unreadable reference; the ``"nan"`` single-slice policy) are left out of the
  means; the run record says how many.
- :func:`tidy_table`: one row per case x class x metric (dsc, nsd, hd95): the common currency of
  the toolkit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flare_eval.metrics.lesions import LESION_INSTANCE_COLUMNS, LESION_SUMMARY_COLUMNS
from flare_eval.presets import Preset
from flare_eval.scoring.case import CaseRecord

__all__ = [
    "per_case_table",
    "official_summary",
    "scores_txt",
    "tidy_table",
    "cases_table",
    "lesions_per_case_table",
    "lesion_instances_table",
]


def per_case_table(records: Sequence[CaseRecord], preset: Preset) -> pd.DataFrame:
    """The official per-case table: ``Name``, ``<class>_DSC`` x 14, ``<class>_NSD`` x 14."""
    rows = []
    for record in records:
        by_label = {c["label"]: c for c in record.classes}
        row: dict[str, object] = {"Name": record.name}
        for metric in ("dsc", "nsd"):
            for info in preset.classes:
                row[f"{info.name}_{metric.upper()}"] = by_label[info.label][metric]
        rows.append(row)
    columns = ["Name"] + [
        f"{c.name}_{m}" for m in ("DSC", "NSD") for c in preset.classes
    ]
    return pd.DataFrame(rows, columns=columns)


def official_summary(per_case: pd.DataFrame, preset: Preset) -> dict[str, float]:
    """The ``scores.txt`` values, in the official key order."""
    summary: dict[str, float] = {}
    for metric in ("DSC", "NSD"):
        for info in preset.classes:
            values = per_case[f"{info.name}_{metric}"].to_numpy(dtype=np.float64)
            values = values[~np.isnan(values)]
            summary[f"{info.name}_{metric}"] = (
                float(np.round(np.mean(values), preset.decimals)) if values.size else float("nan")
            )
    for metric in ("DSC", "NSD"):
        organ_means = [summary[f"{c.name}_{metric}"] for c in preset.classes if c.label in preset.organ_labels]
        if organ_means:  # a definition of a lesion class alone (FLARE24 task 1) has no organ means
            summary[f"Organ_{metric}"] = float(np.round(np.mean(organ_means), preset.decimals))
    return summary


def scores_txt(summary: dict[str, float]) -> str:
    """``Key: value`` lines with four decimals, as the official script writes ``scores.txt``."""
    return "".join(f"{key}: {value:.4f}\n" for key, value in summary.items())


def tidy_table(records: Sequence[CaseRecord], preset: Preset) -> pd.DataFrame:
    """One row per case x class x metric: ``case, name, label, class, metric, value, status``."""
    names = {c.label: c.name for c in preset.classes}
    rows = [
        (r.case, r.name, c["label"], names[c["label"]], metric, c[key], r.status)
        for r in records
        for c in r.classes
        for metric, key in (("dsc", "dsc"), ("nsd", "nsd"), ("hd95", "hd95_mm"))
    ]
    return pd.DataFrame(rows, columns=["case", "name", "label", "class", "metric", "value", "status"])


def cases_table(records: Sequence[CaseRecord]) -> pd.DataFrame:
    """One row per case: ``case, name, status, message``."""
    return pd.DataFrame(
        [(r.case, r.name, r.status, r.message) for r in records],
        columns=["case", "name", "status", "message"],
    )


def lesions_per_case_table(records: Sequence[CaseRecord]) -> pd.DataFrame:
    """``Name`` then the lesion summary of every case that has one."""
    rows = [{"Name": r.name, **r.lesions} for r in records if r.lesions is not None]
    return pd.DataFrame(rows, columns=["Name", *LESION_SUMMARY_COLUMNS])


def lesion_instances_table(records: Sequence[CaseRecord]) -> pd.DataFrame:
    """One row per lesion instance: ``case, name`` then the instance columns."""
    rows = [{"case": r.case, "name": r.name, **row} for r in records for row in r.lesion_instances]
    return pd.DataFrame(rows, columns=["case", "name", *LESION_INSTANCE_COLUMNS])
