"""Rank teams from a tidy CSV ``team, case, metric, value`` with the FLARE23 rule.

Any source can feed the ranking engine through this table: other scorers' outputs, a
spreadsheet, a database export. This example writes a synthetic table (4 teams, 20 cases, the six
FLARE23 criteria), ranks it with :func:`flare_eval.ranking.rank_results` (what ``flare-eval
rank TABLE.csv --out DIR`` runs), and compares the FLARE scheme with challengeR's
aggregate-then-rank on the same table with :func:`flare_eval.ranking.rank_teams`.

Run::

    python examples/rank_a_csv.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from flare_eval.ranking import rank_results, rank_teams, read_ranking_table

# team: (organ DSC, lesion DSC, runtime s, GPU AUC over the 4 GB tolerance in MiB*s)
TEAMS = {
    "aurora": (0.92, 0.65, 9.0, 0.0),
    "boreal": (0.90, 0.60, 6.0, 0.0),
    "cirrus": (0.93, 0.68, 40.0, 90_000.0),
    "delta": (0.85, 0.45, 4.0, 0.0),
}


def synthetic_table(n_cases: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per-case values around each team's typical ones; lower is better for time and GPU."""
    rng = np.random.default_rng(seed)
    rows = []
    for team, (organ, lesion, runtime, gpu) in TEAMS.items():
        for k in range(n_cases):
            case = f"case_{k:03d}"
            organ_dsc = float(np.clip(organ + rng.normal(0, 0.03), 0, 1))
            lesion_dsc = float(np.clip(lesion + rng.normal(0, 0.15), 0, 1))
            rows += [
                (team, case, "organ_dsc", organ_dsc),
                (team, case, "organ_nsd", float(np.clip(organ_dsc - 0.05 + rng.normal(0, 0.02), 0, 1))),
                (team, case, "lesion_dsc", lesion_dsc),
                (team, case, "lesion_nsd", float(np.clip(lesion_dsc + rng.normal(0, 0.05), 0, 1))),
                (team, case, "runtime", float(runtime * rng.lognormal(0, 0.15))),
                (team, case, "gpu_auc", float(gpu * rng.lognormal(0, 0.2))),
            ]
    return pd.DataFrame(rows, columns=["team", "case", "metric", "value"])


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "table.csv"
    synthetic_table().to_csv(csv, index=False)

    # the FLARE23 rule, bootstrap stability and Wilcoxon + Holm; files in out/ranking
    result = rank_results(csv, out / "ranking", n_bootstrap=200, seed=0)
    print(result.leaderboard[["rank", "team", "mean_rank", "organ_dsc", "lesion_dsc", "runtime"]]
          .round(3).to_string(index=False))
    print(f"median Kendall's tau over 200 bootstrap samples: {result.median_tau:.3f}")
    significance = pd.read_csv(out / "ranking" / "significance.csv")
    wins = significance[significance["significant"]]
    print(f"{len(wins)} significant one-sided wins (Holm, alpha 0.05), e.g.")
    print(wins.head(4)[["metric", "team", "other", "p_holm"]].to_string(index=False))

    # another scheme on the same table: the rules change the order, which is why they are data
    table = read_ranking_table(csv)
    other = rank_teams(table, scheme="aggregate-then-rank").leaderboard()
    print("aggregate-then-rank:", " > ".join(other.sort_values("rank")["team"]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
    else:
        main(args.out)
