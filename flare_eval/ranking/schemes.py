"""Ranking schemes: FLARE's pooled rank-then-aggregate and challengeR's per-metric schemes.

Every scheme starts from the per-case ranks: for each metric and case, all teams ranked
(lower rank is better, ties by ``ties``, a missing value worst, challengeR's rule).  Then:

``flare`` (default, FLARE 2023 paper)
    A team's score is the mean of all its case x metric ranks; teams are ranked by it.
``rank-then-aggregate`` (challengeR, per metric)
    Per metric, the mean (or median) of the team's case ranks, ranked; the metrics are then
    combined.
``aggregate-then-rank`` (challengeR, per metric)
    Per metric, the mean or median of the team's values, ranked; then combined.
``test-then-rank`` (challengeR, per metric)
    Per metric, the number of teams it is significantly better than (one-sided paired
    Wilcoxon, see :mod:`flare_eval.ranking.significance`), ranked; then combined.

challengeR ranks each metric as a separate task and cannot pool them; here the per-metric
ranks are combined by their mean (a Borda count), which is ``mean_rank`` of these schemes.

Each criterion (:class:`~flare_eval.presets.RankingMetric`, from the challenge definition)
brings its weight (its ranks count that many times in the mean), its aggregate (mean or
median, for the per-metric schemes) and its floor and cap (values beyond count as them).

Every scheme is written once as a function of case weights (how often each case is drawn), so
that the full ranking (all weights 1) and each bootstrap draw
(:mod:`flare_eval.ranking.bootstrap`) run the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.stats import rankdata

from flare_eval.definition import AGGREGATES, SCHEMES, TIE_METHODS, aggregate_problem
from flare_eval.errors import ConfigError
from flare_eval.presets import FLARE23, RankingMetric
from flare_eval.ranking.significance import significant_wins
from flare_eval.ranking.table import RankingData, ranking_data
from flare_eval.typing import FloatArray

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCHEMES",
    "TIE_METHODS",
    "AGGREGATES",
    "check_options",
    "Ranking",
    "rank_with_missing",
    "case_ranks",
    "team_scores",
    "rank_teams",
]

Scheme = Literal["flare", "rank-then-aggregate", "aggregate-then-rank", "test-then-rank"]
Ties = Literal["min", "average", "max", "dense", "first"]
#: challengeR's ``na.treat`` of aggregate-then-rank: a number, the worst value, or dropped.
NaTreat = float | Literal["worst", "drop"]

_SCIPY_TIES = {"min": "min", "average": "average", "max": "max", "dense": "dense", "first": "ordinal"}


def check_options(scheme: str, ties: str, alpha: float,
                  metrics: tuple[RankingMetric, ...] = ()) -> None:
    """Raise ``ConfigError`` for an unknown scheme or tie method, a bad alpha, or a criterion
    whose aggregate the scheme cannot apply (:func:`flare_eval.definition.aggregate_problem`)."""
    for name, value, allowed in (("scheme", scheme, SCHEMES), ("ties", ties, TIE_METHODS)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
    for metric in metrics:
        if (problem := aggregate_problem(scheme, metric.aggregate)) is not None:
            raise ConfigError(f"ranking metric {metric.name!r}: {problem}")


def rank_with_missing(values: FloatArray, *, ties: Ties = "min") -> FloatArray:
    """Rank along the last axis, lowest value first, a missing value worst.

    Parameters
    ----------
    values
        Any shape; the last axis holds the competitors (teams).  NaN is missing.
    ties
        How tied values share ranks (R's ``ties.method``).

    Returns
    -------
    numpy.ndarray
        Ranks, same shape, float64.

    Notes
    -----
    With :math:`r_{max}` the largest rank among the present values (0 when all are missing),
    the :math:`n` missing values form one last tie group starting at :math:`r_{max} + 1`:
    ``min`` and ``dense`` give them :math:`r_{max} + 1`, ``average`` :math:`r_{max} + (n +
    1)/2`, ``max`` :math:`r_{max} + n`, ``first`` :math:`r_{max} + 1 \\dots r_{max} + n` in
    order.  Only ``min`` and ``average`` are challengeR's (``rankNA2``); for ``max`` and
    ``first`` challengeR leaves a missing value's rank NA (R's ``rank(na.last="keep")``), so
    that team's mean rank of the metric is NA and it ranks last there; R has no ``dense``.

    Examples
    --------
    >>> rank_with_missing(np.array([0.3, np.nan, 0.1, 0.3])).tolist()
    [2.0, 3.0, 1.0, 2.0]
    """
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    if not missing.any():
        return rankdata(values, method=_SCIPY_TIES[ties], axis=-1).astype(np.float64)
    ranks = rankdata(values, method=_SCIPY_TIES[ties], axis=-1, nan_policy="omit")
    top = np.where(missing, 0.0, ranks).max(axis=-1, keepdims=True)
    n_missing = missing.sum(axis=-1, keepdims=True)
    fill = {
        "min": top + 1,
        "dense": top + 1,
        "average": top + (n_missing + 1) / 2,
        "max": top + n_missing,
        "first": top + np.cumsum(missing, axis=-1),
    }[ties]
    return np.where(missing, np.broadcast_to(fill, values.shape), ranks)


def case_ranks(data: RankingData, *, ties: Ties = "min") -> FloatArray:
    """Per-case ranks of every team, shape (n_metrics, n_cases, n_teams); see
    :func:`rank_with_missing`."""
    return rank_with_missing(data.oriented(), ties=ties)


def _weighted_median(values: FloatArray, weights: FloatArray) -> FloatArray:
    """Median of each team's present values with cases repeated ``weights`` times (R's
    ``median(na.rm=TRUE)``).

    ``values`` (n_cases, n_teams), ``weights`` (n_draws, n_cases) integer counts; returns
    (n_draws, n_teams), NaN where a team has no drawn present value.
    """
    n_draws = weights.shape[0]
    out = np.full((n_draws, values.shape[1]), np.nan)
    for k in range(values.shape[1]):
        order = np.argsort(values[:, k], kind="stable")  # NaN sorts last
        column = values[order, k]
        w = weights[:, order] * ~np.isnan(column)[None, :]
        total = w.sum(axis=1)
        # R's median of n values: the value at position (n+1)/2, or the mean of n/2 and n/2+1
        low_pos = np.floor((total + 1) / 2)[:, None]
        high_pos = np.ceil((total + 1) / 2)[:, None]
        cumulative = np.cumsum(w, axis=1)
        low = column[(cumulative >= low_pos).argmax(axis=1)]
        high = column[(cumulative >= high_pos).argmax(axis=1)]
        out[:, k] = np.where(total > 0, (low + high) / 2, np.nan)
    return out


def _treat_missing(data: RankingData, na_treat: NaTreat) -> FloatArray:
    """Oriented values with missing values replaced as ``na_treat`` says (see
    :func:`team_scores`); cases absent for every team stay NaN."""
    if na_treat == "drop":
        return data.oriented()
    values = data.values.copy()
    all_absent = np.isnan(values).all(axis=2, keepdims=True)
    for m, metric in enumerate(data.metrics):
        if na_treat == "worst":
            fill = np.nanmin(values[m]) if metric.higher_is_better else np.nanmax(values[m])
        elif isinstance(na_treat, (int, float)) and not isinstance(na_treat, bool):
            fill = float(na_treat)
        else:
            raise ConfigError(f"na_treat must be a number, 'worst' or 'drop', got {na_treat!r}")
        values[m] = np.where(np.isnan(values[m]), fill, values[m])
    values = np.where(all_absent, np.nan, values)
    return RankingData(data.teams, data.cases, data.metrics, values).oriented()


def team_scores(
    data: RankingData,
    weights: FloatArray,
    *,
    scheme: Scheme = "flare",
    ties: Ties = "min",
    alpha: float = 0.05,
    ranks: FloatArray | None = None,
    challenger_compat: bool = False,
    p_adjust: Literal["holm", "none"] = "holm",
    na_treat: NaTreat = "worst",
) -> tuple[FloatArray, FloatArray]:
    """Each team's score (lower is better) under case weights, and its per-metric criteria.

    Parameters
    ----------
    data
        The ranking cube.
    weights
        Shape (n_draws, n_cases): how many times each case counts (all 1 for the full
        ranking, bootstrap draw counts otherwise).
    scheme, ties, alpha
        See :func:`rank_teams`; each criterion's weight and aggregate are its own
        (:class:`~flare_eval.presets.RankingMetric`).
    ranks
        The per-case ranks of ``data`` when already computed (:func:`case_ranks`).
    challenger_compat
        Rank a case drawn m times as challengeR does: its m copies of every team ranked
        jointly in one block (ranks 1, 1+m, 1+2m... under ``min``), which weights a
        duplicated case by m^2 instead of m.  Only ``ties="min"`` and the rank-based schemes.
    p_adjust
        Adjustment of the Wilcoxon p-values of ``test-then-rank``.
    na_treat
        Missing values of ``aggregate-then-rank`` (challengeR's ``na.treat``): a number
        replaces them (raw value, before the floor); ``"worst"`` (default) replaces them by the
        metric's worst value over all teams and cases; ``"drop"`` aggregates the present values
        only (``na.rm``; a team with none is missing and ranks last).  A case absent for every
        team carries no information and is left out under every choice.

    Returns
    -------
    score
        Shape (n_draws, n_teams), lower is better: the sum of all case x metric ranks, each
        times its metric's weight (``flare``), or the weighted sum of the per-metric ranks
        (the other schemes).
    per_metric
        Shape (n_metrics, n_draws, n_teams): per metric, the criterion that metric's teams are
        ranked by (lower is better): summed case ranks, the signed aggregate value, or minus
        the number of significant wins (unweighted).

    Notes
    -----
    Per-case ranks do not change when cases are resampled, so with the rank matrix
    :math:`R_m` (cases x teams) and draw counts :math:`W` (draws x cases) every draw's summed
    ranks are the matrix product :math:`W R_m`.  In challengeR's joint ranking a team of rank
    :math:`r` (``min``) in a case drawn :math:`w` times gets rank :math:`w(r-1)+1` on each of
    its :math:`w` copies, so the sum becomes :math:`W^{\\circ 2} (R_m - 1) + W`; a missing
    value gets one more than the largest present rank, :math:`w(r_{max}-1)+2`.
    """
    check_options(scheme, ties, alpha, data.metrics)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(data.cases):
        raise ConfigError(f"weights must have shape (n_draws, {len(data.cases)}), got {weights.shape}")
    if ranks is None:
        ranks = case_ranks(data, ties=ties)
    if challenger_compat and (ties != "min" or scheme not in ("flare", "rank-then-aggregate")):
        raise ConfigError(
            "challenger_compat reproduces challengeR's joint ranking of duplicated cases with "
            f"ties='min' and a rank-based scheme (flare, rank-then-aggregate); got ties={ties!r}, "
            f"scheme={scheme!r}"
        )
    n_metrics = len(data.metrics)
    metric_weights = np.array([m.weight for m in data.metrics])[:, None, None]
    medians = [m for m, metric in enumerate(data.metrics) if metric.aggregate == "median"]
    if challenger_compat and medians:
        raise ConfigError("challenger_compat sums the ranks of duplicated cases; a criterion "
                          "with aggregate 'median' has no such form")
    if scheme in ("flare", "rank-then-aggregate"):
        if challenger_compat:
            missing = np.isnan(data.values)
            all_missing = missing.all(axis=-1, keepdims=True)
            top = np.where(missing, 0.0, ranks).max(axis=-1, keepdims=True)
            slope = np.where(missing & ~all_missing, top - 1, ranks - 1)
            offset = np.where(missing & ~all_missing, 2.0, 1.0)
            squared = weights**2
            per_metric = np.stack([squared @ slope[m] + weights @ offset[m] for m in range(n_metrics)])
        else:
            # the median of a team's drawn case ranks (rank-then-aggregate only: checked above)
            per_metric = np.stack([_weighted_median(ranks[m], weights) if m in medians
                                   else weights @ ranks[m] for m in range(n_metrics)])
        if scheme == "flare":
            return (metric_weights * per_metric).sum(axis=0), per_metric
    elif scheme == "aggregate-then-rank":
        oriented = _treat_missing(data, na_treat)
        per_metric = np.empty((n_metrics, weights.shape[0], len(data.teams)))
        for m in range(n_metrics):
            # a case absent for every team is no evidence about anyone: weight 0
            informative = ~np.isnan(oriented[m]).all(axis=1)
            w = weights * informative[None, :]
            present = ~np.isnan(oriented[m])
            if data.metrics[m].aggregate == "mean":
                # with "drop" the mean is over the drawn cases the team has (na.rm)
                counts = w @ present
                summed = w @ np.where(present, oriented[m], 0.0)
                per_metric[m] = np.divide(summed, counts, out=np.full(summed.shape, np.nan),
                                          where=counts > 0)
            else:
                per_metric[m] = _weighted_median(oriented[m], w)
    else:  # test-then-rank
        if not np.all(weights == 1):
            raise ConfigError("test-then-rank has no bootstrap here (a Wilcoxon test per pair "
                              "and draw); bootstrap a rank-based scheme instead")
        oriented = data.oriented()
        per_metric = np.stack([
            -significant_wins(oriented[m], alpha=alpha, p_adjust=p_adjust).astype(np.float64)[None, :]
            for m in range(n_metrics)
        ])
    metric_ranks = rank_with_missing(per_metric, ties=ties)
    return (metric_weights * metric_ranks).sum(axis=0), per_metric


@dataclass(frozen=True)
class Ranking:
    """A full ranking and the tables behind it.

    Attributes
    ----------
    scheme, ties
        How it was ranked (each criterion's weight and aggregate are in ``data.metrics``).
    data
        The ranking cube.
    ranks
        Per-case ranks, shape (n_metrics, n_cases, n_teams).
    score
        Each team's score (lower is better), shape (n_teams,): summed ranks (see
        :func:`team_scores`).
    team_rank
        Final rank of each team, shape (n_teams,), ties by ``ties``.
    mean_rank
        ``score`` as a weighted mean: over all case x metric ranks (``flare``) or over the
        per-metric ranks (other schemes), each weighing its metric's weight.
    criterion
        Per metric and team, what that metric's own ranking orders by (lower is better),
        shape (n_metrics, n_teams); see :meth:`metric_ranks`.
    """

    scheme: str
    ties: str
    data: RankingData
    ranks: FloatArray
    score: FloatArray
    team_rank: FloatArray
    mean_rank: FloatArray
    criterion: FloatArray

    def metric_ranks(self) -> pd.DataFrame:
        """challengeR's per-task ranking: columns ``metric, team, criterion, rank``.

        Each metric ranked on its own (ties by ``ties``, a missing criterion last): by its
        summed case ranks (``flare``, ``rank-then-aggregate``), its signed aggregate value
        (lower is better) or minus its number of significant wins.
        """
        import pandas as pd

        ranks = rank_with_missing(self.criterion, ties=self.ties)  # type: ignore[arg-type]
        n_metrics, n_teams = ranks.shape
        return pd.DataFrame({
            "metric": np.repeat([m.name for m in self.data.metrics], n_teams),
            "team": np.tile(np.asarray(self.data.teams, dtype=object), n_metrics),
            "criterion": self.criterion.ravel(),
            "rank": _as_int_if_whole(ranks.ravel()),
        })

    def leaderboard(self) -> pd.DataFrame:
        """Columns ``rank, team, mean_rank``, the mean raw value of each metric, and
        ``n_missing``, best first.

        The means are over the values the team has (a failed case's 0 or penalty included:
        those are values); ``n_missing`` counts the (case, metric) values it lacks, each ranked
        worst in its case, so that a mean over fewer cases is never read as the full one.
        """
        import pandas as pd

        values = self.data.values
        present = ~np.isnan(values)
        counts = present.sum(axis=1)
        sums = np.where(present, values, 0.0).sum(axis=1)
        means = np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)
        table = pd.DataFrame({
            "rank": _as_int_if_whole(self.team_rank),
            "team": list(self.data.teams),
            "mean_rank": self.mean_rank,
        })
        for m, metric in enumerate(self.data.metrics):
            table[metric.name] = means[m]
        table["n_missing"] = (~present).sum(axis=(0, 1))
        return table.sort_values(["rank", "mean_rank", "team"], kind="stable").reset_index(drop=True)

    def case_ranks(self) -> pd.DataFrame:
        """Columns ``team, case, metric, value, rank``: every team, case and metric, a missing
        value as NaN with its (worst) rank."""
        import pandas as pd

        n_metrics, n_cases, n_teams = self.ranks.shape
        m, c, k = np.meshgrid(np.arange(n_metrics), np.arange(n_cases), np.arange(n_teams),
                              indexing="ij")
        m, c, k = m.ravel(), c.ravel(), k.ravel()
        table = pd.DataFrame({
            "team": np.asarray(self.data.teams, dtype=object)[k],
            "case": np.asarray(self.data.cases, dtype=object)[c],
            "metric": np.asarray([x.name for x in self.data.metrics], dtype=object)[m],
            "value": self.data.values.ravel(),
            "rank": _as_int_if_whole(self.ranks.ravel()),
        })
        return table.sort_values(["team", "case", "metric"], kind="stable").reset_index(drop=True)


def _as_int_if_whole(ranks: FloatArray) -> FloatArray:
    """Ranks as integers when all are whole (``min`` ties), for readable tables."""
    whole = np.all(ranks == np.round(ranks))
    return ranks.astype(np.int64) if whole else ranks


def rank_teams(
    table: pd.DataFrame | RankingData,
    *,
    metrics: tuple[RankingMetric, ...] = FLARE23.ranking_metrics,
    scheme: Scheme = "flare",
    ties: Ties = "min",
    alpha: float = 0.05,
    p_adjust: Literal["holm", "none"] = "holm",
    na_treat: NaTreat = "worst",
) -> Ranking:
    """Rank the teams of a ranking table.

    Parameters
    ----------
    table
        Tidy table ``team, case, metric, value`` (or its :class:`RankingData` cube).
    metrics
        The criteria: directions, weights, aggregates, floors and caps (the preset's
        ``ranking_metrics``).
    scheme
        ``"flare"`` (pooled rank-then-aggregate, the FLARE 2023 rule), ``"rank-then-aggregate"``,
        ``"aggregate-then-rank"`` or ``"test-then-rank"`` (challengeR's, per metric, combined
        by mean rank); see the module docstring.
    ties
        How tied values share ranks, in each case and in the final order (challengeR: min).
    alpha
        Significance level, for ``test-then-rank`` (``p <= alpha``, challengeR's rule).
    p_adjust
        ``"holm"`` or ``"none"``, for ``test-then-rank``.
    na_treat
        Missing values of ``aggregate-then-rank`` (see :func:`team_scores`).

    Returns
    -------
    Ranking

    Raises
    ------
    ConfigError
        Unknown scheme or tie method; a criterion's aggregate the scheme cannot apply; a
        metric of the table that ``metrics`` lacks.

    Notes
    -----
    With per-case ranks :math:`r_{mck}` of metric :math:`m`, case :math:`c`, team :math:`k`,
    and metric weights :math:`w_m`, the ``flare`` score is
    :math:`\\bar r_k = \\sum_{m,c} w_m r_{mck} / (C \\sum_m w_m)`.  A missing
    value ranks worst in its case; a team missing a whole case ranks worst there for every
    metric.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"team": ["a", "b", "a", "b"], "case": ["1", "1", "2", "2"],
    ...                   "metric": "organ_dsc", "value": [0.9, 0.8, 0.7, 0.7]})
    >>> r = rank_teams(t, metrics=FLARE23.ranking_metrics[:1])
    >>> r.leaderboard()[["rank", "team", "mean_rank"]].values.tolist()
    [[1, 'a', 1.0], [2, 'b', 1.5]]
    """
    data = table if isinstance(table, RankingData) else ranking_data(table, metrics)
    check_options(scheme, ties, alpha, data.metrics)
    ranks = case_ranks(data, ties=ties)
    score, per_metric = team_scores(data, np.ones((1, len(data.cases))), scheme=scheme,
                                    ties=ties, alpha=alpha, ranks=ranks, p_adjust=p_adjust,
                                    na_treat=na_treat)
    score = score[0]
    total_weight = sum(m.weight for m in data.metrics)
    mean_rank = score / (total_weight * len(data.cases)) if scheme == "flare" else score / total_weight
    return Ranking(
        scheme=scheme,
        ties=ties,
        data=data,
        ranks=ranks,
        score=score,
        team_rank=rank_with_missing(score, ties=ties),
        mean_rank=mean_rank,
        criterion=per_metric[:, 0, :],
    )
