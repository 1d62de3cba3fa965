"""Draw the FLARE23 paper's radar chart: per criterion, how many teams each team outperforms.

Ranks a synthetic tidy table ``team, case, metric, value`` (6 teams, 30 cases) with the FLARE23
rule, then draws :func:`flare_eval.report.radar_figure` from the ranking's ``case_ranks`` and
``leaderboard`` tables, the same ones ``flare-eval rank`` writes as CSV. The numbers behind the
chart come from :func:`flare_eval.report.outperform_table`.

Run::

    python examples/radar_chart.py [--out DIR]      # writes DIR/radar.png and DIR/radar.svg
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window: runs on a headless machine

import numpy as np
import pandas as pd

from flare_eval.ranking import rank_teams
from flare_eval.report import outperform_table, radar_figure

# team: strength in accuracy (higher better), speed (lower s better), GPU AUC (lower better)
PROFILES = {"t1": (0.92, 9, 0), "t2": (0.91, 20, 3e4), "t3": (0.90, 5, 0),
            "t4": (0.88, 12, 1e4), "t5": (0.86, 30, 8e4), "t6": (0.80, 6, 0)}


def synthetic_table(n_cases: int = 30, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for team, (dsc, runtime, gpu) in PROFILES.items():
        for k in range(n_cases):
            case = f"case_{k:03d}"
            organ = float(np.clip(dsc + rng.normal(0, 0.03), 0, 1))
            lesion = float(np.clip(dsc - 0.3 + rng.normal(0, 0.15), 0, 1))
            rows += [(team, case, "organ_dsc", organ), (team, case, "organ_nsd", organ - 0.05),
                     (team, case, "lesion_dsc", lesion), (team, case, "lesion_nsd", lesion),
                     (team, case, "runtime", runtime * rng.lognormal(0, 0.2)),
                     (team, case, "gpu_auc", gpu * rng.lognormal(0, 0.2))]
    return pd.DataFrame(rows, columns=["team", "case", "metric", "value"])


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ranking = rank_teams(synthetic_table())  # FLARE23: pooled rank-then-aggregate
    case_ranks, leaderboard = ranking.case_ranks(), ranking.leaderboard()
    table = outperform_table(case_ranks, leaderboard)
    print(table.pivot(index="team", columns="criterion", values="outperforms")
          .loc[list(leaderboard["team"])].to_string())
    fig = radar_figure(case_ranks, leaderboard, top=5)
    for suffix in ("png", "svg"):
        fig.savefig(out / f"radar.{suffix}")
    print(f"wrote {out / 'radar.png'} and {out / 'radar.svg'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
    else:
        main(args.out)
