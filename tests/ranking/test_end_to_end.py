"""``flare-eval rank`` on tiny hand-made results folders: numbers pinned, worked out by hand.

Three teams, two cases, every organ column of a case equal so the organ mean is that value:

====  ==========================================  ==========================================
team  case c1                                     case c2
====  ==========================================  ==========================================
A     organ 0.9, lesion 0.6, ok 10 s              organ 0.8, lesion 0.5, ok 20 s
B     identical to A (a tie), ok 12 s             crash: no prediction (0), penalty 3600 s
C     oom: no prediction (0), penalty 3600 s      timeout: no prediction (0), penalty 3600 s
====  ==========================================  ==========================================

No run was GPU-sampled (``auc_gpu_over_tolerance_mibs`` empty for ok runs): ``gpu_auc`` is
dropped, so five criteria rank (organ DSC/NSD, lesion DSC/NSD, runtime).  Per-case ranks
(ties ``min``; runtimes under the 15 s floor tie):

- c1: A = B = 0.9 > C = 0 on the four accuracy criteria, runtime A 10 -> 15 = B 12 -> 15 < C
  3600: A 1, B 1, C 3 on all five;
- c2: A 0.8 > B = C = 0; runtime A 20 < B = C = 3600: A 1, B 2, C 2 on all five.

FLARE mean rank over the 10 case x criterion ranks: A (5*1 + 5*1)/10 = 1.0, B (5*1 + 5*2)/10
= 1.5, C (5*3 + 5*2)/10 = 2.5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flare_eval.cli import rank as rank_cli
from flare_eval.errors import InputError
from flare_eval.presets import FLARE23
from flare_eval.ranking import rank_results
from flare_eval.runner.efficiency import official_auc

ORGANS = [FLARE23.class_info(label).name for label in FLARE23.organ_labels]
PENALTY_GPU = 16384.0 * 3600.0


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    rank_cli.register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["rank", *argv])
    return args.handler(args)


def _team(root: Path, team: str, cases: dict[str, tuple[float, float, str, float, float]],
          options: dict | None = None) -> None:
    """cases: id -> (organ value, lesion value, run status, time_s, gpu over-tolerance AUC)."""
    folder = root / team
    folder.mkdir(parents=True)
    rows, status, runs = [], [], []
    for case, (organ, lesion, run_status, time_s, gpu) in cases.items():
        row = {"Name": f"{case}.nii.gz"}
        for metric in ("DSC", "NSD"):
            row.update({f"{n}_{metric}": organ for n in ORGANS})
            row[f"Lesion_{metric}"] = lesion
        rows.append(row)
        status.append({"case": case, "status": "ok" if run_status == "ok" else "missing_prediction"})
        # auc_gpu_mibs differs on purpose: the over-tolerance area is the one ranked
        runs.append({"case": case, "name": f"{case}_0000.nii.gz", "status": run_status,
                     "time_s": time_s, "auc_gpu_mibs": 999999.0,
                     "auc_gpu_over_tolerance_mibs": gpu})
    pd.DataFrame(rows).to_csv(folder / "per_case.csv", index=False)
    pd.DataFrame(status).to_csv(folder / "cases.csv", index=False)
    pd.DataFrame(runs).to_csv(folder / "runs.csv", index=False)
    if options is not None:
        (folder / "run.json").write_text(json.dumps({"options": options}))


def _results(root: Path, *, gpu: bool = False) -> Path:
    nan = float("nan")
    # GPU sampled: A 100 and 0 MiB*s, B 50 on c1; failed runs carry the penalty anyway
    a1, a2, b1 = (100.0, 0.0, 50.0) if gpu else (nan, nan, nan)
    _team(root, "A", {"c1": (0.9, 0.6, "ok", 10.0, a1), "c2": (0.8, 0.5, "ok", 20.0, a2)})
    _team(root, "B", {"c1": (0.9, 0.6, "ok", 12.0, b1), "c2": (0.0, 0.0, "crash", nan, nan)})
    _team(root, "C", {"c1": (0.0, 0.0, "oom", nan, nan), "c2": (0.0, 0.0, "timeout", nan, nan)})
    return root


def test_failures_tie_and_unsampled_gpu_end_to_end(tmp_path):
    results = _results(tmp_path / "results")
    out = tmp_path / "ranking"
    assert _run([str(results), "--out", str(out), "--bootstrap", "20",
                 "--challenger-csv", str(tmp_path / "long.csv")]) == 0
    board = pd.read_csv(out / "leaderboard.csv")
    assert board[["rank", "team"]].values.tolist() == [[1, "A"], [2, "B"], [3, "C"]]
    assert board["mean_rank"].tolist() == pytest.approx([1.0, 1.5, 2.5])
    record = json.loads((out / "ranking.json").read_text())
    assert "gpu_auc" in record["dropped_metrics"]
    assert any("no GPU sampled" in w for w in record["warnings"])
    # the floor is the preset's runtime tolerance, recorded with the metric
    assert {m["name"]: m["floor"] for m in record["metrics"]}["runtime"] == 15.0
    table = pd.read_csv(out / "ranking_table.csv").set_index(["team", "case", "metric"])["value"]
    # crash, oom and timeout each carry the preset's 3600 s penalty
    assert table[("B", "c2", "runtime")] == 3600.0
    assert table[("C", "c1", "runtime")] == 3600.0
    assert table[("C", "c2", "runtime")] == 3600.0
    assert table[("A", "c1", "runtime")] == 10.0
    ranks = pd.read_csv(out / "case_ranks.csv").set_index(["team", "case", "metric"])["rank"]
    assert ranks[("A", "c1", "organ_dsc")] == 1 and ranks[("B", "c1", "organ_dsc")] == 1
    assert ranks[("B", "c1", "runtime")] == 1  # 12 s floored to 15 s ties A's 10 s
    assert ranks[("C", "c1", "organ_dsc")] == 3
    # per-metric (challengeR task) ranking: organ_dsc summed case ranks A 2, B 3, C 5
    per = pd.read_csv(out / "metric_ranks.csv")
    organ = per[per["metric"] == "organ_dsc"].set_index("team")
    assert organ["criterion"].to_dict() == {"A": 2.0, "B": 3.0, "C": 5.0}
    assert organ["rank"].to_dict() == {"A": 1, "B": 2, "C": 3}
    taus = pd.read_csv(out / "bootstrap_kendall_by_metric.csv")
    assert set(taus["metric"]) == {"organ_dsc", "organ_nsd", "lesion_dsc", "lesion_nsd", "runtime"}
    assert len(taus) == 5 * 20
    # challengeR long format: 5 tasks x 2 cases x 3 algorithms
    long = pd.read_csv(tmp_path / "long.csv")
    assert long.columns.tolist() == ["task", "case", "algorithm", "value"]
    assert len(long) == 30
    row = long[(long.task == "organ_dsc") & (long.case == "c2") & (long.algorithm == "A")]
    assert row["value"].tolist() == [0.8]


def test_runtime_floor_removed_from_the_cli(tmp_path):
    # --runtime-tolerance 0: on c1 A 10 s < B 12 s, so B's c1 runtime rank is 2:
    # B (4*1 + 2 + 5*2)/10 = 1.6; A and C unchanged
    results = _results(tmp_path / "results")
    assert _run([str(results), "--out", str(tmp_path / "o"), "--bootstrap", "0",
                 "--runtime-tolerance", "0"]) == 0
    board = pd.read_csv(tmp_path / "o" / "leaderboard.csv")
    assert board["mean_rank"].tolist() == pytest.approx([1.0, 1.6, 2.5])


def test_gpu_sampled_ranks_the_over_tolerance_area_and_penalties(tmp_path):
    results = _results(tmp_path / "results", gpu=True)
    out = rank_results(results, tmp_path / "o", n_bootstrap=0).out_dir
    table = pd.read_csv(out / "ranking_table.csv").set_index(["team", "case", "metric"])["value"]
    assert table[("A", "c1", "gpu_auc")] == 100.0  # not auc_gpu_mibs (999999)
    assert table[("B", "c2", "gpu_auc")] == PENALTY_GPU
    assert table[("C", "c1", "gpu_auc")] == PENALTY_GPU
    # gpu_auc ranks: c1 B 50 -> 1, A 100 -> 2, C -> 3; c2 A 0 -> 1, B = C penalty -> 2.
    # A (5*1 + 2 + 5*1 + 1)/12 = 13/12, B (5*1 + 1 + 6*2)/12 = 1.5, C (6*3 + 6*2)/12 = 2.5
    board = pd.read_csv(out / "leaderboard.csv")
    assert board["mean_rank"].tolist() == pytest.approx([13 / 12, 18 / 12, 30 / 12])


def test_failed_run_never_beats_an_unsampled_ok_run(tmp_path):
    # B's ok c1 run has no GPU value while A's has: on c1 the failed C loses its finite
    # penalty (missing too), so C cannot rank above B: present A 100 -> 1; missing B and C
    # share the worst rank max + 1 = 2 (min).
    nan = float("nan")
    root = tmp_path / "results"
    _team(root, "A", {"c1": (0.9, 0.6, "ok", 10.0, 100.0)})
    _team(root, "B", {"c1": (0.9, 0.6, "ok", 12.0, nan)})
    _team(root, "C", {"c1": (0.0, 0.0, "oom", nan, nan)})
    out = rank_results(root, tmp_path / "o", n_bootstrap=0).out_dir
    ranks = pd.read_csv(out / "case_ranks.csv").set_index(["team", "case", "metric"])["rank"]
    assert [ranks[(t, "c1", "gpu_auc")] for t in "ABC"] == [1, 2, 2]


def test_teams_scored_with_different_options_are_refused(tmp_path):
    root = tmp_path / "results"
    base = {"preset": {"nsd_dsc_threshold": 0.1}, "lesions": {"iou_threshold": 0.5}}
    other = {"preset": {"nsd_dsc_threshold": 0.2}, "lesions": {"iou_threshold": 0.5}}
    _team(root, "A", {"c1": (0.9, 0.6, "ok", 10.0, 1.0)}, base)
    _team(root, "B", {"c1": (0.9, 0.6, "ok", 10.0, 1.0)}, other)
    with pytest.raises(InputError, match=r"preset\.nsd_dsc_threshold is 0\.1 for \['A'\]; 0\.2"):
        rank_results(root, tmp_path / "o", n_bootstrap=0)
    assert _run([str(root), "--out", str(tmp_path / "o2"), "--bootstrap", "0",
                 "--allow-mixed-options"]) == 0


def test_official_gpu_auc_is_rounded_half_to_even():
    # 2 samples of 1000.25 and 1000.5 MiB at 0.5 s: 1000.375 -> 1000; 3 x 1.0 at 0.5 s: 1.5 -> 2
    assert official_auc([1000.25, 1000.5], period_s=0.5) == 1000
    assert official_auc([1.0, 1.0, 1.0], period_s=0.5) == 2
    assert official_auc([1.0, 1.0, 1.0, 1.0, 1.0], period_s=0.5) == 2  # 2.5 -> 2 (half to even)
    assert isinstance(official_auc([1.0], period_s=0.5), int)


def test_holm_is_the_rank_default_and_none_is_selectable(tmp_path):
    # 6 cases, team a better than b by 0.05, 0.10 ... 0.30 (distinct |d|, no ties): one-sided
    # Wilcoxon n = 6, R+ = 0, mu = 10.5, sigma = sqrt(6*7*13/24) = 4.76970;
    # p = Phi((0 - 10.5 + 0.5)/4.76970) = Phi(-2.09657) = 0.018016.  Holm over the 2 ordered
    # pairs: the smaller p doubled, 0.036032 (the other, 0.989, stays).
    rows = [(t, f"c{c}", "organ_dsc", 0.9 - 0.05 * (c + 1) * (t == "b")) for t in "ab"
            for c in range(6)]
    pd.DataFrame(rows, columns=["team", "case", "metric", "value"]).to_csv(tmp_path / "t.csv",
                                                                           index=False)
    _run([str(tmp_path / "t.csv"), "--out", str(tmp_path / "h"), "--bootstrap", "0"])
    sig = pd.read_csv(tmp_path / "h" / "significance.csv").set_index(["team", "other"])
    assert sig.loc[("a", "b"), "p_value"] == pytest.approx(0.018016, abs=1e-6)
    assert sig.loc[("a", "b"), "p_holm"] == pytest.approx(0.036032, abs=1e-6)
    _run([str(tmp_path / "t.csv"), "--out", str(tmp_path / "n"), "--bootstrap", "0",
          "--p-adjust", "none"])
    sig = pd.read_csv(tmp_path / "n" / "significance.csv").set_index(["team", "other"])
    assert sig.loc[("a", "b"), "p_holm"] == pytest.approx(0.018016, abs=1e-6)
    assert json.loads((tmp_path / "n" / "ranking.json").read_text())["p_adjust"] == "none"
    # rank_results (evaluate, the demo) adjusts by Holm too
    rank_results(tmp_path / "t.csv", tmp_path / "api", n_bootstrap=0)
    sig = pd.read_csv(tmp_path / "api" / "significance.csv").set_index(["team", "other"])
    assert sig.loc[("a", "b"), "p_holm"] == pytest.approx(0.036032, abs=1e-6)


def test_wilcoxon_tail_keeps_precision():
    from flare_eval.ranking.significance import wilcoxon_better_p

    # 200 cases, team 0 always worse (lower is better): d = v0 - v1 > 0, R+ = n(n+1)/2 =
    # 20100, mu = 10050, sigma = sqrt(200*201*401/24) = 819.6; "1 better than 0" is the upper
    # tail z = (R+ - mu - 0.5)/sigma = 12.26: norm.sf gives ~7e-35, 1 - ndtr(z) gives 0.0
    v = np.stack([np.arange(1, 201.0), np.zeros(200)], axis=1)
    p = wilcoxon_better_p(v)
    assert 1e-36 < p[1, 0] < 1e-33
    assert p[0, 1] == pytest.approx(1.0)


# challengeR's schemes (wiesenfa/challengeR, R/wrapper.R): rankThenAggregate = per task, rank
# every case (rankNA2: ties "min", a missing value max + 1), aggregate the ranks (mean), rank;
# aggregateThenRank = aggregate the values (FUN, after as.challenge's na.treat: a number
# replaces a missing value, "na.rm" drops it), rank (min); testThenRank = aggregate by
# "significance" (share of significant one-sided Wilcoxon wins), rank (min).  flare-eval
# ranks each metric so (metric_ranks.csv) and combines the metrics by their mean rank.
#
#   organ_dsc   case 1  2    3       runtime (lower better, above the 15 s floor)
#   a           0.9     0.1  0.2     20 20 20
#   b           0.5     --   0.5     40 40 40    (b has no organ_dsc row for case 2)
#   c           0.3     0.3  0.9     30 30 30
SCHEME_ROWS = [
    ("a", "1", "organ_dsc", 0.9), ("a", "2", "organ_dsc", 0.1), ("a", "3", "organ_dsc", 0.2),
    ("b", "1", "organ_dsc", 0.5), ("b", "3", "organ_dsc", 0.5),
    ("c", "1", "organ_dsc", 0.3), ("c", "2", "organ_dsc", 0.3), ("c", "3", "organ_dsc", 0.9),
    *[(t, c, "runtime", v) for t, v in (("a", 20.0), ("b", 40.0), ("c", 30.0)) for c in "123"],
]


def _ranked(tmp_path: Path, rows: list, *options: str) -> tuple[dict, dict]:
    """(metric -> team -> rank of metric_ranks.csv, team -> final rank) of ``rank`` on rows."""
    table = tmp_path / "table.csv"
    pd.DataFrame(rows, columns=["team", "case", "metric", "value"]).to_csv(table, index=False)
    out = tmp_path / "-".join(o.strip("-") for o in options)
    assert _run([str(table), "--out", str(out), "--bootstrap", "0", *options]) == 0
    per = pd.read_csv(out / "metric_ranks.csv")
    metric = {m: g.set_index("team")["rank"].to_dict() for m, g in per.groupby("metric")}
    return metric, pd.read_csv(out / "leaderboard.csv").set_index("team")["rank"].to_dict()


@pytest.mark.parametrize(("options", "dsc", "final"), [
    # case ranks: 1: a1 b2 c3; 2: c1 a2, b missing max + 1 = 3; 3: c1 b2 a3.  Mean ranks
    # a 2, b 7/3, c 5/3 -> c1 a2 b3; runtime a1 c2 b3; combined a 1.5, b 3, c 1.5
    (("--scheme", "rank-then-aggregate"), {"c": 1, "a": 2, "b": 3}, {"a": 1, "c": 1, "b": 3}),
    # na.rm: means a 0.4, b (0.5 + 0.5)/2 = 0.5, c 0.5 -> b1 c1 a3; combined a 2, b 2, c 1.5
    (("--scheme", "aggregate-then-rank", "--na-treat", "drop"), {"b": 1, "c": 1, "a": 3},
     {"c": 1, "a": 2, "b": 2}),
    # na.treat = 0.8: b (0.5 + 0.8 + 0.5)/3 = 0.6 -> b1 c2 a3; combined a 2, b 2, c 2
    (("--scheme", "aggregate-then-rank", "--na-treat", "0.8"), {"b": 1, "c": 2, "a": 3},
     {"a": 1, "b": 1, "c": 1}),
    # worst (the default, flare-eval's: the metric's worst value over every team and case,
    # 0.1): b (0.5 + 0.1 + 0.5)/3 = 0.3667 -> c1 (0.5) a2 (0.4) b3; combined a 1.5, b 3, c 1.5
    (("--scheme", "aggregate-then-rank"), {"c": 1, "a": 2, "b": 3}, {"a": 1, "c": 1, "b": 3}),
    # median, na.rm: a median(0.9, 0.1, 0.2) = 0.2, b 0.5, c median(0.3, 0.3, 0.9) = 0.3
    # -> b1 c2 a3; combined a 2, b 2, c 2
    (("--scheme", "aggregate-then-rank", "--aggregate", "median", "--na-treat", "drop"),
     {"b": 1, "c": 2, "a": 3}, {"a": 1, "b": 1, "c": 1}),
])
def test_challenger_schemes_on_a_hand_ranked_table(tmp_path, options, dsc, final):
    metric, board = _ranked(tmp_path, SCHEME_ROWS, *options)
    assert metric["organ_dsc"] == dsc
    assert metric["runtime"] == {"a": 1, "c": 2, "b": 3}
    assert board == final


def test_test_then_rank_counts_significant_wins(tmp_path):
    # 6 cases: a 0.9; b 0.9 - 0.05k and c 0.9 - 0.05(7 - k), k = 1..6.  a beats b and c in
    # every case by distinct margins: one-sided p = Phi(-2.09657) = 0.018016 (see the Holm
    # test); b against c: differences +-0.05, +-0.15, +-0.25, R+ = R- (not significant).
    # Holm over the 6 ordered pairs: 6 x 0.018 = 0.108 > 0.05, no win, all tie; without the
    # adjustment a has 2 wins, b and c none: a1 b2 c2
    rows = [("a", f"k{k}", "organ_dsc", 0.9) for k in range(1, 7)]
    rows += [("b", f"k{k}", "organ_dsc", 0.9 - 0.05 * k) for k in range(1, 7)]
    rows += [("c", f"k{k}", "organ_dsc", 0.9 - 0.05 * (7 - k)) for k in range(1, 7)]
    _, holm = _ranked(tmp_path, rows, "--scheme", "test-then-rank")
    assert holm == {"a": 1, "b": 1, "c": 1}
    _, none = _ranked(tmp_path, rows, "--scheme", "test-then-rank", "--p-adjust", "none")
    assert none == {"a": 1, "b": 2, "c": 2}


@pytest.mark.parametrize(("ties", "expected"), [
    # one case, four teams: a 0.9, d 0.5, b and c missing.  Present ranks a1 d2; the two
    # missing values are one last tie group after rank 2.  challengeR (rankNA2) defines it
    # for min (2 + 1 = 3) and average (2 + mean(1:2) = 3.5) only; for max and first it
    # leaves NA (R's rank(na.last="keep")).  flare-eval: max 2 + 2 = 4, first 3 and 4 in
    # team order.
    ("min", {"a": 1, "b": 3, "c": 3, "d": 2}),
    ("average", {"a": 1, "b": 3.5, "c": 3.5, "d": 2}),
    ("max", {"a": 1, "b": 4, "c": 4, "d": 2}),
    ("first", {"a": 1, "b": 3, "c": 4, "d": 2}),
])
def test_ties_with_missing_values(tmp_path, ties, expected):
    rows = [("a", "1", "organ_dsc", 0.9), ("d", "1", "organ_dsc", 0.5),
            ("b", "2", "organ_dsc", 0.5)]  # b has a row elsewhere: case 1 is missing for b, c
    rows.append(("c", "2", "organ_dsc", 0.4))
    table = tmp_path / "t.csv"
    pd.DataFrame(rows, columns=["team", "case", "metric", "value"]).to_csv(table, index=False)
    assert _run([str(table), "--out", str(tmp_path / "o"), "--bootstrap", "0",
                 "--ties", ties]) == 0
    ranks = pd.read_csv(tmp_path / "o" / "case_ranks.csv", dtype={"case": str})
    got = ranks[ranks["case"] == "1"].set_index("team")["rank"].to_dict()
    assert got == expected


def test_bootstrap_default_is_1000_samples(tmp_path):
    # the FLARE 2023 paper's 1000 bootstrap samples, from the CLI and from rank_results
    table = tmp_path / "table.csv"
    pd.DataFrame(SCHEME_ROWS, columns=["team", "case", "metric", "value"]).to_csv(table, index=False)
    assert _run([str(table), "--out", str(tmp_path / "cli")]) == 0
    rank_results(table, tmp_path / "api")
    for out in ("cli", "api"):
        assert len(pd.read_csv(tmp_path / out / "bootstrap_kendall.csv")) == 1000
        assert json.loads((tmp_path / out / "ranking.json").read_text())["n_bootstrap"] == 1000


def test_p_equal_to_alpha_is_significant(tmp_path):
    # one case, a 0.9 > b 0.8: n = 1, R+ = 1, mu = 1*2/4 = 0.5, sigma = sqrt(1*2*3/24) = 0.5,
    # z = (1 - 0.5 - 0.5)/0.5 = 0: p = 0.5 exactly.  At --alpha 0.5, p <= alpha counts
    # (challengeR's decision rule): a has one significant win, b none
    rows = [("a", "1", "organ_dsc", 0.9), ("b", "1", "organ_dsc", 0.8)]
    _, board = _ranked(tmp_path, rows, "--scheme", "test-then-rank", "--alpha", "0.5",
                       "--p-adjust", "none")
    assert board == {"a": 1, "b": 2}
    sig = pd.read_csv(tmp_path / "scheme-test-then-rank-alpha-0.5-p-adjust-none" /
                      "significance.csv").set_index(["team", "other"])
    assert sig.loc[("a", "b"), "p_value"] == 0.5
    assert bool(sig.loc[("a", "b"), "significant"]) is True


def test_rank_results_default_na_treat_is_worst(tmp_path):
    # as the CLI's default above: b's missing case-2 DSC is the worst value 0.1, so b's mean
    # (0.5 + 0.1 + 0.5)/3 = 0.3667 ranks it last (c 0.5, a 0.4)
    table = tmp_path / "table.csv"
    pd.DataFrame(SCHEME_ROWS, columns=["team", "case", "metric", "value"]).to_csv(table, index=False)
    out = rank_results(table, tmp_path / "o", scheme="aggregate-then-rank", n_bootstrap=0).out_dir
    per = pd.read_csv(out / "metric_ranks.csv")
    assert per[per["metric"] == "organ_dsc"].set_index("team")["rank"].to_dict() == {
        "a": 2, "b": 3, "c": 1}
    assert json.loads((out / "ranking.json").read_text())["na_treat"] == "worst"

