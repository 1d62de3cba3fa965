"""Paired one-sided Wilcoxon signed-rank tests between all teams, with Holm's correction.

What challengeR's significance map does (R's ``wilcox.test(x, y, paired=TRUE, exact=FALSE,
alternative="greater")``, i.e. scipy's ``wilcoxon(x, y, zero_method="wilcox", correction=True,
method="asymptotic")``), for every ordered pair of teams and every metric, vectorised over all
pairs at once: one ranking of the absolute differences of every pair per metric instead of
K(K-1) separate calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr
from scipy.stats import norm
from scipy.stats import rankdata

from flare_eval.errors import ConfigError
from flare_eval.presets import FLARE23, RankingMetric
from flare_eval.ranking.table import ranking_data
from flare_eval.typing import FloatArray

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["wilcoxon_better_p", "holm", "pairwise_significance", "significant_wins"]


def wilcoxon_better_p(values: FloatArray) -> FloatArray:
    """p-values of "team a is better than team b" for every ordered pair of teams.

    Parameters
    ----------
    values
        Shape (n_cases, n_teams), oriented so that lower is better (see
        :meth:`~flare_eval.ranking.table.RankingData.oriented`); NaN where missing.

    Returns
    -------
    numpy.ndarray
        Shape (n_teams, n_teams): ``p[a, b]`` is the one-sided p-value of the paired
        Wilcoxon signed-rank test that team ``a``'s values are lower than team ``b``'s;
        NaN on the diagonal.

    Notes
    -----
    For the differences :math:`d_c = v_{c,a} - v_{c,b}` over the cases where both teams have
    a value, zero differences dropped (``zero_method="wilcox"``), :math:`n` of them left:
    :math:`R^+` is the sum of the (average-tie) ranks of :math:`|d_c|` where :math:`d_c > 0`,

    .. math::
        \\mu = n(n+1)/4,\\quad
        \\sigma^2 = n(n+1)(2n+1)/24 - \\textstyle\\sum_g (t_g^3 - t_g)/48,\\quad
        p = \\Phi\\left((R^+ - \\mu + 0.5)/\\sigma\\right)

    over the tie groups :math:`g` of sizes :math:`t_g` (the ``+ 0.5`` is the continuity
    correction towards the null).  With no non-zero difference there is no evidence:
    p = 1 (scipy answers NaN, R refuses).

    Examples
    --------
    >>> v = np.array([[1.0, 2.0], [1.0, 3.0], [2.0, 2.5]])
    >>> p = wilcoxon_better_p(v)
    >>> bool(p[0, 1] < p[1, 0])
    True
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ConfigError(f"values must have shape (n_cases, n_teams), got {values.shape}")
    n_teams = values.shape[1]
    p = np.full((n_teams, n_teams), np.nan)
    if n_teams < 2:
        return p
    a, b = np.triu_indices(n_teams, 1)
    diff = values[:, a] - values[:, b]
    diff[diff == 0] = np.nan
    magnitude = np.abs(diff)
    ranks = rankdata(magnitude, method="average", axis=0, nan_policy="omit")
    # each element's tie-group size t from its min and max ranks; sum over elements of
    # t^2 - 1 equals sum over groups of t^3 - t
    group = (rankdata(magnitude, method="max", axis=0, nan_policy="omit")
             - rankdata(magnitude, method="min", axis=0, nan_policy="omit") + 1)
    tie_term = np.nansum(group**2 - 1, axis=0)
    n = np.sum(~np.isnan(diff), axis=0).astype(np.float64)
    r_plus = np.sum(np.where(diff > 0, ranks, 0.0), axis=0)
    mu = n * (n + 1) / 4
    sigma = np.sqrt(n * (n + 1) * (2 * n + 1) / 24 - tie_term / 48)
    empty = n == 0
    sigma[empty] = 1.0
    # a better than b: differences a - b tend negative (alternative "less");
    # b better than a: alternative "greater" on the same statistic
    p_a_better = np.where(empty, 1.0, ndtr((r_plus - mu + 0.5) / sigma))
    # the upper tail through the survival function: 1 - ndtr(z) is 0.0 beyond z ~ 8.3,
    # where R (and norm.sf) still give e.g. 7.2e-35
    p_b_better = np.where(empty, 1.0, norm.sf((r_plus - mu - 0.5) / sigma))
    p[a, b] = p_a_better
    p[b, a] = p_b_better
    return p


def holm(p_values: FloatArray) -> FloatArray:
    """Holm's step-down adjustment (R's ``p.adjust(method="holm")``), NaN left out.

    Notes
    -----
    With the :math:`m` p-values sorted, :math:`p_{(1)} \\le \\dots \\le p_{(m)}`:
    :math:`\\tilde p_{(i)} = \\min\\left(1, \\max_{j \\le i} (m - j + 1) p_{(j)}\\right)`.

    Examples
    --------
    >>> holm(np.array([0.01, 0.04, 0.03])).round(4).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    flat = p.ravel()
    keep = np.flatnonzero(~np.isnan(flat))
    m = keep.size
    if m:
        order = keep[np.argsort(flat[keep], kind="stable")]
        adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * flat[order]))
        out.ravel()[order] = adjusted
    return out


def _adjusted(p: FloatArray, p_adjust: Literal["holm", "none"]) -> FloatArray:
    if p_adjust == "holm":
        return holm(p)
    if p_adjust == "none":
        return p
    raise ConfigError(f"p_adjust must be 'holm' or 'none', got {p_adjust!r}")


def significant_wins(
    values: FloatArray, *, alpha: float = 0.05, p_adjust: Literal["holm", "none"] = "holm"
) -> NDArray[np.int64]:
    """For each team, the number of teams it is significantly better than.

    Parameters
    ----------
    values
        Shape (n_cases, n_teams), lower is better, NaN where missing.
    alpha
        Significance level of the adjusted p-values; ``p <= alpha`` counts as significant,
        as in challengeR (``decision.challenge``), so ``p == alpha`` is a win.
    p_adjust
        ``"holm"`` over the K(K-1) ordered pairs, or ``"none"``.

    Returns
    -------
    numpy.ndarray
        Shape (n_teams,), integer counts (challengeR's test-then-rank score times K-1).
    """
    p = _adjusted(wilcoxon_better_p(values), p_adjust)
    return np.sum(p <= alpha, axis=1)


def pairwise_significance(
    table: pd.DataFrame,
    *,
    metrics: tuple[RankingMetric, ...] = FLARE23.ranking_metrics,
    alpha: float = 0.05,
    p_adjust: Literal["holm", "none"] = "holm",
) -> pd.DataFrame:
    """The significance matrix of every metric, as a long table.

    Parameters
    ----------
    table
        Tidy ranking table ``team, case, metric, value``.
    metrics
        Criteria and directions; metric floors apply (runtimes under 15 s tie in FLARE23).
    alpha
        Significance level.
    p_adjust
        Holm's correction over the K(K-1) ordered pairs of each metric, or ``"none"``.

    Returns
    -------
    pandas.DataFrame
        Columns ``metric, team, other, p_value, p_holm, significant``: one row per metric and
        ordered pair; ``p_value`` is that of "``team`` is better than ``other``" (higher for
        DSC/NSD, lower for runtime/GPU), ``p_holm`` the adjusted one (equal to ``p_value``
        with ``p_adjust="none"``), ``significant`` is ``p_holm <= alpha`` (challengeR's rule).

    Notes
    -----
    Pairs are over the cases both teams have a value for; see :func:`wilcoxon_better_p`.
    """
    import pandas as pd

    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
    data = ranking_data(table, metrics)
    oriented = data.oriented()
    n_teams = len(data.teams)
    a, b = np.nonzero(~np.eye(n_teams, dtype=bool))
    frames = []
    for m, metric in enumerate(data.metrics):
        p = wilcoxon_better_p(oriented[m])
        adjusted = _adjusted(p, p_adjust)
        frames.append(pd.DataFrame({
            "metric": metric.name,
            "team": np.asarray(data.teams, dtype=object)[a],
            "other": np.asarray(data.teams, dtype=object)[b],
            "p_value": p[a, b],
            "p_holm": adjusted[a, b],
            "significant": adjusted[a, b] <= alpha,
        }))
    return pd.concat(frames, ignore_index=True)
