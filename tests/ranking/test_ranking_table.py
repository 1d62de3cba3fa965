"""Building the ranking table from score/run outputs, and reading tidy tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flare_eval.errors import ConfigError, InputError
from flare_eval.presets import FLARE23
from flare_eval.ranking import (
    RankingWarning,
    case_id,
    ranking_data,
    read_ranking_table,
    select_metrics,
    table_from_results,
)

NAMES = [c.name for c in FLARE23.classes]


def write_team(root: Path, team: str, organ: dict[str, float], lesion: dict[str, float],
               status: dict[str, str], runs: list[tuple] | None) -> None:
    """A team folder: every organ DSC/NSD of a case equal to organ[case] except Liver, which is
    organ[case] + 0.13 (so the 13-organ mean is organ[case] + 0.01)."""
    folder = root / team
    folder.mkdir(parents=True)
    rows = []
    for case, value in organ.items():
        row = {"Name": f"{case}.nii.gz"}
        for kind in ("DSC", "NSD"):
            for name in NAMES:
                row[f"{name}_{kind}"] = value + (0.13 if name == "Liver" else 0.0)
            row[f"Lesion_{kind}"] = lesion[case]
        rows.append(row)
    pd.DataFrame(rows).to_csv(folder / "per_case.csv", index=False)
    pd.DataFrame({"case": list(status), "name": [f"{c}.nii.gz" for c in status],
                  "status": list(status.values()), "message": ""}).to_csv(
        folder / "cases.csv", index=False)
    if runs is not None:
        pd.DataFrame(runs, columns=["case", "name", "status", "time_s",
                                    "auc_gpu_over_tolerance_mibs"]).to_csv(
            folder / "runs.csv", index=False)


def test_case_id():
    assert case_id("FLARE23Ts_0001.nii.gz") == "FLARE23Ts_0001"
    assert case_id("dir/FLARE23Ts_0001_0000.nii.gz", image=True) == "FLARE23Ts_0001"
    # without image=True a trailing _0000 belongs to the id
    assert case_id("case_0000.nii.gz") == "case_0000"


def test_table_from_results_values_and_failures(tmp_path):
    write_team(tmp_path, "alpha", {"c1": 0.8, "c2": 0.6}, {"c1": 0.5, "c2": 0.4},
               {"c1": "ok", "c2": "ok"},
               [("c1", "c1_0000.nii.gz", "ok", 12.5, 100.0),
                ("c2", "c2_0000.nii.gz", "timeout", 900.0, 5.0)])
    # beta's c2 prediction is missing: its (hand-edited) 0.7 must become 0
    write_team(tmp_path, "beta", {"c1": 0.7, "c2": 0.7}, {"c1": 0.2, "c2": 0.3},
               {"c1": "ok", "c2": "missing_prediction"},
               [("c1", "c1_0000.nii.gz", "ok", 20.0, 0.0),
                ("c2", "c2_0000.nii.gz", "ok", 30.0, 7.0)])
    (tmp_path / ".hidden").mkdir()
    table = table_from_results(tmp_path)
    assert list(table.columns) == ["team", "case", "metric", "value"]
    v = table.set_index(["team", "case", "metric"])["value"]
    assert v[("alpha", "c1", "organ_dsc")] == pytest.approx(0.81)
    assert v[("alpha", "c2", "organ_nsd")] == pytest.approx(0.61)
    assert v[("alpha", "c1", "lesion_dsc")] == pytest.approx(0.5)
    assert v[("alpha", "c1", "runtime")] == 12.5
    assert v[("alpha", "c2", "runtime")] == FLARE23.failed_runtime_s
    assert v[("alpha", "c2", "gpu_auc")] == FLARE23.failed_gpu_auc_mibs
    for metric in ("organ_dsc", "organ_nsd", "lesion_dsc", "lesion_nsd"):
        assert v[("beta", "c2", metric)] == 0.0
    assert v[("beta", "c2", "runtime")] == 30.0
    assert len(table) == 2 * 2 * 6


def test_runs_missing_for_one_team_or_all(tmp_path):
    write_team(tmp_path / "r", "alpha", {"c1": 0.8}, {"c1": 0.5}, {"c1": "ok"},
               [("c1", "c1_0000.nii.gz", "ok", 12.5, 100.0)])
    write_team(tmp_path / "r", "beta", {"c1": 0.7}, {"c1": 0.2}, {"c1": "ok"}, None)
    with pytest.warns(RankingWarning, match=r"\['beta'\] have no runs.csv"):
        table = table_from_results(tmp_path / "r")
    data = ranking_data(table)
    # beta's runtime is missing: NaN in the cube, worst rank there
    assert np.isnan(data.values[4, 0, 1]) and data.values[4, 0, 0] == 12.5

    write_team(tmp_path / "s", "alpha", {"c1": 0.8}, {"c1": 0.5}, {"c1": "ok"}, None)
    table = table_from_results(tmp_path / "s")
    with pytest.warns(RankingWarning, match=r"\['runtime', 'gpu_auc'\]"):
        kept, dropped = select_metrics(table, FLARE23.ranking_metrics)
    assert dropped == ("runtime", "gpu_auc") and len(kept) == 4


def test_results_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        table_from_results(tmp_path / "nope")
    with pytest.raises(InputError, match="no team folder"):
        table_from_results(tmp_path)
    (tmp_path / "gamma").mkdir()
    (tmp_path / "gamma" / "runs.csv").write_text("case,status\n")
    with pytest.raises(InputError, match="runs.csv but no per_case.csv"):
        table_from_results(tmp_path)


def test_read_tidy_csv_and_parquet(tmp_path):
    table = pd.DataFrame({"team": ["a", "b"], "case": [1, 1], "metric": "organ_dsc",
                          "value": [0.5, 0.6], "note": "x"})
    table.to_csv(tmp_path / "t.csv", index=False)
    got = read_ranking_table(tmp_path / "t.csv")
    assert list(got.columns) == ["team", "case", "metric", "value"]
    assert got["case"].tolist() == ["1", "1"]
    pytest.importorskip("pyarrow")
    got.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_ranking_table(tmp_path / "t.parquet"), got)


def test_tidy_table_errors(tmp_path):
    pd.DataFrame({"team": ["a"], "case": ["1"], "value": [1.0]}).to_csv(tmp_path / "a.csv",
                                                                         index=False)
    with pytest.raises(InputError, match=r"missing \['metric'\]"):
        read_ranking_table(tmp_path / "a.csv")
    pd.DataFrame({"team": ["a", "a"], "case": ["1", "1"], "metric": "organ_dsc",
                  "value": [1.0, 2.0]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(InputError, match="repeat a"):
        read_ranking_table(tmp_path / "b.csv")
    pd.DataFrame({"team": ["a"], "case": ["1"], "metric": "organ_dsc",
                  "value": ["high"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(InputError, match="must be numeric"):
        read_ranking_table(tmp_path / "c.csv")
    with pytest.raises(ConfigError, match="no direction"):
        select_metrics(pd.DataFrame({"team": ["a"], "case": ["1"], "metric": ["speed"],
                                     "value": [1.0]}))
