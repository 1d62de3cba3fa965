"""Reading a results folder into the tables the report draws: ``RESULTS/<team>/`` (score and
runner outputs) and ``RESULTS/ranking/`` (``flare-eval rank`` outputs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_eval.errors import InputError
from flare_eval.io.layout import RANKING_FOLDER, case_id, team_folders
from flare_eval.typing import StrPath

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RANKING_FOLDER", "ReportTables", "load_results", "slot_table", "team_summary"]

@dataclass(frozen=True)
class ReportTables:
    """Everything the report shows, as tidy tables.

    Attributes
    ----------
    leaderboard, ranking_table, case_ranks, significance
        ``flare-eval rank`` outputs (``leaderboard.csv``...).
    kendall, bootstrap_ranks
        Bootstrap outputs; empty tables (with their columns) when ranked without bootstrap.
    ranking_config
        ``ranking.json``.
    score_config
        ``run.json`` of each team, by team.
    organ_table
        Every team's ``metrics_long.csv`` with a ``team`` column.
    lesion_table
        Per team and case: ``dsc, nsd`` (lesion columns of ``per_case.csv``) and the detection
        columns of ``lesions_per_case.csv`` (``precision, recall, f1, ref_volume_ml``...).
    runs
        Every team's ``runs.csv`` with a ``team`` column (empty when no team has one).
    failures
        Cases that did not go well: ``team, case, stage, status, message``, where ``stage`` is
        ``score`` (``cases.csv``) or ``run`` (``runs.csv``).
    calibration
        The ``flare-eval calibrate`` table the runs were checked against, or ``None``.
    """

    leaderboard: pd.DataFrame
    ranking_table: pd.DataFrame
    case_ranks: pd.DataFrame
    significance: pd.DataFrame
    kendall: pd.DataFrame
    bootstrap_ranks: pd.DataFrame
    ranking_config: dict[str, Any]
    score_config: dict[str, dict[str, Any]]
    organ_table: pd.DataFrame
    lesion_table: pd.DataFrame
    runs: pd.DataFrame
    failures: pd.DataFrame
    calibration: pd.DataFrame | None = None


def _csv(path: Path, *, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read a table; with ``columns``, an absent file is an empty table of those columns."""
    import pandas as pd

    if not path.is_file():
        if columns is not None:
            return pd.DataFrame(columns=list(columns))
        raise InputError(f"{path}: no such file",
                         hint="the report needs the outputs of 'flare-eval score' and "
                              "'flare-eval rank --out RESULTS/ranking'")
    try:
        return pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read table {path}: {err}") from None


def _json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}") from None


def _concat(frames: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def _lesions(folder: Path, team: str, lesion_name: str) -> pd.DataFrame:
    """One team's lesion table (see :class:`ReportTables`)."""

    per_case = _csv(folder / "per_case.csv")
    table = per_case[["Name"]].copy()
    for kind in ("DSC", "NSD"):
        column = f"{lesion_name}_{kind}"
        table[kind.lower()] = per_case[column] if column in per_case.columns else float("nan")
    detection = _csv(folder / "lesions_per_case.csv", columns=("Name",))
    table = table.merge(detection, on="Name", how="left")
    table.insert(0, "case", table.pop("Name").map(case_id))
    table.insert(0, "team", team)
    return table


def load_results(results_dir: StrPath, *, calibration: StrPath | None = None) -> ReportTables:
    """Read the results folder.

    Parameters
    ----------
    results_dir
        ``RESULTS/<team>/`` folders with ``per_case.csv``, ``cases.csv``, ``metrics_long.csv``,
        ``lesions_per_case.csv``, ``run.json`` and optionally ``runs.csv``; and
        ``RESULTS/ranking/`` with the outputs of ``flare-eval rank``.
    calibration
        A table of ``flare-eval calibrate`` (``evaluate --calibration`` keeps it as
        ``OUT/calibration.csv``), read with
        :func:`~flare_eval.runner.calibrate.read_calibration`.

    Returns
    -------
    ReportTables

    Raises
    ------
    InputError
        No ranking folder, a required table missing or unreadable, teams scored with
        different options (unless ranked with ``--allow-mixed-options``), a calibration table
        that is missing or lacks its columns.
    """
    from flare_eval.ranking.table import check_same_options
    from flare_eval.runner.calibrate import read_calibration

    root = Path(results_dir)
    ranking = root / RANKING_FOLDER
    if not (ranking / "leaderboard.csv").is_file():
        raise InputError(f"{ranking}: no leaderboard.csv",
                         hint=f"rank first: flare-eval rank {root} --out {ranking}")
    config = _json(ranking / "ranking.json")
    teams = team_folders(root)
    if not teams:
        raise InputError(f"{root}: no team folder with a per_case.csv",
                         hint="expected RESULTS/<team>/ with 'flare-eval score' outputs")
    # as 'flare-eval rank': one report never mixes teams scored with different options
    check_same_options(root, allow_mixed=bool(config.get("allow_mixed_options", False)))
    score_config = {p.name: _json(p / "run.json") for p in teams}
    preset = next(iter(score_config.values())).get("options", {}).get("preset", {})
    lesion_label = preset.get("lesion_label")
    lesion_name = next((c["name"] for c in preset.get("classes", []) if c["label"] == lesion_label),
                       "Lesion")
    organ, lesions, runs, failures = [], [], [], []
    for folder in teams:
        team = folder.name
        long = _csv(folder / "metrics_long.csv")
        organ.append(long[long["label"] != lesion_label].assign(team=team))
        lesions.append(_lesions(folder, team, lesion_name))
        cases = _csv(folder / "cases.csv", columns=("case", "status", "message"))
        bad = cases[cases["status"] != "ok"]
        failures.append(bad.assign(team=team, stage="score")[
            ["team", "case", "stage", "status", "message"]])
        run = _csv(folder / "runs.csv", columns=("case", "status", "message"))
        if "message" not in run.columns:  # the ranking reads runs.csv without one too
            run = run.assign(message="")
        if not run.empty:
            runs.append(run.assign(team=team))
            bad = run[run["status"] != "ok"]
            failures.append(bad.assign(team=team, stage="run")[
                ["team", "case", "stage", "status", "message"]])
    failure_columns = ("team", "case", "stage", "status", "message")
    return ReportTables(
        leaderboard=_csv(ranking / "leaderboard.csv"),
        ranking_table=_csv(ranking / "ranking_table.csv"),
        case_ranks=_csv(ranking / "case_ranks.csv"),
        significance=_csv(ranking / "significance.csv",
                          columns=("metric", "team", "other", "p_value", "p_holm", "significant")),
        kendall=_csv(ranking / "bootstrap_kendall.csv", columns=("sample", "tau")),
        bootstrap_ranks=_csv(ranking / "bootstrap_ranks.csv", columns=("sample", "team", "rank")),
        ranking_config=config,
        score_config=score_config,
        organ_table=_concat(organ, ("team", "case", "class", "metric", "value")),
        lesion_table=_concat(lesions, ("team", "case", "dsc", "nsd")),
        runs=_concat(runs, ("team", "case", "status")),
        failures=_concat(failures, failure_columns).fillna({"message": ""}),
        calibration=None if calibration is None else read_calibration(Path(calibration)),
    )


def team_summary(tables: ReportTables) -> pd.DataFrame:
    """Per team, accuracy and efficiency side by side (the accuracy-efficiency scatter's data).

    Returns
    -------
    pandas.DataFrame
        ``team`` and the leaderboard's mean ``organ_dsc, lesion_dsc, runtime, gpu_auc`` (those
        ranked), plus ``max_gpu_mib``, the mean over cases of the peak GPU memory of
        ``runs.csv`` (successful runs only: a crashed run's peak says nothing), when known.
    """
    keep = [c for c in ("team", "organ_dsc", "lesion_dsc", "runtime", "gpu_auc")
            if c in tables.leaderboard.columns]
    summary = tables.leaderboard[keep].copy()
    runs = tables.runs
    if "max_gpu_mib" in runs.columns:
        ok = runs[runs["status"] == "ok"]
        summary = summary.merge(ok.groupby("team")["max_gpu_mib"].mean().rename("max_gpu_mib"),
                                left_on="team", right_index=True, how="left")
    return summary


#: The columns of ``runs.csv`` that say where a case ran, in the slot table's order.
WHERE_COLUMNS: tuple[str, ...] = ("host", "slot", "cpuset", "gpu_name", "gpu_uuid")


def slot_table(tables: ReportTables) -> pd.DataFrame:
    """Where each team's cases ran: one row per team and slot, with the number of cases.

    Returns
    -------
    pandas.DataFrame
        ``team, host, slot, cpuset, gpu_name, gpu_uuid, cases`` from every team's
        ``runs.csv`` (every recorded case, failed ones too), sorted by team and slot; empty
        when no team has runner outputs that say where they ran.
    """
    import pandas as pd

    runs = tables.runs
    columns = ["team", *WHERE_COLUMNS]
    if runs.empty or not set(WHERE_COLUMNS) <= set(runs.columns) or runs["slot"].isna().all():
        return pd.DataFrame(columns=[*columns, "cases"])
    where = runs[columns].astype("string").fillna("")
    counted = where.groupby(columns, sort=True).size().rename("cases").reset_index()
    return counted
