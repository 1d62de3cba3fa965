"""Figures and the self-contained HTML report of a challenge's results.

Figure functions take the tidy tables written by ``flare-eval score`` and ``flare-eval rank``
and return matplotlib Figures; :func:`write_report` puts them all in one HTML file.
matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from flare_eval.report.base import (
    DPI,
    MARKERS,
    OKABE_ITO,
    figure_png,
    message_figure,
    new_figure,
    save_figure,
    team_styles,
)
from flare_eval.report.figures_accuracy import (
    LESION_METRICS,
    lesion_metrics_figure,
    lesion_volume_agreement_figure,
    lesion_volume_dsc_figure,
    organ_figure,
)
from flare_eval.report.figures_ranking import (
    METRIC_LABELS,
    accuracy_efficiency_figure,
    bootstrap_blob_figure,
    kendall_figure,
    leaderboard_figure,
    outperform_table,
    podium_figure,
    radar_figure,
    rank_heatmap_figure,
    significance_figure,
)
from flare_eval.report.html import ReportFigure, render_html, report_figures, write_report
from flare_eval.report.results import RANKING_FOLDER, ReportTables, load_results, team_summary

__all__ = [
    "DPI",
    "MARKERS",
    "OKABE_ITO",
    "LESION_METRICS",
    "METRIC_LABELS",
    "RANKING_FOLDER",
    "ReportFigure",
    "ReportTables",
    "accuracy_efficiency_figure",
    "bootstrap_blob_figure",
    "figure_png",
    "kendall_figure",
    "leaderboard_figure",
    "lesion_metrics_figure",
    "lesion_volume_agreement_figure",
    "lesion_volume_dsc_figure",
    "load_results",
    "message_figure",
    "new_figure",
    "organ_figure",
    "outperform_table",
    "podium_figure",
    "radar_figure",
    "rank_heatmap_figure",
    "render_html",
    "report_figures",
    "save_figure",
    "significance_figure",
    "team_styles",
    "team_summary",
    "write_report",
]
