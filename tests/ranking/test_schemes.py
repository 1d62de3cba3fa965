"""Ranking schemes on hand-made tables: ties, missing values, one team, two teams, all equal."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from flare_eval.errors import ConfigError
from flare_eval.presets import FLARE23, RankingMetric
from flare_eval.ranking import rank_teams, rank_with_missing

DSC = RankingMetric("organ_dsc", True, 1.0, "mean")
RUNTIME = RankingMetric("runtime", False, 1.0, "mean", floor=15.0)


def _table(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["team", "case", "metric", "value"])


def test_missing_values_follow_challenger():
    # challengeR rankNA2, min: present ranks 2, 1, 2 -> max 2, the missing one 3
    assert rank_with_missing(np.array([0.3, np.nan, 0.1, 0.3])).tolist() == [2, 3, 1, 2]
    # average: present 1, 2; two missing -> 2 + mean(1:2) = 3.5 each
    assert rank_with_missing(np.array([1.0, np.nan, np.nan, 2.0]), ties="average").tolist() == [
        1, 3.5, 3.5, 2]
    # all missing: maxrank 0, so every one gets 1
    assert rank_with_missing(np.full(3, np.nan)).tolist() == [1, 1, 1]


@pytest.mark.parametrize("ties", ["min", "average", "max", "dense", "first"])
def test_ranks_without_missing_match_pandas(rng, ties):
    values = rng.integers(0, 4, size=(20, 7)).astype(float)
    expected = pd.DataFrame(values).rank(axis=1, method=ties).to_numpy()
    np.testing.assert_array_equal(rank_with_missing(values, ties=ties), expected)


def test_flare_pooled_ranks_by_hand():
    # 3 teams, 2 cases, DSC (higher better) and runtime (lower better, under 15 s ties)
    #   case 1 DSC: a .9, b .8, c .8   -> ranks a1 b2 c2 (min)
    #   case 2 DSC: a .7, b .9, c .6   -> a2 b1 c3
    #   case 1 time: a 10, b 14, c 20  -> floored 15, 15, 20 -> a1 b1 c3
    #   case 2 time: a 30, b 16, c 16  -> a3 b1 c1
    # sums: a 1+2+1+3 = 7, b 2+1+1+1 = 5, c 2+3+3+1 = 9; means /4: 1.75, 1.25, 2.25
    table = _table([
        ("a", "1", "organ_dsc", 0.9), ("b", "1", "organ_dsc", 0.8), ("c", "1", "organ_dsc", 0.8),
        ("a", "2", "organ_dsc", 0.7), ("b", "2", "organ_dsc", 0.9), ("c", "2", "organ_dsc", 0.6),
        ("a", "1", "runtime", 10.0), ("b", "1", "runtime", 14.0), ("c", "1", "runtime", 20.0),
        ("a", "2", "runtime", 30.0), ("b", "2", "runtime", 16.0), ("c", "2", "runtime", 16.0),
    ])
    ranking = rank_teams(table, metrics=(DSC, RUNTIME))
    board = ranking.leaderboard()
    assert list(board.columns) == ["rank", "team", "mean_rank", "organ_dsc", "runtime",
                                   "n_missing"]
    assert board["team"].tolist() == ["b", "a", "c"]
    assert board["rank"].tolist() == [1, 2, 3]
    assert board["mean_rank"].tolist() == pytest.approx([1.25, 1.75, 2.25])
    # raw (unfloored) means: b runtime (14 + 16) / 2
    assert board.loc[0, "runtime"] == pytest.approx(15.0)
    cases = ranking.case_ranks().set_index(["team", "case", "metric"])
    assert cases.loc[("a", "1", "runtime"), "rank"] == 1
    assert cases.loc[("b", "1", "runtime"), "rank"] == 1
    assert cases.loc[("c", "1", "organ_dsc"), "rank"] == 2


def test_team_missing_a_whole_case_ranks_worst_there():
    # case 2 has no rows of team c: c ranks max + 1 = 3 there (a 1, b 2)
    # a: 2 + 1 = 3, b: 1 + 2 = 3, c: 3 + 3 = 6 -> a and b tie at rank 1 (min), c 3
    table = _table([
        ("a", "1", "organ_dsc", 0.8), ("b", "1", "organ_dsc", 0.9), ("c", "1", "organ_dsc", 0.7),
        ("a", "2", "organ_dsc", 0.9), ("b", "2", "organ_dsc", 0.8),
    ])
    ranking = rank_teams(table, metrics=(DSC,))
    board = ranking.leaderboard()
    assert board["team"].tolist() == ["a", "b", "c"]
    assert board["rank"].tolist() == [1, 1, 3]
    cases = ranking.case_ranks().set_index(["team", "case"])
    assert np.isnan(cases.loc[("c", "2"), "value"])
    assert cases.loc[("c", "2"), "rank"] == 3
    # mean of c's DSC over the cases it has, and the one value it lacks
    assert board.set_index("team").loc["c", "organ_dsc"] == pytest.approx(0.7)
    assert board.set_index("team")["n_missing"].to_dict() == {"a": 0, "b": 0, "c": 1}


def test_one_team_and_all_equal_values():
    one = rank_teams(_table([("solo", "1", "organ_dsc", 0.5), ("solo", "2", "organ_dsc", 0.6)]),
                     metrics=(DSC,))
    assert one.leaderboard()[["rank", "team", "mean_rank"]].values.tolist() == [[1, "solo", 1.0]]
    equal = rank_teams(_table([(t, c, "organ_dsc", 0.5) for t in "abc" for c in "12"]),
                       metrics=(DSC,))
    assert equal.leaderboard()["rank"].tolist() == [1, 1, 1]
    assert equal.leaderboard()["mean_rank"].tolist() == [1.0, 1.0, 1.0]


def test_two_teams_average_ties():
    # case 1 tie -> 1.5 each; case 2 a better -> a 1, b 2: a 2.5, b 3.5
    table = _table([("a", "1", "organ_dsc", 0.5), ("b", "1", "organ_dsc", 0.5),
                    ("a", "2", "organ_dsc", 0.9), ("b", "2", "organ_dsc", 0.1)])
    board = rank_teams(table, metrics=(DSC,), ties="average").leaderboard()
    assert board["team"].tolist() == ["a", "b"]
    assert board["mean_rank"].tolist() == pytest.approx([1.25, 1.75])


PER_METRIC = _table([
    # DSC: a .9 .1 .2 (mean .4, median .2); b .5 .5 .5 (mean .5, median .5); c .3 .3 .9 (.5, .3)
    ("a", "1", "organ_dsc", 0.9), ("a", "2", "organ_dsc", 0.1), ("a", "3", "organ_dsc", 0.2),
    ("b", "1", "organ_dsc", 0.5), ("b", "2", "organ_dsc", 0.5), ("b", "3", "organ_dsc", 0.5),
    ("c", "1", "organ_dsc", 0.3), ("c", "2", "organ_dsc", 0.3), ("c", "3", "organ_dsc", 0.9),
    # runtime: a 20 in every case, b 40, c 30 (above the 15 s floor)
    *[("a", c, "runtime", 20.0) for c in "123"],
    *[("b", c, "runtime", 40.0) for c in "123"],
    *[("c", c, "runtime", 30.0) for c in "123"],
])


def test_aggregate_then_rank_mean_and_median():
    # mean DSC: b .5 = c .5 > a .4 -> b1 c1 a3; runtime a1 c2 b3
    # Borda sums: a 3+1 = 4, b 1+3 = 4, c 1+2 = 3 -> c 1, a 2, b 2; mean ranks 2, 2, 1.5
    mean = rank_teams(PER_METRIC, metrics=(DSC, RUNTIME), scheme="aggregate-then-rank")
    board = mean.leaderboard().set_index("team")
    assert board["rank"].to_dict() == {"c": 1, "a": 2, "b": 2}
    assert board["mean_rank"].to_dict() == pytest.approx({"c": 1.5, "a": 2.0, "b": 2.0})
    # median DSC: b .5 > c .3 > a .2 -> b1 c2 a3; runtime a1 c2 b3: a 4, b 4, c 4 -> all 1
    median = rank_teams(PER_METRIC, metrics=tuple(dataclasses.replace(m, aggregate="median")
                                                  for m in (DSC, RUNTIME)),
                        scheme="aggregate-then-rank")
    assert median.leaderboard()["rank"].tolist() == [1, 1, 1]


def test_rank_then_aggregate_per_metric():
    # DSC case ranks: case1 a1 b2 c3; case2 b1 c2 a3; case3 c1 b2 a3
    # mean ranks a 7/3, b 5/3, c 2 -> b1 c2 a3; runtime a1 c2 b3
    # Borda: a 4, b 4, c 4 -> all rank 1 (min)
    ranking = rank_teams(PER_METRIC, metrics=(DSC, RUNTIME), scheme="rank-then-aggregate")
    assert ranking.leaderboard()["rank"].tolist() == [1, 1, 1]
    # DSC alone: b 1, c 2, a 3
    dsc_rows = PER_METRIC[PER_METRIC["metric"] == "organ_dsc"]
    only_dsc = rank_teams(dsc_rows, metrics=(DSC,), scheme="rank-then-aggregate")
    assert only_dsc.leaderboard()["team"].tolist() == ["b", "c", "a"]


def test_test_then_rank(rng):
    n = 30
    base = rng.uniform(0.6, 0.7, size=n)
    rows = []
    for team, shift in (("top", 0.2), ("mid1", 0.0), ("mid2", 0.0)):
        noise = rng.normal(0.0, 0.005, size=n)
        rows += [(team, f"c{i}", "organ_dsc", base[i] + shift + noise[i]) for i in range(n)]
    ranking = rank_teams(_table(rows), metrics=(DSC,), scheme="test-then-rank")
    board = ranking.leaderboard().set_index("team")
    # top beats both (2 wins), the two others are not significantly apart (0 wins each)
    assert board["rank"].to_dict() == {"top": 1, "mid1": 2, "mid2": 2}


def test_bad_options_and_unknown_metric():
    table = _table([("a", "1", "organ_dsc", 0.5)])
    with pytest.raises(ConfigError, match="scheme must be one of"):
        rank_teams(table, metrics=(DSC,), scheme="borda")
    with pytest.raises(ConfigError, match="ties must be one of"):
        rank_teams(table, metrics=(DSC,), ties="random")
    with pytest.raises(ConfigError, match=r"metric\(s\) \['organ_dsc'\] with no direction"):
        rank_teams(table, metrics=(RUNTIME,))


def test_default_metrics_are_the_preset_six():
    names = [m.name for m in FLARE23.ranking_metrics]
    assert names == ["organ_dsc", "organ_nsd", "lesion_dsc", "lesion_nsd", "runtime", "gpu_auc"]
