"""Ranking teams: FLARE's pooled rank-then-aggregate, challengeR's schemes, bootstrap stability
and pairwise significance, all on the tidy table ``team, case, metric, value``."""

from __future__ import annotations

from flare_eval.ranking.bootstrap import Bootstrap, bootstrap_ranking, draw_counts, kendall_tau_b
from flare_eval.ranking.pipeline import RankOutputs, rank_results
from flare_eval.ranking.schemes import (
    AGGREGATES,
    SCHEMES,
    TIE_METHODS,
    Ranking,
    case_ranks,
    check_options,
    rank_teams,
    rank_with_missing,
    team_scores,
)
from flare_eval.ranking.significance import (
    holm,
    pairwise_significance,
    significant_wins,
    wilcoxon_better_p,
)
from flare_eval.ranking.table import (
    FAILED_PREDICTION_STATUSES,
    TABLE_COLUMNS,
    RankingData,
    RankingWarning,
    case_id,
    check_same_options,
    ranking_data,
    read_ranking_table,
    select_metrics,
    table_from_results,
)

__all__ = [
    "AGGREGATES",
    "SCHEMES",
    "TIE_METHODS",
    "FAILED_PREDICTION_STATUSES",
    "TABLE_COLUMNS",
    "Bootstrap",
    "Ranking",
    "RankingData",
    "RankingWarning",
    "RankOutputs",
    "rank_results",
    "bootstrap_ranking",
    "case_id",
    "case_ranks",
    "check_options",
    "check_same_options",
    "draw_counts",
    "holm",
    "kendall_tau_b",
    "pairwise_significance",
    "rank_teams",
    "rank_with_missing",
    "ranking_data",
    "read_ranking_table",
    "select_metrics",
    "significant_wins",
    "table_from_results",
    "team_scores",
    "wilcoxon_better_p",
]
