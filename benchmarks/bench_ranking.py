"""Benchmark: FLARE ranking + 1000-sample bootstrap on 40 teams x 400 cases x 6 metrics.

Anchor: a naive bootstrap that rebuilds each resampled table and re-ranks it with pandas
(groupby rank, mean, rank) and scipy's ``kendalltau``, the way a per-sample loop is usually
written.  The anchor runs on a few samples and is scaled to 1000 per-sample; both are timed
in this script, on this machine, and the ratio is printed.

    python benchmarks/bench_ranking.py
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from flare_eval.presets import FLARE23
from flare_eval.ranking import bootstrap_ranking, draw_counts, rank_teams

N_TEAMS, N_CASES, N_BOOTSTRAP, N_ANCHOR = 40, 400, 1000, 20
SEED = 0


def make_table(rng: np.random.Generator) -> pd.DataFrame:
    teams = [f"team{k:02d}" for k in range(N_TEAMS)]
    cases = [f"FLARE23Ts_{c:04d}" for c in range(1, N_CASES + 1)]
    frames = []
    for metric in FLARE23.ranking_metrics:
        if metric.higher_is_better:
            values = np.clip(rng.normal(0.85, 0.08, (N_CASES, N_TEAMS)), 0, 1).round(4)
        elif metric.name == "runtime":
            values = rng.gamma(4.0, 6.0, (N_CASES, N_TEAMS)).round(2)
        else:
            values = rng.gamma(2.0, 5e4, (N_CASES, N_TEAMS)).round(0)
        frames.append(pd.DataFrame({
            "team": np.tile(teams, N_CASES), "case": np.repeat(cases, N_TEAMS),
            "metric": metric.name, "value": values.ravel(),
        }))
    return pd.concat(frames, ignore_index=True)


def anchor_one_sample(by_case: pd.DataFrame, counts: np.ndarray, full: pd.Series) -> float:
    """Naive per-sample re-ranking: resample rows, rank per case and metric, mean, rank, tau.

    ``by_case`` is the table indexed by case; each drawn copy gets its own case id."""
    cases = np.array(sorted(by_case.index.unique()))
    drawn_ids = np.repeat(cases, counts)
    drawn = by_case.loc[drawn_ids].reset_index()
    rows_per_case = len(by_case) // len(cases)
    drawn["case"] = np.repeat(np.arange(len(drawn_ids)), rows_per_case)
    directions = {m.name: m for m in FLARE23.ranking_metrics}
    signed = drawn["value"].copy()
    for name, metric in directions.items():
        rows = drawn["metric"] == name
        v = drawn.loc[rows, "value"]
        if metric.floor is not None:
            v = v.clip(lower=metric.floor)
        signed[rows] = -v if metric.higher_is_better else v
    drawn["signed"] = signed
    drawn["rank"] = drawn.groupby(["case", "metric"])["signed"].rank(method="min")
    ranks = drawn.groupby("team")["rank"].mean().rank(method="min")
    return kendalltau(full[ranks.index], ranks).statistic


def main() -> None:
    table = make_table(np.random.default_rng(SEED))
    print(f"{N_TEAMS} teams x {N_CASES} cases x {len(FLARE23.ranking_metrics)} metrics "
          f"({len(table)} rows), {N_BOOTSTRAP} bootstrap samples")

    start = time.perf_counter()
    ranking = rank_teams(table)
    boot = bootstrap_ranking(table, n_bootstrap=N_BOOTSTRAP, seed=SEED)
    ours = time.perf_counter() - start
    full = pd.Series(ranking.team_rank, index=list(ranking.data.teams))

    counts = draw_counts(N_CASES, N_ANCHOR, seed=SEED)
    start = time.perf_counter()
    by_case = table.set_index("case")
    taus = [anchor_one_sample(by_case, counts[b], full) for b in range(N_ANCHOR)]
    anchor_per_sample = (time.perf_counter() - start) / N_ANCHOR
    anchor = anchor_per_sample * N_BOOTSTRAP
    # same draws (same seed, same generator): the first samples' taus must agree
    assert np.allclose(taus, boot.tau[:N_ANCHOR]), "anchor and flare-eval disagree"

    print(f"flare-eval ranking + bootstrap: {ours:.3f} s (target < 2 s)")
    print(f"anchor (pandas/scipy loop):     {anchor:.1f} s for {N_BOOTSTRAP} samples "
          f"(measured on {N_ANCHOR}: {anchor_per_sample * 1e3:.0f} ms per sample)")
    print(f"speed-up vs anchor: {anchor / ours:.0f}x; median tau {np.median(boot.tau):.3f}")


if __name__ == "__main__":
    main()
