"""Rank a results folder (or a tidy table) and write every ranking output, atomically.

The one function behind ``flare-eval rank``, the demo and the organizer pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from flare_eval.errors import ConfigError
from flare_eval.io import atomic_write_text, write_table
from flare_eval.presets import FLARE23, Preset
from flare_eval.ranking.bootstrap import Bootstrap, bootstrap_ranking
from flare_eval.ranking.schemes import rank_teams
from flare_eval.ranking.significance import pairwise_significance
from flare_eval.ranking.table import ranking_data, read_ranking_table
from flare_eval.typing import StrPath

__all__ = ["RankOutputs", "rank_results", "challenger_long_table"]


def challenger_long_table(table: pd.DataFrame) -> pd.DataFrame:
    """The ranking table in challengeR's long format: ``task, case, algorithm, value``.

    Every (metric, case, team) of the table's cube is a row, a missing value an empty cell,
    so ``as.challenge(data, by="task", algorithm="algorithm", case="case", value="value",
    smallBetter=...)`` sees the same missing values as flare-eval.

    Examples
    --------
    >>> t = pd.DataFrame({"team": ["a", "b"], "case": ["c1", "c1"], "metric": ["organ_dsc"] * 2,
    ...                   "value": [0.9, 0.8]})
    >>> challenger_long_table(t).to_dict("records")[0]
    {'task': 'organ_dsc', 'case': 'c1', 'algorithm': 'a', 'value': 0.9}
    """
    full = pd.MultiIndex.from_product(
        [sorted(table["metric"].unique()), sorted(table["case"].unique()),
         sorted(table["team"].unique())], names=["task", "case", "algorithm"])
    values = table.set_index(["metric", "case", "team"])["value"]
    values.index = values.index.set_names(["task", "case", "algorithm"])
    return values.reindex(full).reset_index()


@dataclass(frozen=True)
class RankOutputs:
    """What :func:`rank_results` computed (its files are in ``out_dir``)."""

    leaderboard: pd.DataFrame
    bootstrap: Bootstrap | None
    warnings: list[str]
    out_dir: Path

    @property
    def median_tau(self) -> float | None:
        if self.bootstrap is None:
            return None
        taus = self.bootstrap.tau[~np.isnan(self.bootstrap.tau)]
        return float(np.median(taus)) if taus.size else None


def rank_results(
    results: StrPath,
    out_dir: StrPath,
    *,
    preset: Preset = FLARE23,
    scheme: str | None = None,
    ties: str | None = None,
    aggregate: str | None = None,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
    challenger_compat: bool = False,
    p_adjust: str = "holm",
    allow_mixed_options: bool = False,
    challenger_csv: StrPath | None = None,
    na_treat: float | str = "worst",
) -> RankOutputs:
    """Rank, bootstrap, test, and write ``ranking_table.csv``, ``case_ranks.csv``,
    ``leaderboard.csv``, ``bootstrap_kendall.csv``, ``bootstrap_ranks.csv``,
    ``bootstrap_summary.csv``, ``significance.csv``, ``metric_ranks.csv`` (challengeR's
    per-task ranking: each metric ranked on its own by ``scheme``),
    ``bootstrap_kendall_by_metric.csv`` and ``ranking.json`` into ``out_dir``.

    Parameters
    ----------
    results
        A results folder ``RESULTS/<team>/`` or a tidy CSV/Parquet table.
    out_dir
        Output folder.
    preset
        The criteria (directions, weights, aggregates, floors, caps), the scheme, the tie
        method and the failure penalties.
    scheme, ties, alpha
        See :func:`~flare_eval.ranking.rank_teams`; ``None`` takes the preset's
        ``ranking_scheme`` and ``tie_method``.
    aggregate
        Replaces every criterion's aggregate (``"mean"`` or ``"median"``); ``None`` keeps
        the preset's.
    n_bootstrap, seed, challenger_compat
        See :func:`~flare_eval.ranking.bootstrap_ranking`; 0 samples skips the bootstrap.
    p_adjust
        ``"holm"`` or ``"none"``: the adjustment of the Wilcoxon p-values (significance and
        test-then-rank).
    allow_mixed_options
        Rank teams scored with different options (see
        :func:`~flare_eval.ranking.table_from_results`) instead of refusing.
    na_treat
        Missing values of aggregate-then-rank: a number, ``"worst"`` (default) or ``"drop"``
        (see :func:`~flare_eval.ranking.schemes.team_scores`).
    challenger_csv
        Also write the table in challengeR's long format ``task, case, algorithm, value``
        (raw values; a missing value as an empty cell) to this file, for a cross-check in R.

    Raises
    ------
    ConfigError
        For inconsistent options (a bootstrap of test-then-rank, challengeR mode without one).
    """
    ties = ties or preset.tie_method
    scheme = scheme or preset.ranking_scheme
    if aggregate is not None:
        preset = preset.with_overrides(ranking_metrics=tuple(
            dataclasses.replace(m, aggregate=aggregate) for m in preset.ranking_metrics))
    if n_bootstrap < 0:
        raise ConfigError(f"--bootstrap must be 0 or more, got {n_bootstrap}")
    if n_bootstrap and scheme == "test-then-rank":
        raise ConfigError("test-then-rank has no bootstrap", hint="add --bootstrap 0")
    if challenger_compat and not n_bootstrap:
        raise ConfigError("--challenger-compat only changes the bootstrap",
                          hint="drop it or give --bootstrap N")
    out = Path(out_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_ranking_table(results, preset=preset,
                                   allow_mixed_options=allow_mixed_options)
        data = ranking_data(table, preset.ranking_metrics)
    messages = [str(w.message) for w in caught]
    dropped = [m.name for m in preset.ranking_metrics if m not in data.metrics]
    ranking = rank_teams(data, scheme=scheme, ties=ties, alpha=alpha, p_adjust=p_adjust,
                         na_treat=na_treat)
    boot = None
    if n_bootstrap:
        boot = bootstrap_ranking(data, n_bootstrap=n_bootstrap, seed=seed, scheme=scheme,
                                 ties=ties, challenger_compat=challenger_compat,
                                 na_treat=na_treat)
    significance = pairwise_significance(table, metrics=data.metrics, alpha=alpha,
                                         p_adjust=p_adjust)
    leaderboard = ranking.leaderboard()
    write_table(table, out / "ranking_table.csv")
    write_table(ranking.case_ranks(), out / "case_ranks.csv")
    write_table(leaderboard, out / "leaderboard.csv")
    if boot is not None:
        write_table(boot.kendall_table(), out / "bootstrap_kendall.csv")
        write_table(boot.ranks_table(), out / "bootstrap_ranks.csv")
        write_table(boot.summary(), out / "bootstrap_summary.csv")
        write_table(boot.kendall_by_metric_table(), out / "bootstrap_kendall_by_metric.csv")
    write_table(ranking.metric_ranks(), out / "metric_ranks.csv")
    if challenger_csv is not None:
        write_table(challenger_long_table(table), Path(challenger_csv))
    write_table(significance, out / "significance.csv")
    outputs = RankOutputs(leaderboard, boot, messages, out)
    from flare_eval import __version__

    record = {
        "scheme": scheme,
        "na_treat": na_treat,
        "ties": ties,
        "preset": preset.name,
        # the efficiency rules the ranking applied (the report draws these, not its own)
        "runtime_tolerance_s": preset.runtime_tolerance_s,
        "gpu_tolerance_mib": preset.gpu_tolerance_mib,
        "failed_runtime_s": preset.failed_runtime_s,
        "failed_gpu_auc_mibs": preset.failed_gpu_auc_mibs,
        # the whole definition (with its content_sha256): a preset from a user's file is read
        # back from here by the report
        "definition": preset.describe(),
        "metrics": [dataclasses.asdict(m) for m in data.metrics],
        "dropped_metrics": dropped,
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "challenger_compat": challenger_compat,
        # the report refuses teams scored with different options unless the ranking allowed it
        "allow_mixed_options": allow_mixed_options,
        "alpha": alpha,
        "p_adjust": p_adjust,
        "significance": "one-sided paired Wilcoxon signed-rank, normal approximation with "
                        "continuity correction, zero differences dropped, "
                        + ("Holm over the K(K-1) ordered pairs of each metric"
                           if p_adjust == "holm" else "no adjustment")
                        + "; significant when p <= alpha (challengeR)",
        "missing_values": "a missing value takes the worst rank of its case (max + 1)",
        "n_teams": len(data.teams),
        "n_cases": len(data.cases),
        "source": str(results),
        "warnings": messages,
        "median_tau": outputs.median_tau,
        "versions": {"flare_eval": __version__, "python": platform.python_version(),
                     "numpy": np.__version__, "scipy": scipy.__version__,
                     "pandas": pd.__version__},
    }
    atomic_write_text(out / "ranking.json", json.dumps(record, indent=2) + "\n")
    return outputs
