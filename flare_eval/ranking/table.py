"""The ranking table: one tidy row ``team, case, metric, value`` per team, case and criterion.

The table is the common currency of the ranking engine.  It is read from a tidy CSV/Parquet
file or built from a results folder ``RESULTS/<team>/`` holding each team's ``flare-eval score``
outputs (``per_case.csv``, optionally ``cases.csv``) and ``flare-eval run`` outputs
(``runs.csv``).  Failed cases are turned into values here, once, so that every scheme ranks the
same numbers; the rules are listed in :func:`table_from_results`.

:func:`ranking_data` turns the table into the dense (metric, case, team) cube that the schemes
rank with numpy; a (team, case, metric) absent from the table is a missing value (NaN there),
which takes the worst rank of its case.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flare_eval.errors import ConfigError, InputError
from flare_eval.io.layout import case_id, team_folders
from flare_eval.presets import FLARE23, Preset, RankingMetric
from flare_eval.typing import FloatArray, StrPath

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TABLE_COLUMNS",
    "FAILED_PREDICTION_STATUSES",
    "RankingWarning",
    "RankingData",
    "case_id",
    "check_same_options",
    "read_ranking_table",
    "table_from_results",
    "select_metrics",
    "ranking_data",
]

#: Columns of the tidy ranking table, in order.
TABLE_COLUMNS: tuple[str, ...] = ("team", "case", "metric", "value")
#: The criteria of ``runs.csv``: a failed run takes the preset's penalty there.
_EFFICIENCY: tuple[str, ...] = ("runtime", "gpu_auc")
#: ``cases.csv`` statuses that make a case's DSC and NSD 0 (the prediction's fault).
FAILED_PREDICTION_STATUSES: tuple[str, ...] = ("missing_prediction", "bad_prediction")


class RankingWarning(UserWarning):
    """Ranking input is incomplete: a criterion nobody has, a team without run outputs..."""


@dataclass(frozen=True)
class RankingData:
    """The ranking table as a dense cube, the form the schemes rank.

    Attributes
    ----------
    teams, cases
        Sorted team names and case ids (axes 2 and 1 of ``values``).
    metrics
        The criteria, in preset order (axis 0).
    values
        Raw values, shape (n_metrics, n_cases, n_teams); NaN where the table has no row.
    """

    teams: tuple[str, ...]
    cases: tuple[str, ...]
    metrics: tuple[RankingMetric, ...]
    values: FloatArray

    def oriented(self) -> FloatArray:
        """Values as ranked: floors and caps applied, then signed so that lower is better.

        A metric's ``floor`` makes every value better than it equal to it (FLARE23 runtimes
        under 15 s all count as 15 s, so they tie), its ``cap`` every value worse than it;
        higher-is-better metrics are negated.  NaN stays NaN.
        """
        out = np.empty_like(self.values)
        for m, metric in enumerate(self.metrics):
            # signed first: then the floor is a lower and the cap an upper bound either way
            sign = -1.0 if metric.higher_is_better else 1.0
            v = sign * self.values[m]
            if metric.floor is not None:
                v = np.maximum(v, sign * metric.floor)
            if metric.cap is not None:
                v = np.minimum(v, sign * metric.cap)
            out[m] = v
        return out


def _check_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    import pandas as pd

    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"{source}: a ranking table needs columns {list(TABLE_COLUMNS)}, "
            f"missing {missing} (got {list(table.columns)})",
            hint="give a tidy table team, case, metric, value or a results folder RESULTS/<team>/",
        )
    out = table.loc[:, list(TABLE_COLUMNS)].copy()
    for col in ("team", "case", "metric"):
        if out[col].isna().any():
            raise InputError(f"{source}: column {col!r} has empty cells")
        out[col] = out[col].astype(str)
    try:
        out["value"] = pd.to_numeric(out["value"]).astype(np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: column 'value' must be numeric ({err})") from None
    dup = out.duplicated(["team", "case", "metric"], keep=False)
    if dup.any():
        first = out.loc[dup].iloc[0]
        raise InputError(
            f"{source}: {int(dup.sum())} rows repeat a (team, case, metric), e.g. "
            f"({first['team']!r}, {first['case']!r}, {first['metric']!r})",
            hint="each team has at most one value per case and metric",
        )
    return out.reset_index(drop=True)


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read table {path}: {err}") from None


def _team_table(folder: Path, preset: Preset) -> tuple[pd.DataFrame, bool]:
    """The rows of one team folder and whether it had ``runs.csv``.

    ``gpu_auc`` rows of failed runs carry the penalty; those of ok runs without a GPU value
    (no GPU sampled) are NaN and sorted out over all teams by :func:`_gpu_rule`.
    """
    import pandas as pd

    team = folder.name
    per_case = _read_csv(folder / "per_case.csv")
    organ_names = [preset.class_info(label).name for label in preset.organ_labels]
    wanted = ["Name"] + [f"{n}_{k}" for k in ("DSC", "NSD") for n in organ_names]
    if preset.lesion_label is not None:
        lesion = preset.class_info(preset.lesion_label).name
        wanted += [f"{lesion}_DSC", f"{lesion}_NSD"]
    absent = [c for c in wanted if c not in per_case.columns]
    if absent:
        raise InputError(
            f"{folder / 'per_case.csv'}: missing columns {absent}",
            hint="give the per_case.csv written by 'flare-eval score'",
        )
    cases = per_case["Name"].map(case_id)
    if cases.duplicated().any():
        raise InputError(f"{folder / 'per_case.csv'}: case {cases[cases.duplicated()].iloc[0]!r} "
                         "appears twice")
    scores = per_case.drop(columns="Name").apply(pd.to_numeric, errors="coerce")
    scores.index = cases.to_numpy()
    status_path = folder / "cases.csv"
    if status_path.is_file():
        status = _read_csv(status_path)
        if "status" in status.columns and "case" in status.columns:
            failed = status.loc[status["status"].isin(FAILED_PREDICTION_STATUSES), "case"]
            failed_ids = [c for c in failed.astype(str) if c in scores.index]
            # FLARE22's failed case: 0 on every criterion, also where per_case.csv keeps the
            # official 1 of a class both sides lack (a missing prediction must not score 1)
            scores.loc[failed_ids, :] = 0.0
    # NaN in an organ comes from the reference (single_slice_z_crop="nan", an unreadable
    # reference), so every team has it: the organ mean is over the organs the case scores, as
    # scores.txt leaves NaN out of its means; a case with no scored organ is missing
    columns = {
        "organ_dsc": scores[[f"{n}_DSC" for n in organ_names]].mean(axis=1, skipna=True),
        "organ_nsd": scores[[f"{n}_NSD" for n in organ_names]].mean(axis=1, skipna=True),
    }
    if preset.lesion_label is not None:
        columns["lesion_dsc"] = scores[f"{lesion}_DSC"]
        columns["lesion_nsd"] = scores[f"{lesion}_NSD"]
    runs_path = folder / "runs.csv"
    has_runs = runs_path.is_file()
    if has_runs:
        _check_gpu_tolerance(folder, preset)
        runs = _read_csv(runs_path)
        need = ["status", "time_s", "auc_gpu_over_tolerance_mibs"]
        if not {"case", "name"} & set(runs.columns) or any(c not in runs.columns for c in need):
            raise InputError(f"{runs_path}: needs columns case (or name), {need}; "
                             f"got {list(runs.columns)}", hint="give the runs.csv of 'flare-eval run'")
        ids = (runs["case"].astype(str) if "case" in runs.columns
               else runs["name"].map(lambda n: case_id(n, image=True)))
        ok = (runs["status"] == "ok").to_numpy()
        runtime = np.where(ok, pd.to_numeric(runs["time_s"], errors="coerce"), preset.failed_runtime_s)
        gpu = np.where(ok, pd.to_numeric(runs["auc_gpu_over_tolerance_mibs"], errors="coerce"),
                       preset.failed_gpu_auc_mibs)
        columns["runtime"] = pd.Series(runtime, index=ids.to_numpy())
        columns["gpu_auc"] = pd.Series(gpu, index=ids.to_numpy())
        failed_runs = set(ids[~ok])
        if ids.duplicated().any():
            raise InputError(f"{runs_path}: case {ids[ids.duplicated()].iloc[0]!r} appears twice")
    else:
        failed_runs = set()
    # only the preset's criteria: a definition may rank on fewer (a toy challenge on DSC alone)
    criteria = {m.name for m in preset.ranking_metrics}
    columns = {metric: values for metric, values in columns.items() if metric in criteria}
    frames = [
        pd.DataFrame({"team": team, "case": s.index, "metric": metric, "value": s.to_numpy(),
                      "failed_run": [metric in _EFFICIENCY and c in failed_runs for c in s.index]})
        for metric, s in columns.items()
    ]
    return pd.concat(frames, ignore_index=True), has_runs


def _check_gpu_tolerance(folder: Path, preset: Preset) -> None:
    """Refuse runs whose over-tolerance GPU area was measured with another tolerance than the
    preset's: the area is computed at run time, so the preset could not move it."""
    import json

    path = folder / "runner.json"
    if not path.is_file():
        return
    try:
        tolerance = json.loads(path.read_text()).get("gpu_tolerance_mib")
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"cannot read the runner settings {path}: {err}") from None
    if tolerance is not None and float(tolerance) != preset.gpu_tolerance_mib:
        raise InputError(
            f"{path}: the runs were measured with gpu_tolerance_mib {tolerance}, the preset "
            f"{preset.name!r} ranks with {preset.gpu_tolerance_mib}",
            hint=f"rank with --gpu-tolerance {tolerance}, or run again with the preset's tolerance",
        )


def _scoring_options(folder: Path) -> dict[str, str]:
    """The scoring options of a team's ``run.json`` as flat ``key: json value`` pairs."""
    import json

    path = folder / "run.json"
    if not path.is_file():
        return {}
    try:
        options = json.loads(path.read_text()).get("options", {})
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"cannot read scoring options from {path}: {err}") from None
    flat: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = json.dumps(value)

    walk("", options)
    # the preset's efficiency and ranking items do not change a score, nor does its hash,
    # which covers them (every scoring item is compared on its own)
    return {k: v for k, v in flat.items() if k.startswith("preset.")
            and not k.startswith(("preset.runtime_tolerance_s", "preset.gpu_tolerance_mib",
                                  "preset.failed_", "preset.ranking_metrics",
                                  "preset.tie_method", "preset.content_sha256"))}


def check_same_options(results: StrPath, *, allow_mixed: bool = False) -> str | None:
    """Refuse a results folder whose teams were scored with different options.

    Parameters
    ----------
    results
        ``RESULTS/<team>/`` folders; each team's options are those of its ``run.json``
        (NSD threshold, single-slice rule, lesion options...; efficiency and ranking items,
        which do not change a score, are left out).
    allow_mixed
        Return the message instead of raising.

    Returns
    -------
    str or None
        What differs (the first differing option and its values per team), or ``None``.

    Raises
    ------
    InputError
        Naming the option and the teams, unless ``allow_mixed``.
    """
    root = Path(results)
    scored = {f.name: o for f in team_folders(root) if (o := _scoring_options(f))}
    for key in sorted(set().union(*scored.values())) if scored else []:
        values: dict[str, list[str]] = {}
        for team, o in scored.items():
            values.setdefault(o.get(key, "(absent)"), []).append(team)
        if len(values) > 1:
            found = "; ".join(f"{v} for {teams}" for v, teams in sorted(values.items()))
            message = f"{root}: teams were scored with different options: {key} is {found}"
            if allow_mixed:
                return message
            raise InputError(message, hint="score every team with the same options, or pass "
                                           "--allow-mixed-options to 'flare-eval rank'")
    return None


def _failure_rule(table: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """Make a failed run unable to beat an ok run on runtime and GPU AUC.

    The preset's penalty is a number (FLARE22: 3600 s); without a timeout an ok run can take
    longer.  On such a case the failed runs get the largest ok value of the case instead, so
    they tie with the slowest ok run at worst and never rank above it.
    """
    import pandas as pd

    efficiency = table["metric"].isin(_EFFICIENCY)
    worst_ok = (table.loc[efficiency & ~table["failed_run"]]
                .groupby(["metric", "case"])["value"].max())
    failed = efficiency & table["failed_run"]
    keys = pd.MultiIndex.from_frame(table.loc[failed, ["metric", "case"]])
    floor = pd.Series(worst_ok.reindex(keys).to_numpy(), index=table.index[failed])
    raised = floor[floor > table.loc[failed, "value"]]  # NaN (no ok run, GPU blanked) is False
    if raised.empty:
        return table, None
    table = table.copy()
    table.loc[raised.index, "value"] = raised
    where = sorted({f"{m} {c}" for m, c in table.loc[raised.index, ["metric", "case"]]
                    .itertuples(index=False)})
    return table, (f"ok runs exceed the failure penalty on {where[:5]}: {len(raised)} failed "
                   "runs there take the largest ok value of their case instead, so that a "
                   "failed run never ranks above an ok one")


def _gpu_rule(table: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """Make a failed run unable to beat an ok run on GPU AUC.

    No ok run of the evaluation has a GPU value (no ``--gpu``, no driver): the criterion is
    dropped for every team.  Some ok runs lack one: on those cases the failed runs' penalty
    becomes missing too, so both share the worst rank instead of the failure ranking better.
    """
    gpu = table["metric"] == "gpu_auc"
    if not gpu.any():
        return table, None
    # runs.csv of a failed run get the (finite) penalty: NaN here is an unsampled ok run
    unsampled = gpu & table["value"].isna()
    sampled_ok = gpu & table["value"].notna() & ~table["failed_run"]
    if not sampled_ok.any():
        return (table.loc[~gpu].reset_index(drop=True),
                "no run of the evaluation has a GPU value (no GPU sampled): gpu_auc is "
                "dropped from the ranking")
    if unsampled.any():
        cases = set(table.loc[unsampled, "case"])
        blank = gpu & table["failed_run"] & table["case"].isin(cases)
        table = table.copy()
        table.loc[blank, "value"] = np.nan
        return table, (f"{int(unsampled.sum())} ok runs have no GPU value (cases "
                       f"{sorted(cases)[:5]}): on those cases failed runs' GPU AUC is missing "
                       "too and they tie at the worst rank")
    return table, None


def table_from_results(
    results: StrPath, *, preset: Preset = FLARE23, allow_mixed_options: bool = False
) -> pd.DataFrame:
    """Build the ranking table from a results folder ``RESULTS/<team>/``.

    Parameters
    ----------
    results
        A folder with one sub-folder per team, each holding that team's ``flare-eval score``
        outputs (``per_case.csv``, optionally ``cases.csv``) and optionally its ``flare-eval run``
        outputs (``runs.csv``).  Sub-folders with neither ``per_case.csv`` nor ``runs.csv`` are
        ignored.
    preset
        Names the organ and lesion columns and gives the failure penalties.
    allow_mixed_options
        Rank teams whose ``run.json`` records different scoring options (NSD threshold,
        lesion options...) instead of refusing.

    Returns
    -------
    pandas.DataFrame
        Columns ``team, case, metric, value``; metrics ``organ_dsc``, ``organ_nsd`` (means of
        the organ columns of ``per_case.csv``), ``lesion_dsc``, ``lesion_nsd``, ``runtime``
        (``time_s`` of ``runs.csv``, s) and ``gpu_auc`` (``auc_gpu_over_tolerance_mibs``, MiB*s).

    Raises
    ------
    InputError
        No team folder, a team with ``runs.csv`` but no ``per_case.csv``, missing columns,
        a case listed twice, teams scored with different options (the message names the
        option) unless ``allow_mixed_options``.

    Warns
    -----
    RankingWarning
        Some teams have ``runs.csv`` and others not: those without have no runtime and GPU
        values, which rank worst in every case.  No GPU sampled, or only in part (see below).

    Notes
    -----
    Failed cases are values, never dropped rows:

    - ``cases.csv`` status ``missing_prediction`` or ``bad_prediction``: every DSC and NSD of
      the case is 0, also those of classes absent from both sides, which ``per_case.csv``
      scores 1 as the official per-class rule does (FLARE22's failed case: no prediction
      never scores above a wrong one);
    - ``runs.csv`` status other than ``ok``: runtime ``preset.failed_runtime_s`` and GPU AUC
      ``preset.failed_gpu_auc_mibs`` (FLARE22: 3600 s and a full 16 GB GPU for 3600 s);
    - an ok run slower (or using more GPU) than the penalty: the failed runs of that case get
      the largest ok value instead, so a failed run never ranks above an ok one;
    - a case in no row of a team's tables is missing and takes the worst rank of its case;
    - GPU not sampled: when no ok run of any team has a GPU value, ``gpu_auc`` is dropped
      (otherwise every ok run would be missing, worst, and the failed runs' finite penalty
      would rank first); when only some ok runs lack one, the failed runs' GPU AUC on those
      cases is missing too, so a failed run never ranks better than an ok one.

    Case ids are the file names without ``.nii.gz`` and the ``_0000`` channel suffix, so the
    scorer's ``<id>.nii.gz`` and the runner's ``<id>_0000.nii.gz`` meet.  An organ NaN (only a
    reference-side rule writes one, for every team alike) is left out of the organ mean, as
    ``scores.txt`` leaves it out of its means; a case with no scored organ is missing.
    """
    import pandas as pd

    root = Path(results)
    if not root.is_dir():
        raise InputError(f"results folder {root} does not exist",
                         hint="give RESULTS/ with one folder per team, or a tidy CSV/Parquet table")
    frames, with_runs, without_runs = [], [], []
    for folder in team_folders(root):
        rows, has_runs = _team_table(folder, preset)
        frames.append(rows)
        (with_runs if has_runs else without_runs).append(folder.name)
    if not frames:
        raise InputError(f"results folder {root} holds no team folder with a per_case.csv",
                         hint="expected RESULTS/<team>/per_case.csv from 'flare-eval score'")
    if with_runs and without_runs:
        warnings.warn(
            f"teams {without_runs} have no runs.csv: their runtime and gpu_auc are missing and "
            "take the worst rank in every case",
            RankingWarning,
            stacklevel=2,
        )
    mixed_note = check_same_options(root, allow_mixed=allow_mixed_options)
    table, gpu_note = _gpu_rule(pd.concat(frames, ignore_index=True))
    table, failure_note = _failure_rule(table)
    for note in (mixed_note, gpu_note, failure_note):
        if note:
            warnings.warn(note, RankingWarning, stacklevel=2)
    return _check_table(table, str(root))


def read_ranking_table(
    source: StrPath, *, preset: Preset = FLARE23, allow_mixed_options: bool = False
) -> pd.DataFrame:
    """Read a ranking table: a tidy ``.csv``/``.parquet`` file or a results folder.

    Parameters
    ----------
    source
        A file with columns ``team, case, metric, value`` (extra columns are ignored), or a
        results folder (see :func:`table_from_results`).
    preset, allow_mixed_options
        Used for a results folder only (see :func:`table_from_results`).

    Returns
    -------
    pandas.DataFrame
        Columns ``team, case, metric, value`` (str, str, str, float64).

    Raises
    ------
    InputError
        Unreadable file, missing columns, non-numeric values, repeated (team, case, metric).
    """
    import pandas as pd

    path = Path(source)
    if path.is_dir():
        return table_from_results(path, preset=preset, allow_mixed_options=allow_mixed_options)
    if not path.is_file():
        raise InputError(f"ranking input {path} does not exist",
                         hint="give a results folder or a tidy .csv/.parquet table")
    if path.suffix == ".parquet":
        try:
            table = pd.read_parquet(path)
        except (ImportError, OSError, ValueError) as err:
            raise InputError(f"cannot read Parquet table {path}: {err}",
                             hint="Parquet needs pyarrow: pip install flare-eval[parquet]") from None
    else:
        table = _read_csv(path)
    return _check_table(table, str(path))


def select_metrics(
    table: pd.DataFrame, metrics: tuple[RankingMetric, ...] = FLARE23.ranking_metrics
) -> tuple[tuple[RankingMetric, ...], tuple[str, ...]]:
    """The criteria of ``metrics`` the table has, and the names of those it lacks.

    Raises
    ------
    ConfigError
        The table holds a metric whose direction ``metrics`` does not give.

    Warns
    -----
    RankingWarning
        For every criterion no row of the table has (dropped from the ranking).
    """
    present = set(table["metric"].unique())
    known = {m.name for m in metrics}
    unknown = sorted(present - known)
    if unknown:
        raise ConfigError(
            f"ranking table has metric(s) {unknown} with no direction; known: {sorted(known)}",
            hint="use the preset's metric names or a preset that declares these metrics",
        )
    kept = tuple(m for m in metrics if m.name in present)
    dropped = tuple(m.name for m in metrics if m.name not in present)
    if dropped:
        warnings.warn(f"no team has metric(s) {list(dropped)}: ranked without them",
                      RankingWarning, stacklevel=2)
    if not kept:
        raise InputError("the ranking table has no rows", hint="check the results folder")
    return kept, dropped


def ranking_data(
    table: pd.DataFrame, metrics: tuple[RankingMetric, ...] = FLARE23.ranking_metrics
) -> RankingData:
    """The table as a dense (metric, case, team) cube.

    Parameters
    ----------
    table
        Columns ``team, case, metric, value`` (see :func:`read_ranking_table`).
    metrics
        The criteria and their directions; every metric of the table must be among them and
        those absent from the table are dropped with a :class:`RankingWarning`.

    Returns
    -------
    RankingData
        Teams and cases sorted; a (team, case, metric) without a row is NaN.
    """
    import pandas as pd

    table = _check_table(table, "ranking table")
    kept, _ = select_metrics(table, metrics)
    teams = pd.Categorical(table["team"])
    cases = pd.Categorical(table["case"])
    metric_codes = pd.Categorical(table["metric"], categories=[m.name for m in kept]).codes
    values = np.full((len(kept), len(cases.categories), len(teams.categories)), np.nan)
    values[metric_codes, cases.codes, teams.codes] = table["value"].to_numpy()
    return RankingData(
        teams=tuple(teams.categories),
        cases=tuple(cases.categories),
        metrics=kept,
        values=values,
    )
