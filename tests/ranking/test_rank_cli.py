"""``flare-eval rank`` end to end on a small tidy table."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from flare_eval.cli import rank as rank_cli
from flare_eval.errors import ConfigError


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    rank_cli.register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["rank", *argv])
    return args.handler(args)


def test_rank_writes_every_output(tmp_path, rng, capsys):
    rows = []
    for k, team in enumerate(["t1", "t2", "t3"]):
        for c in range(15):
            rows.append((team, f"case{c:02d}", "organ_dsc", 0.9 - 0.05 * k + rng.normal(0, 0.01)))
            rows.append((team, f"case{c:02d}", "runtime", 10.0 + 10 * k))
    pd.DataFrame(rows, columns=["team", "case", "metric", "value"]).to_csv(
        tmp_path / "table.csv", index=False)
    out = tmp_path / "out"
    code = _run([str(tmp_path / "table.csv"), "--out", str(out), "--bootstrap", "40",
                 "--seed", "7"])
    assert code == 0
    columns = {
        "ranking_table.csv": ["team", "case", "metric", "value"],
        "case_ranks.csv": ["team", "case", "metric", "value", "rank"],
        "leaderboard.csv": ["rank", "team", "mean_rank", "organ_dsc", "runtime", "n_missing"],
        "bootstrap_kendall.csv": ["sample", "tau"],
        "bootstrap_ranks.csv": ["sample", "team", "rank"],
        "significance.csv": ["metric", "team", "other", "p_value", "p_holm", "significant"],
    }
    for name, expected in columns.items():
        assert pd.read_csv(out / name).columns.tolist() == expected, name
    board = pd.read_csv(out / "leaderboard.csv")
    # t1 best DSC in every case; runtime t1 10 s and t2 20 s... floored: t1 15, t2 20, t3 30
    assert board["team"].tolist() == ["t1", "t2", "t3"]
    assert board["mean_rank"].tolist() == pytest.approx([1.0, 2.0, 3.0])
    assert len(pd.read_csv(out / "bootstrap_kendall.csv")) == 40
    record = json.loads((out / "ranking.json").read_text())
    assert record["scheme"] == "flare" and record["seed"] == 7 and record["n_bootstrap"] == 40
    assert record["dropped_metrics"] == ["organ_nsd", "lesion_dsc", "lesion_nsd", "gpu_auc"]
    assert "numpy" in record["versions"]
    assert "t1" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))
    # the same seed gives the same bootstrap
    _run([str(tmp_path / "table.csv"), "--out", str(tmp_path / "again"), "--bootstrap", "40",
          "--seed", "7"])
    np.testing.assert_array_equal(pd.read_csv(out / "bootstrap_ranks.csv").to_numpy(),
                                  pd.read_csv(tmp_path / "again" / "bootstrap_ranks.csv").to_numpy())


def test_rank_option_errors(tmp_path):
    pd.DataFrame({"team": ["a"], "case": ["1"], "metric": ["organ_dsc"], "value": [1.0]}).to_csv(
        tmp_path / "t.csv", index=False)
    with pytest.raises(ConfigError, match="test-then-rank has no bootstrap"):
        _run([str(tmp_path / "t.csv"), "--out", str(tmp_path / "o"), "--scheme", "test-then-rank"])
