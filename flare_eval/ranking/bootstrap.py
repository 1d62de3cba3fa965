"""Ranking stability: bootstrap of the cases and Kendall's tau-b against the full ranking.

Cases are drawn with replacement as blocks carrying all their metrics.  Each draw is ranked
on its own: a case drawn m times counts m times, as m distinct cases would.  Per-case ranks
do not change under resampling, so all draws are ranked at once by matrix products of the draw
counts and the rank matrix (:func:`flare_eval.ranking.schemes.team_scores`).

challengeR instead ranks the m copies of a duplicated case jointly (ranks 1, 1+m, 1+2m...),
which inflates the instability it reports (NOTES: median tau 0.69 instead of 0.78 on a close
race of 400 cases x 10 algorithms); ``challenger_compat=True`` reproduces it, for comparison
with published results only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from flare_eval.errors import ConfigError
from flare_eval.presets import FLARE23, RankingMetric
from flare_eval.ranking.schemes import (
    NaTreat,
    Scheme,
    Ties,
    _as_int_if_whole,
    case_ranks,
    check_options,
    rank_with_missing,
    team_scores,
)
from flare_eval.ranking.table import RankingData, ranking_data
from flare_eval.typing import FloatArray

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Bootstrap", "draw_counts", "kendall_tau_b", "bootstrap_ranking"]


def draw_counts(n_cases: int, n_bootstrap: int, *, seed: int | None) -> NDArray[np.int64]:
    """How often each case is drawn in each bootstrap sample.

    Parameters
    ----------
    n_cases
        Cases in the test set; each sample draws that many with replacement.
    n_bootstrap
        Number of samples.
    seed
        Seed of ``numpy.random.default_rng`` (``None``: fresh entropy, not reproducible).

    Returns
    -------
    numpy.ndarray
        Shape (n_bootstrap, n_cases), each row summing to ``n_cases``.
    """
    if n_cases < 1 or n_bootstrap < 1:
        raise ConfigError(f"need at least one case and one sample, got n_cases={n_cases}, "
                          f"n_bootstrap={n_bootstrap}")
    rng = np.random.default_rng(seed)
    # a multinomial with equal probabilities is exactly n_cases draws with replacement
    return rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n_bootstrap)


def kendall_tau_b(reference: FloatArray, samples: FloatArray) -> FloatArray:
    """Kendall's tau-b between one ranking and each of many, vectorised.

    Parameters
    ----------
    reference
        Shape (n_teams,): ranks or scores (only their order and ties matter).
    samples
        Shape (n_samples, n_teams).

    Returns
    -------
    numpy.ndarray
        Shape (n_samples,); NaN where either ranking is all ties (as scipy and R).

    Notes
    -----
    Over all pairs :math:`i < j`, with :math:`s_{ij} = \\mathrm{sign}(x_i - x_j)` and
    :math:`t_{ij} = \\mathrm{sign}(y_i - y_j)`:
    :math:`\\tau_b = \\sum s_{ij} t_{ij} / \\sqrt{n_x n_y}` where :math:`n_x`, :math:`n_y`
    count the pairs not tied in :math:`x`, in :math:`y` (scipy's ``kendalltau`` default,
    R's ``cor(method="kendall")``).

    Examples
    --------
    >>> kendall_tau_b(np.array([1, 2, 3]), np.array([[1, 2, 3], [3, 2, 1], [1, 1, 2]])).round(4).tolist()
    [1.0, -1.0, 0.8165]
    """
    reference = np.asarray(reference, dtype=np.float64)
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    if samples.shape[1] != reference.shape[0]:
        raise ConfigError(f"samples must have {reference.shape[0]} columns like reference, "
                          f"got shape {samples.shape}")
    i, j = np.triu_indices(reference.shape[0], 1)
    sign_x = np.sign(reference[i] - reference[j])
    sign_y = np.sign(samples[:, i] - samples[:, j])
    untied = np.count_nonzero(sign_x) * np.count_nonzero(sign_y, axis=1).astype(np.float64)
    numerator = sign_y @ sign_x
    return np.divide(numerator, np.sqrt(untied), out=np.full(numerator.shape, np.nan),
                     where=untied > 0)


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap rankings and their agreement with the full ranking.

    Attributes
    ----------
    teams
        Team names (columns of ``ranks``).
    full_rank
        The full ranking, shape (n_teams,).
    ranks
        Rank of each team in each sample, shape (n_bootstrap, n_teams).
    tau
        Kendall's tau-b of each sample's ranking against the full one, shape (n_bootstrap,).
    seed
        The seed of the draws.
    challenger_compat
        Whether duplicated cases were ranked jointly (challengeR).
    metrics
        Names of the ranked metrics (rows of ``tau_by_metric``).
    tau_by_metric
        Per metric, Kendall's tau-b of each sample's ranking of that metric alone (challengeR's
        per-task stability, Fig. 2c of the FLARE 2023 paper), shape (n_metrics, n_bootstrap).
    """

    teams: tuple[str, ...]
    full_rank: FloatArray
    ranks: FloatArray
    tau: FloatArray
    seed: int | None
    challenger_compat: bool
    metrics: tuple[str, ...] = ()
    tau_by_metric: FloatArray = field(default_factory=lambda: np.empty((0, 0)))

    def kendall_by_metric_table(self) -> pd.DataFrame:
        """Columns ``metric, sample, tau``: the per-metric taus (samples numbered from 1)."""
        import pandas as pd

        n_metrics, n_samples = self.tau_by_metric.shape
        return pd.DataFrame({
            "metric": np.repeat(np.asarray(self.metrics, dtype=object), n_samples),
            "sample": np.tile(np.arange(1, n_samples + 1), n_metrics),
            "tau": self.tau_by_metric.ravel(),
        })

    def kendall_table(self) -> pd.DataFrame:
        """Columns ``sample, tau`` (samples numbered from 1)."""
        import pandas as pd

        return pd.DataFrame({"sample": np.arange(1, self.tau.size + 1), "tau": self.tau})

    def ranks_table(self) -> pd.DataFrame:
        """Columns ``sample, team, rank``, one row per sample and team."""
        import pandas as pd

        n_samples, n_teams = self.ranks.shape
        return pd.DataFrame({
            "sample": np.repeat(np.arange(1, n_samples + 1), n_teams),
            "team": np.tile(np.asarray(self.teams, dtype=object), n_samples),
            "rank": _as_int_if_whole(self.ranks.ravel()),
        })

    def summary(self) -> pd.DataFrame:
        """Per team: ``team, rank`` (full), ``median_rank``, ``rank_q025``, ``rank_q975``
        (R's default quantile type 7 = numpy's ``linear``) and ``winner_frequency`` (share of
        samples where the team ranks first), ordered by the full ranking."""
        import pandas as pd

        table = pd.DataFrame({
            "team": list(self.teams),
            "rank": _as_int_if_whole(self.full_rank),
            "median_rank": np.median(self.ranks, axis=0),
            "rank_q025": np.quantile(self.ranks, 0.025, axis=0),
            "rank_q975": np.quantile(self.ranks, 0.975, axis=0),
            "winner_frequency": np.mean(self.ranks == 1, axis=0),
        })
        return table.sort_values(["rank", "team"], kind="stable").reset_index(drop=True)


def bootstrap_ranking(
    table: pd.DataFrame | RankingData,
    *,
    metrics: tuple[RankingMetric, ...] = FLARE23.ranking_metrics,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    scheme: Scheme = "flare",
    ties: Ties = "min",
    challenger_compat: bool = False,
    na_treat: NaTreat = "worst",
) -> Bootstrap:
    """Rank bootstrap samples of the cases and compare each ranking with the full one.

    Parameters
    ----------
    table
        Tidy table ``team, case, metric, value`` (or its :class:`RankingData` cube).
    metrics
        Criteria: directions, weights, aggregates, floors and caps.
    n_bootstrap
        Number of samples (FLARE 2023: 1000).
    seed
        Seed of the draws; the same seed gives the same samples.
    scheme, ties
        As for :func:`~flare_eval.ranking.schemes.rank_teams`; ``test-then-rank`` is refused.
    challenger_compat
        Rank a case drawn m times as one block of m copies (challengeR), see the module
        docstring; needs ``ties="min"`` and a rank-based scheme.
    na_treat
        Missing values of ``aggregate-then-rank`` (see
        :func:`~flare_eval.ranking.schemes.team_scores`).

    Returns
    -------
    Bootstrap

    Raises
    ------
    ConfigError
        ``n_bootstrap < 1``, test-then-rank, or ``challenger_compat`` with other ties.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"team": list("abab"), "case": list("1122"), "metric": "organ_dsc",
    ...                   "value": [0.9, 0.8, 0.95, 0.7]})
    >>> bootstrap_ranking(t, metrics=FLARE23.ranking_metrics[:1], n_bootstrap=5, seed=1).tau.tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    if scheme == "test-then-rank":
        raise ConfigError("bootstrap of test-then-rank is not supported (a Wilcoxon test per "
                          "pair and draw); bootstrap flare or rank-then-aggregate instead")
    data = table if isinstance(table, RankingData) else ranking_data(table, metrics)
    check_options(scheme, ties, 0.05, data.metrics)
    ranks = case_ranks(data, ties=ties)
    full_score, full_metric = team_scores(data, np.ones((1, len(data.cases))), scheme=scheme,
                                          ties=ties, ranks=ranks, na_treat=na_treat)
    full_rank = rank_with_missing(full_score[0], ties=ties)
    weights = draw_counts(len(data.cases), n_bootstrap, seed=seed)
    score, per_metric = team_scores(data, weights, scheme=scheme, ties=ties,
                                    ranks=ranks, challenger_compat=challenger_compat,
                                    na_treat=na_treat)
    sample_ranks = rank_with_missing(score, ties=ties)
    tau_by_metric = np.stack([
        kendall_tau_b(rank_with_missing(full_metric[m, 0], ties=ties),
                      rank_with_missing(per_metric[m], ties=ties))
        for m in range(len(data.metrics))
    ])
    return Bootstrap(
        teams=data.teams,
        full_rank=full_rank,
        ranks=sample_ranks,
        tau=kendall_tau_b(full_rank, sample_ranks),
        seed=seed,
        challenger_compat=challenger_compat,
        metrics=tuple(m.name for m in data.metrics),
        tau_by_metric=tau_by_metric,
    )
