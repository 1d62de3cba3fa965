"""Figures of the ranking and its stability, drawn from the tables of ``flare-eval rank``.

Every function takes tidy tables (those of :mod:`flare_eval.ranking`: ``leaderboard``,
``case_ranks``, ``bootstrap_kendall``, ``bootstrap_ranks``, ``significance``) and returns a
matplotlib Figure; teams are always shown in leaderboard order.  A figure with nothing to show
(no bootstrap samples, no efficiency data) says so instead of failing.

References
----------
Wiesenfarth et al., "Methods and open-source toolkit for analyzing and visualizing challenge
results", Scientific Reports 11, 2369 (2021) (challengeR: blob plot, ranking heatmap, podium,
significance map).  Ma et al., FLARE23 paper, Fig. 2 (radar chart, Kendall's tau violin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flare_eval.report.base import message_figure, new_figure, team_styles

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "METRIC_LABELS",
    "leaderboard_figure",
    "leaderboard_text",
    "accuracy_efficiency_figure",
    "outperform_table",
    "radar_figure",
    "kendall_figure",
    "bootstrap_blob_figure",
    "rank_heatmap_figure",
    "podium_figure",
    "significance_figure",
]

#: Display names of the ranking criteria.
METRIC_LABELS: dict[str, str] = {
    "organ_dsc": "Organ DSC",
    "organ_nsd": "Organ NSD",
    "lesion_dsc": "Lesion DSC",
    "lesion_nsd": "Lesion NSD",
    "runtime": "Runtime (s)",
    "gpu_auc": "GPU AUC (MiB·s)",
}


#: Up to this many teams, each cell of a significance map shows its p-value (more do not fit).
P_VALUE_TEAMS = 10


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _order(leaderboard: pd.DataFrame) -> list[str]:
    """Teams best first (the leaderboard is sorted by ``flare-eval rank`` already; sorting
    again keeps hand-made tables right)."""
    return list(leaderboard.sort_values(["rank", "team"], kind="stable")["team"].astype(str))


def _metric_columns(leaderboard: pd.DataFrame) -> list[str]:
    return [c for c in leaderboard.columns
            if c not in ("rank", "team", "mean_rank", "n_missing")]


def _format(metric: str, value: float) -> str:
    """One format per criterion: DSC and NSD to the 4 decimals of the official rounding,
    seconds to 0.1 s, MiB·s as whole numbers with thousands separators (never ``1.7e+05``)."""
    if not np.isfinite(value):
        return "n/a"
    if metric == "runtime":
        return f"{value:.1f}"
    if metric == "gpu_auc" or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4f}"


def leaderboard_text(leaderboard: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as every view shows it (report, figure, ``flare-eval demo``).

    Parameters
    ----------
    leaderboard
        Columns ``rank, team, mean_rank`` then one column per criterion (``leaderboard.csv``).

    Returns
    -------
    pandas.DataFrame
        Best first; headers with units (``Runtime (s)``); every value formatted as text, one
        format per column (see ``_format``), NaN as ``n/a``.
    """
    import pandas as pd

    board = leaderboard.sort_values(["rank", "team"], kind="stable")
    columns = {"Rank": [f"{r:g}" for r in board["rank"]], "Team": list(board["team"].astype(str)),
               "Mean rank": [f"{v:.3f}" for v in board["mean_rank"]]}
    for metric in _metric_columns(board):
        columns[_label(metric)] = [_format(metric, float(v)) for v in board[metric]]
    if "n_missing" in board.columns:  # older leaderboards have none
        columns["Missing values"] = [f"{int(v)}" for v in board["n_missing"]]
    return pd.DataFrame(columns)


def leaderboard_figure(leaderboard: pd.DataFrame) -> Figure:
    """The leaderboard as a table: rank, team, mean rank and the mean of every criterion.

    Parameters
    ----------
    leaderboard
        Columns ``rank, team, mean_rank`` then one column per criterion (``leaderboard.csv``).
        NaN shows as ``n/a``.
    """
    text = leaderboard_text(leaderboard)
    header = list(text.columns)
    cells = text.to_numpy().tolist()
    fig, (ax,) = new_figure(1.2 * len(header) + 1.0, 0.28 * (len(cells) + 1) + 0.5)
    ax.set_axis_off()
    # the table fills the axes: no empty band under it
    table = ax.table(cellText=cells, colLabels=header, bbox=(0.0, 0.0, 1.0, 1.0), cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#DDE6F0")
        elif row % 2 == 0:  # zebra stripes: long tables stay readable across a row
            cell.set_facecolor("#F4F4F4")
    ax.set_title("Leaderboard (lower mean rank is better)")
    return fig


def accuracy_efficiency_figure(
    summary: pd.DataFrame, *, runtime_tolerance_s: float, gpu_tolerance_mib: float
) -> Figure | None:
    """Mean organ and lesion DSC of each team against its efficiency.

    Parameters
    ----------
    summary
        One row per team: ``team``, ``organ_dsc`` and/or ``lesion_dsc`` (mean DSC, 0-1), and
        any of ``runtime`` (mean s per case), ``max_gpu_mib`` (mean of the per-case peak GPU
        memory, MiB), ``gpu_auc`` (mean GPU AUC, MiB·s).  A panel per efficiency column present.
    runtime_tolerance_s, gpu_tolerance_mib
        Tolerance lines drawn on the runtime and the peak-memory panels (FLARE23: 15 s, 4 GB).

    Returns
    -------
    Figure or None
        None when the table has no efficiency column or no value in it (no runner outputs).
    """
    panels = [(c, t) for c, t in (("runtime", runtime_tolerance_s),
                                  ("max_gpu_mib", gpu_tolerance_mib), ("gpu_auc", None))
              if c in summary.columns and summary[c].notna().any()]
    accuracy = [c for c in ("organ_dsc", "lesion_dsc") if c in summary.columns]
    if not panels or not accuracy:
        return None
    styles = team_styles(list(summary["team"].astype(str)))
    fig, axes = new_figure(4.2 * len(panels), 3.8, ncols=len(panels))
    for ax, (column, tolerance) in zip(axes, panels):
        for _, row in summary.iterrows():
            colour, _ = styles[str(row["team"])]
            for kind, marker in zip(accuracy, ("o", "^")):
                ax.scatter(row[column], row[kind], color=colour, marker=marker, s=40,
                           edgecolor="black", linewidth=0.4, zorder=3)
            if len(styles) <= 12:  # beyond that the names overprint; the CSV has them
                ax.annotate(str(row["team"]), (row[column], row[accuracy[0]]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
        values = summary[column].to_numpy(dtype=float)
        positive = values[np.isfinite(values) & (values > 0)]
        # failure penalties (3600 s) sit decades above normal runs: a log axis keeps both,
        # symmetric-log where some team is at 0 (GPU AUC entirely under the tolerance)
        if positive.size > 1 and positive.max() / positive.min() > 20:
            if positive.size == np.isfinite(values).sum():
                ax.set_xscale("log")
            else:
                ax.set_xscale("symlog", linthresh=float(positive.min()))
        elif positive.size == 1 and positive.size < np.isfinite(values).sum():
            ax.set_xscale("symlog", linthresh=float(positive.min()) / 10.0)
        if tolerance is not None:
            ax.axvline(tolerance, color="black", linestyle="--", linewidth=1)
            ax.annotate(f"tolerance {tolerance:g}", (tolerance, 0.02), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=90, xytext=(-9, 0), textcoords="offset points")
        ax.set_xlabel({"runtime": "Mean runtime per case (s)",
                       "max_gpu_mib": "Mean peak GPU memory (MiB)",
                       "gpu_auc": "Mean GPU AUC above tolerance (MiB·s)"}[column])
        ax.set_ylabel("Mean DSC")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=m, linestyle="", color="grey", label=_label(k))
               for k, m in zip(accuracy, ("o", "^"))]
    axes[0].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle("Accuracy against efficiency")
    return fig


def outperform_table(case_ranks: pd.DataFrame, leaderboard: pd.DataFrame) -> pd.DataFrame:
    """How many teams each team outperforms on each criterion and in the final ranking.

    A team outperforms another on a criterion when its mean rank over the cases is strictly
    lower; in the final ranking when its final rank is strictly lower (FLARE23 paper, Fig. 2b).

    Returns
    -------
    pandas.DataFrame
        Columns ``team, criterion, outperforms``, teams in leaderboard order, criteria in the
        leaderboard's column order (the preset's) then ``final``.
    """
    import pandas as pd

    order = _order(leaderboard)
    mean_rank = case_ranks.groupby(["metric", "team"], sort=False)["rank"].mean().unstack("team")
    preset_order = [c for c in leaderboard.columns if c in mean_rank.index]
    mean_rank = mean_rank.reindex(preset_order + [m for m in mean_rank.index if m not in preset_order])
    rows = []
    for metric, ranks in mean_rank.iterrows():
        r = ranks.reindex(order).to_numpy(dtype=float)
        rows += [(team, metric, int(np.sum(r > r[i]))) for i, team in enumerate(order)]
    final = leaderboard.set_index("team")["rank"].reindex(order).to_numpy(dtype=float)
    rows += [(team, "final", int(np.sum(final > final[i]))) for i, team in enumerate(order)]
    return pd.DataFrame(rows, columns=["team", "criterion", "outperforms"])


def radar_figure(case_ranks: pd.DataFrame, leaderboard: pd.DataFrame, *, top: int = 5) -> Figure:
    """Radar chart of the ``top`` teams: per criterion, how many teams each outperforms.

    Parameters
    ----------
    case_ranks
        Columns ``team, case, metric, rank`` (``case_ranks.csv``).
    leaderboard
        Columns ``rank, team`` (``leaderboard.csv``).
    top
        Teams shown, best first.
    """
    table = outperform_table(case_ranks, leaderboard)
    criteria = list(dict.fromkeys(table["criterion"]))
    teams = _order(leaderboard)[:top]
    n_teams = leaderboard["team"].nunique()
    angles = np.linspace(0.0, 2.0 * np.pi, len(criteria), endpoint=False)
    fig, (ax,) = new_figure(7.0, 5.2, polar=True)
    styles = team_styles(teams)
    pivot = table.pivot(index="team", columns="criterion", values="outperforms")
    for team in teams:
        values = pivot.loc[team, criteria].to_numpy(dtype=float)
        colour, marker = styles[team]
        closed = np.append(values, values[0])
        ax.plot(np.append(angles, angles[0]), closed, color=colour, marker=marker, label=team)
        ax.fill(np.append(angles, angles[0]), closed, color=colour, alpha=0.08)
    ax.set_xticks(angles, [("Final rank" if c == "final" else _label(c)) for c in criteria],
                  fontsize=8)
    ax.set_ylim(0, max(n_teams - 1, 1))
    if n_teams <= 11:  # whole-number rings; matplotlib's default picks halves
        ax.set_yticks(range(n_teams), [str(i) for i in range(n_teams)], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"Teams outperformed (of {n_teams - 1} others)", fontsize=10)
    fig.legend(loc="outside right center", fontsize=8)
    return fig


def kendall_figure(kendall: pd.DataFrame) -> Figure:
    """Violin and box plot of Kendall's tau between the bootstrap rankings and the full one.

    Parameters
    ----------
    kendall
        Columns ``sample, tau`` (``bootstrap_kendall.csv``); NaN taus (a sample whose ranking
        is all ties) are left out and counted in the title.
    """
    tau = kendall["tau"].to_numpy(dtype=float)
    defined = tau[np.isfinite(tau)]
    title = "Ranking stability: Kendall's tau of bootstrap rankings"
    if defined.size == 0:
        return message_figure(title, "no defined tau (no bootstrap samples, or a single team)")
    fig, (ax,) = new_figure(4.5, 4.0)
    if np.ptp(defined) > 0:  # a violin of identical values has no density to draw
        parts = ax.violinplot(defined, showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor("#56B4E9")
            body.set_alpha(0.5)
    ax.boxplot(defined, widths=0.15, medianprops={"color": "black"}, showfliers=False)
    ax.set_xticks([1], ["bootstrap"])
    ax.set_ylabel("Kendall's tau")
    ax.set_ylim(min(-0.05, defined.min() - 0.05), 1.05)
    dropped = tau.size - defined.size
    note = f", {dropped} undefined" if dropped else ""
    ax.set_title(f"{title}\n{defined.size} samples, median {np.median(defined):.3f}{note}",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return fig


def bootstrap_blob_figure(bootstrap_ranks: pd.DataFrame, leaderboard: pd.DataFrame) -> Figure:
    """Blob plot: each team's bootstrap rank distribution.

    A disc per (team, rank) with area proportional to the share of samples at that rank, the
    median rank as a black cross and the 95 % interval (2.5 and 97.5 % quantiles) as a black
    line; the diagonal marks the full ranking.

    Parameters
    ----------
    bootstrap_ranks
        Columns ``sample, team, rank`` (``bootstrap_ranks.csv``).
    leaderboard
        Columns ``rank, team``: gives the order and the full ranking.
    """
    title = "Bootstrap ranks\n(area = frequency, x = median, line = 95 % interval)"
    if bootstrap_ranks.empty:
        return message_figure(title, "no bootstrap samples (rank with --bootstrap N)")
    order = _order(leaderboard)
    n = len(order)
    fig, (ax,) = new_figure(max(4.0, 0.35 * n + 2.0), max(3.5, 0.22 * n + 2.0))
    styles = team_styles(order)
    counts = bootstrap_ranks.groupby(["team", "rank"]).size()
    n_samples = bootstrap_ranks["sample"].nunique()
    for x, team in enumerate(order, start=1):
        if team not in counts.index.get_level_values(0):
            continue
        share = counts.loc[team] / n_samples
        ax.scatter(np.full(share.size, x), share.index.to_numpy(dtype=float),
                   s=share.to_numpy() * 300.0, color=styles[team][0], alpha=0.8, linewidth=0)
        ranks = bootstrap_ranks.loc[bootstrap_ranks["team"] == team, "rank"].to_numpy(dtype=float)
        low, median, high = np.quantile(ranks, [0.025, 0.5, 0.975])
        ax.plot([x, x], [low, high], color="black", linewidth=1)
        ax.scatter([x], [median], marker="x", color="black", s=25, zorder=3)
    ax.plot([1, n], [1, n], color="grey", linewidth=0.6, linestyle=":")
    ax.set_xticks(range(1, n + 1), order, rotation=90 if n > 8 else 0, fontsize=8)
    ax.set_ylim(n + 0.7, 0.3)
    ax.set_xlim(0.3, n + 0.7)
    ax.set_ylabel("Rank (1 = best)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def _rank_counts(case_ranks: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Count of (case, metric) pairs of each team at each rank; teams in rows, ranks 1..max."""
    ranks = case_ranks.dropna(subset=["rank"])
    top = int(np.ceil(ranks["rank"].max())) if not ranks.empty else 1
    counts = ranks.groupby(["team", "rank"]).size().unstack("rank", fill_value=0)
    return counts.reindex(index=order, columns=range(1, top + 1), fill_value=0)


def rank_heatmap_figure(case_ranks: pd.DataFrame, leaderboard: pd.DataFrame) -> Figure:
    """Ranking heatmap: how often each team takes each rank, over all cases and criteria.

    Parameters
    ----------
    case_ranks
        Columns ``team, case, metric, rank``; ranks that are not whole (``--ties average``)
        are rounded up into the next rank column.
    leaderboard
        Columns ``rank, team``: the row order.
    """
    order = _order(leaderboard)
    ranks = case_ranks.assign(rank=np.ceil(case_ranks["rank"].to_numpy(dtype=float)))
    counts = _rank_counts(ranks, order)
    fig, (ax,) = new_figure(max(4.0, 0.3 * counts.shape[1] + 2.5), max(2.5, 0.25 * len(order) + 1.5))
    image = ax.imshow(counts.to_numpy(), cmap="cividis", aspect="auto")
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in counts.columns],
                  fontsize=8 if counts.shape[1] <= 20 else 5)
    ax.set_xlabel("Rank in a case and criterion")
    fig.colorbar(image, ax=ax, label="count of (case, criterion)")
    ax.set_title("Ranking heatmap", fontsize=10)
    return fig


def podium_figure(case_ranks: pd.DataFrame, leaderboard: pd.DataFrame, *,
                  metric: str = "organ_dsc") -> Figure:
    """Podium plot of one criterion: each case's value of every team, placed at the team's
    rank in that case, with the same case joined by a line; below, each team's rank counts.

    Parameters
    ----------
    case_ranks
        Columns ``team, case, metric, value, rank``.
    leaderboard
        Columns ``rank, team``: the colour order.
    metric
        The criterion.
    """
    rows = case_ranks[case_ranks["metric"] == metric]
    title = f"Podium: {_label(metric)}"
    if rows.empty:
        return message_figure(title, f"no values of {metric}")
    order = _order(leaderboard)
    styles = team_styles(order)
    n = len(order)
    fig, (top, bottom) = new_figure(max(5.0, 0.5 * n + 2.0), 5.5, nrows=2)
    width = 0.8 / n
    for case, group in rows.groupby("case"):
        group = group.sort_values("rank")
        x = group["rank"].to_numpy(dtype=float) + (
            group["team"].map({t: i for i, t in enumerate(order)}).to_numpy() - (n - 1) / 2) * width
        top.plot(x, group["value"].to_numpy(dtype=float), color="#BBBBBB", linewidth=0.5, zorder=1)
        top.scatter(x, group["value"], c=[styles[t][0] for t in group["team"]], s=12, zorder=2)
    top.set_ylabel(_label(metric))
    top.set_xticks(range(1, n + 1))
    top.set_title(title, fontsize=10)
    counts = _rank_counts(rows.assign(rank=np.ceil(rows["rank"].to_numpy(dtype=float))), order)
    for i, team in enumerate(order):
        bottom.bar(counts.columns.to_numpy() + (i - (n - 1) / 2) * width, counts.loc[team],
                   width=width, color=styles[team][0], label=team)
    bottom.set_xticks(range(1, n + 1))
    bottom.set_xlabel("Rank")
    bottom.set_ylabel("Cases")
    if n <= 12:
        bottom.legend(fontsize=7, ncols=min(n, 6))
    return fig


def significance_figure(significance: pd.DataFrame, leaderboard: pd.DataFrame) -> Figure:
    """Significance maps, one per criterion: a filled cell where the row team is significantly
    better than the column team (one-sided Wilcoxon, Holm-adjusted; ``significance.csv``).

    Each cell of up to :data:`P_VALUE_TEAMS` teams shows its Holm-adjusted p-value; a map with
    no significant pair says so under its title, with its smallest adjusted p-value, so that an
    empty map is not mistaken for a drawing error (in the title, the note hides no cell).

    Parameters
    ----------
    significance
        Columns ``metric, team, other, p_holm, significant``.
    leaderboard
        Columns ``rank, team``: the order of rows and columns.
    """
    title = "Significance maps (row significantly better than column; Holm-adjusted p)"
    if significance.empty:
        return message_figure(title, "no pairwise tests (a single team)")
    order = _order(leaderboard)
    index = {team: i for i, team in enumerate(order)}
    metrics = list(dict.fromkeys(significance["metric"]))
    ncols = min(3, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    side = max(2.6, 0.12 * len(order) + 1.4)
    fig, axes = new_figure(side * ncols, side * nrows + 0.4, nrows=nrows, ncols=ncols)
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["#F2F2F2", "#0072B2"])
    for ax, metric in zip(axes, metrics):
        grid = np.zeros((len(order), len(order)))
        rows = significance[(significance["metric"] == metric)
                            & significance["team"].isin(index) & significance["other"].isin(index)]
        for team, other, p_holm, significant in zip(rows["team"], rows["other"], rows["p_holm"],
                                                    rows["significant"].astype(bool)):
            i, j = index[team], index[other]
            grid[i, j] = float(significant)
            if len(order) <= P_VALUE_TEAMS and np.isfinite(p_holm):
                ax.text(j, i, f"{p_holm:.2f}" if p_holm >= 0.01 else "<.01", ha="center",
                        va="center", fontsize=6, color="white" if significant else "#555555")
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=1)
        heading = _label(metric)
        if not rows["significant"].astype(bool).any():
            smallest = rows["p_holm"].min()
            heading += "\nno significant pair" + (f"\n(smallest p = {smallest:.2f})"
                                                  if np.isfinite(smallest) else "")
        labels = order if len(order) <= 15 else [""] * len(order)
        ax.set_xticks(range(len(order)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(order)), labels, fontsize=7)
        ax.set_title(heading, fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return fig
