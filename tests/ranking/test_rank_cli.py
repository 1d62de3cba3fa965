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


def _toy_rank(tmp_path, name: str, rows: list, replacements: dict[str, str], *extra: str):
    """Rank the tidy ``rows`` with the toy definition edited by ``replacements``."""
    from flare_eval.cli.main import main
    from tests.test_definition import TOY

    text = TOY
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / f"{name}.toml").write_text(text)
    pd.DataFrame(rows, columns=["team", "case", "metric", "value"]).to_csv(
        tmp_path / f"{name}.csv", index=False)
    out = tmp_path / name
    assert main(["rank", str(tmp_path / f"{name}.csv"), "--preset", str(tmp_path / f"{name}.toml"),
                 "--out", str(out), "--bootstrap", "0", *extra]) == 0
    board = pd.read_csv(out / "leaderboard.csv").set_index("team")
    return board["rank"].to_dict(), board["mean_rank"].to_dict()


ORGAN = 'name = "organ_dsc"\nhigher_is_better = true\nweight = 1.0\naggregate = "mean"\n'
LESION = 'name = "lesion_dsc"\nhigher_is_better = true\nweight = 1.0\naggregate = "mean"\n'


def test_the_definitions_weights_change_the_rank(tmp_path):
    # every case: organ_dsc ranks a 1, b 2, c 3; lesion_dsc c 1, b 2, a 3
    rows = [(t, c, m, v) for c in "123" for t, organ, lesion in
            (("a", 0.9, 0.1), ("b", 0.8, 0.5), ("c", 0.7, 0.9))
            for m, v in (("organ_dsc", organ), ("lesion_dsc", lesion))]
    # equal weights: every team 3 x (1 + 3) = 3 x (2 + 2) = 12 over 6 ranks: all tie at 2
    ranks, means = _toy_rank(tmp_path, "equal", rows, {})
    assert ranks == {"a": 1, "b": 1, "c": 1} and means == pytest.approx({"a": 2, "b": 2, "c": 2})
    # organ_dsc weighs 2: a 3 x (2 x 1 + 3) = 15, b 3 x (2 x 2 + 2) = 18, c 3 x (2 x 3 + 1) = 21,
    # over 3 cases x (2 + 1) weights = 9
    ranks, means = _toy_rank(tmp_path, "organ2", rows,
                             {ORGAN: ORGAN.replace("weight = 1.0", "weight = 2.0")})
    assert ranks == {"a": 1, "b": 2, "c": 3}
    assert means == pytest.approx({"a": 15 / 9, "b": 18 / 9, "c": 21 / 9})
    # lesion_dsc weighs 3: a 3 x (1 + 9) = 30, b 3 x (2 + 6) = 24, c 3 x (3 + 3) = 18; / 12
    ranks, means = _toy_rank(tmp_path, "lesion3", rows,
                             {LESION: LESION.replace("weight = 1.0", "weight = 3.0")})
    assert ranks == {"c": 1, "b": 2, "a": 3}
    assert means == pytest.approx({"a": 2.5, "b": 2.0, "c": 1.5})


def test_the_definitions_aggregate_scheme_and_cap_change_the_rank(tmp_path):
    # organ_dsc a 0.9, 0.9, 0 (mean 0.6, median 0.9); b 0.7 thrice; lesion_dsc ties
    rows = [*[("a", c, "organ_dsc", v) for c, v in zip("123", (0.9, 0.9, 0.0))],
            *[("b", c, "organ_dsc", 0.7) for c in "123"],
            *[(t, c, "lesion_dsc", 0.5) for t in "ab" for c in "123"]]
    per_metric = {'ranking_scheme = "flare"': 'ranking_scheme = "aggregate-then-rank"'}
    # mean: b 0.7 > a 0.6 -> b 1, a 2; lesion both 1: a 3, b 2 over 2 criteria
    ranks, means = _toy_rank(tmp_path, "mean", rows, per_metric)
    assert ranks == {"b": 1, "a": 2} and means == pytest.approx({"a": 1.5, "b": 1.0})
    # median: a 0.9 > b 0.7 -> a 1, b 2; a 2, b 3
    median = {**per_metric, ORGAN: ORGAN.replace('"mean"', '"median"')}
    ranks, means = _toy_rank(tmp_path, "median", rows, median)
    assert ranks == {"a": 1, "b": 2} and means == pytest.approx({"a": 1.0, "b": 1.5})
    # the command line overrides the definition's aggregate
    assert _toy_rank(tmp_path, "override", rows, median, "--aggregate", "mean")[0] == {"b": 1, "a": 2}
    # cap 0.5: a's 0 counts as 0.5, mean (0.9 + 0.9 + 0.5) / 3 = 0.767 > 0.7 -> a 1
    capped = {**per_metric, ORGAN: ORGAN + "cap = 0.5\n"}
    assert _toy_rank(tmp_path, "cap", rows, capped)[0] == {"a": 1, "b": 2}
    # the definition's scheme, not a constant: under flare (per case) a wins cases 1 and 2
    # (ranks 1, 1, 2 + lesion 1, 1, 1 = 7) against b (2, 2, 1 + 3 = 8)
    assert _toy_rank(tmp_path, "flare", rows, {})[0] == {"a": 1, "b": 2}


def test_weights_and_median_ranks_in_the_per_metric_schemes(tmp_path, capsys):
    from flare_eval.cli.main import main

    scheme = {'ranking_scheme = "flare"': 'ranking_scheme = "rank-then-aggregate"'}
    # per-metric ranks: organ_dsc a 1, b 2, c 3 (every case); lesion_dsc c 1, b 2, a 3
    rows = [(t, c, m, v) for c in "123" for t, organ, lesion in
            (("a", 0.9, 0.1), ("b", 0.8, 0.5), ("c", 0.7, 0.9))
            for m, v in (("organ_dsc", organ), ("lesion_dsc", lesion))]
    assert _toy_rank(tmp_path, "borda", rows, scheme)[0] == {"a": 1, "b": 1, "c": 1}
    # organ_dsc weighs 2: a 2 x 1 + 3 = 5, b 2 x 2 + 2 = 6, c 2 x 3 + 1 = 7, over weights 3
    ranks, means = _toy_rank(tmp_path, "borda2", rows,
                             {**scheme, ORGAN: ORGAN.replace("weight = 1.0", "weight = 2.0")})
    assert ranks == {"a": 1, "b": 2, "c": 3}
    assert means == pytest.approx({"a": 5 / 3, "b": 2.0, "c": 7 / 3})
    # organ_dsc case ranks a 1, 1, 3; b 2, 2, 1; c 3, 3, 2 (lesion_dsc ties): mean ranks a 5/3
    # = b 5/3 < c 8/3; median ranks a 1 < b 2 < c 3
    rows = [*[(t, c, "organ_dsc", v) for c in "12" for t, v in zip("abc", (0.9, 0.8, 0.7))],
            *[(t, "3", "organ_dsc", v) for t, v in zip("abc", (0.7, 0.9, 0.8))],
            *[(t, c, "lesion_dsc", 0.5) for t in "abc" for c in "123"]]
    assert _toy_rank(tmp_path, "rmean", rows, scheme)[0] == {"a": 1, "b": 1, "c": 3}
    median = {**scheme, ORGAN: ORGAN.replace('"mean"', '"median"')}
    assert _toy_rank(tmp_path, "rmedian", rows, median)[0] == {"a": 1, "b": 2, "c": 3}
    # --scheme flare cannot take a median: refused, not ignored
    assert main(["rank", str(tmp_path / "rmedian.csv"), "--preset", str(tmp_path / "rmedian.toml"),
                 "--out", str(tmp_path / "x"), "--bootstrap", "0", "--scheme", "flare"]) == 2
    assert ("ranking metric 'organ_dsc': aggregate 'median' needs scheme rank-then-aggregate or "
            "aggregate-then-rank, not 'flare'") in capsys.readouterr().err


def test_challenger_compat_refuses_a_median_criterion(tmp_path, capsys):
    """challengeR's joint ranking of a case drawn m times sums its ranks; a median of case
    ranks has no such form, so the bootstrap refuses it: one error line, exit 2."""
    from flare_eval.cli.main import main

    median = {'ranking_scheme = "flare"': 'ranking_scheme = "rank-then-aggregate"',
              ORGAN: ORGAN.replace('"mean"', '"median"')}
    rows = [(t, c, m, v) for c in "123" for t, v in (("a", 0.9), ("b", 0.8))
            for m in ("organ_dsc", "lesion_dsc")]
    # without the bootstrap option the median ranks: a first in every case
    assert _toy_rank(tmp_path, "median", rows, median)[0] == {"a": 1, "b": 2}
    capsys.readouterr()
    assert main(["rank", str(tmp_path / "median.csv"), "--preset", str(tmp_path / "median.toml"),
                 "--out", str(tmp_path / "compat"), "--bootstrap", "10",
                 "--challenger-compat"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "error" in line] == [
        "flare-eval rank: error: challenger_compat sums the ranks of duplicated cases; a "
        "criterion with aggregate 'median' has no such form"]
    assert not (tmp_path / "compat").exists()  # refused before anything is written
