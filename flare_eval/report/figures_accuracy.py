"""Figures of segmentation accuracy, drawn from the tables of ``flare-eval score``.

``organ_table`` is ``metrics_long.csv`` with a ``team`` column (``team, case, class, metric,
value``); ``lesion_table`` joins each team's lesion DSC and NSD (``per_case.csv``) with its
lesion detection table (``lesions_per_case.csv``): ``team, case, dsc, nsd, precision, recall,
f1, ref_volume_ml, pred_volume_ml``.  NaN values (e.g. precision of a case without predicted
lesions) are left out of the plot they would appear in, never drawn as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from flare_eval.presets import FLARE23, Preset
from flare_eval.report.base import message_figure, new_figure, team_styles

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "LESION_METRICS",
    "organ_figure",
    "lesion_metrics_figure",
    "lesion_volume_dsc_figure",
    "lesion_volume_agreement_figure",
]

#: Columns of the lesion table shown by :func:`lesion_metrics_figure`, with their labels.
LESION_METRICS: dict[str, str] = {
    "dsc": "DSC", "nsd": "NSD", "precision": "Precision", "recall": "Recall", "f1": "F1",
}
_GROUPS: dict[str, str] = {"large": "Large solid organs", "small": "Small organs",
                           "tubular": "Tubular organs"}


def _box_and_dots(ax: Axes, samples: Sequence[np.ndarray], positions: Sequence[float],
                  colours: Sequence[str], width: float, rng: np.random.Generator) -> None:
    """Boxes (no fliers: every point is drawn as a dot anyway) with jittered dots on top."""
    for values, x, colour in zip(samples, positions, colours):
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        ax.boxplot(values, positions=[x], widths=width * 0.8, showfliers=False,
                   patch_artist=True, manage_ticks=False,
                   boxprops={"facecolor": colour, "alpha": 0.35, "edgecolor": colour},
                   medianprops={"color": "black"}, whiskerprops={"color": colour},
                   capprops={"color": colour})
        jitter = rng.uniform(-width * 0.3, width * 0.3, values.size)
        ax.scatter(x + jitter, values, s=7, color=colour, edgecolor="black", linewidth=0.2,
                   zorder=3)


def organ_figure(organ_table: pd.DataFrame, teams: Sequence[str], *,
                 preset: Preset = FLARE23) -> Figure:
    """Box and dot plots of per-case organ DSC (top row) and NSD (bottom row) of ``teams``,
    one panel per organ group (large solid, small, tubular).

    Parameters
    ----------
    organ_table
        Columns ``team, class, metric, value`` (``metric`` ``dsc``/``nsd``, case-insensitive).
    teams
        The teams shown, in this order (usually the top of the leaderboard).
    preset
        Gives each organ's group.
    """
    groups = {g: [c.name for c in preset.classes if c.group == g] for g in _GROUPS}
    groups = {g: names for g, names in groups.items() if names}
    table = organ_table[organ_table["team"].isin(list(teams))]
    title = "Per-organ accuracy of the top teams"
    if table.empty or not groups:
        return message_figure(title, "no organ scores")
    metric = table["metric"].str.lower()
    styles = team_styles(list(teams))
    width = 0.8 / len(teams)
    n_boxes = len(teams) * sum(len(v) for v in groups.values())
    fig, axes = new_figure(min(16.0, 3.0 + 0.2 * n_boxes), 6.5,
                           nrows=2, ncols=len(groups))
    rng = np.random.default_rng(0)  # fixed jitter: the same figure from the same data
    for row, kind in enumerate(("dsc", "nsd")):
        for col, (group, names) in enumerate(groups.items()):
            ax = axes[row * len(groups) + col]
            samples, positions, colours = [], [], []
            for j, organ in enumerate(names):
                for i, team in enumerate(teams):
                    pick = (metric == kind) & (table["class"] == organ) & (table["team"] == team)
                    samples.append(table.loc[pick, "value"].to_numpy(dtype=float))
                    positions.append(j + (i - (len(teams) - 1) / 2) * width)
                    colours.append(styles[team][0])
            _box_and_dots(ax, samples, positions, colours, width, rng)
            ax.set_xticks(range(len(names)), names, fontsize=8, rotation=30)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(axis="y", alpha=0.3)
            if row == 0:
                ax.set_title(_GROUPS[group], fontsize=9)
            if col == 0:
                ax.set_ylabel(kind.upper())
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=styles[t][0], label=t) for t in teams], loc="outside lower center",
               ncols=min(len(teams), 8), fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def lesion_metrics_figure(lesion_table: pd.DataFrame, teams: Sequence[str]) -> Figure:
    """Box and dot plots of per-case lesion DSC, NSD, precision, recall and F1 per team.

    Parameters
    ----------
    lesion_table
        Columns ``team`` and those of :data:`LESION_METRICS` present.
    teams
        The teams shown, in this order.
    """
    metrics = [m for m in LESION_METRICS if m in lesion_table.columns]
    table = lesion_table[lesion_table["team"].isin(list(teams))]
    title = "Lesion segmentation and detection per case"
    if table.empty or not metrics:
        return message_figure(title, "no lesion scores")
    styles = team_styles(list(teams))
    fig, axes = new_figure(max(8.0, 0.3 * len(teams) * len(metrics) + 2.0), 3.6, ncols=len(metrics))
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics):
        samples = [table.loc[table["team"] == t, metric].to_numpy(dtype=float) for t in teams]
        _box_and_dots(ax, samples, list(range(len(teams))), [styles[t][0] for t in teams], 1.0, rng)
        ax.set_xticks(range(len(teams)), list(teams), rotation=90, fontsize=7)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(LESION_METRICS[metric], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def _scatter_by_team(ax: Axes, table: pd.DataFrame, x: str, y: str, teams: Sequence[str]) -> None:
    styles = team_styles(list(teams))
    for team in teams:
        rows = table[(table["team"] == team) & table[x].notna() & table[y].notna()]
        colour, marker = styles[team]
        ax.scatter(rows[x], rows[y], color=colour, marker=marker, s=22, alpha=0.8,
                   edgecolor="black", linewidth=0.3, label=team)
    if len(teams) <= 12:
        ax.legend(fontsize=7)


def lesion_volume_dsc_figure(lesion_table: pd.DataFrame, teams: Sequence[str]) -> Figure:
    """Lesion DSC of each case against its total reference lesion volume (log axis).

    Parameters
    ----------
    lesion_table
        Columns ``team, ref_volume_ml, dsc``; cases without reference lesions are left out
        (their DSC says nothing about lesion size).
    teams
        The teams shown.
    """
    table = lesion_table[lesion_table["ref_volume_ml"] > 0]
    title = "Lesion DSC against lesion volume"
    if table.empty:
        return message_figure(title, "no case with a reference lesion")
    fig, (ax,) = new_figure(5.5, 4.0)
    _scatter_by_team(ax, table, "ref_volume_ml", "dsc", teams)
    ax.set_xscale("log")
    ax.set_xlabel("Reference lesion volume per case (mL)")
    ax.set_ylabel("Lesion DSC")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return fig


def lesion_volume_agreement_figure(lesion_table: pd.DataFrame, teams: Sequence[str]) -> Figure:
    """Predicted against reference lesion volume per case, with the identity line.

    Parameters
    ----------
    lesion_table
        Columns ``team, ref_volume_ml, pred_volume_ml``.
    teams
        The teams shown.
    """
    title = "Predicted against reference lesion volume"
    table = lesion_table.dropna(subset=["ref_volume_ml", "pred_volume_ml"])
    if table.empty:
        return message_figure(title, "no lesion volumes")
    fig, (ax,) = new_figure(5.0, 4.5)
    _scatter_by_team(ax, table, "ref_volume_ml", "pred_volume_ml", teams)
    top = float(max(table["ref_volume_ml"].max(), table["pred_volume_ml"].max(), 1e-3)) * 1.05
    ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--", label="identity")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel("Reference lesion volume (mL)")
    ax.set_ylabel("Predicted lesion volume (mL)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return fig
