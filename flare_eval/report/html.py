"""The self-contained HTML report: leaderboard, every figure, failed cases, where each team's
cases ran (and the slots' calibration), configuration and software versions in one file (images embedded as base64 PNG, inline CSS, no script, nothing
fetched from anywhere)."""

from __future__ import annotations

import base64
import html
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_eval.report.figures_ranking import leaderboard_text
from flare_eval.report.results import ReportTables, load_results, slot_table, team_summary
from flare_eval.typing import StrPath

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["ReportFigure", "report_figures", "render_html", "write_report"]


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: file stem, heading, caption, the figure and its data.

    ``in_html`` False: saved with the figures but not embedded in the HTML (the leaderboard,
    which the HTML shows as a table).
    """

    name: str
    title: str
    caption: str
    figure: Figure
    data: pd.DataFrame
    in_html: bool = True


def report_figures(tables: ReportTables, *, top: int = 5) -> list[ReportFigure]:
    """Draw every figure of the report, in report order.

    Parameters
    ----------
    tables
        From :func:`flare_eval.report.load_results`.
    top
        Teams shown in the per-team accuracy figures and the radar chart.

    Returns
    -------
    list of ReportFigure
        The accuracy-efficiency scatter is left out when there is no runner output.
    """
    from flare_eval.definition import preset_from_mapping
    from flare_eval.presets import get_preset
    from flare_eval.report import figures_accuracy as acc
    from flare_eval.report import figures_ranking as rk

    recorded = tables.ranking_config.get("definition")
    preset = (preset_from_mapping(recorded, where="ranking/ranking.json") if recorded is not None
              else get_preset(tables.ranking_config.get("preset", "flare23")))
    # the tolerances the ranking applied (ranking.json), not the scorer's preset
    runtime_tol = float(tables.ranking_config.get("runtime_tolerance_s", preset.runtime_tolerance_s))
    gpu_tol = float(tables.ranking_config.get("gpu_tolerance_mib", preset.gpu_tolerance_mib))
    board = tables.leaderboard
    teams = list(board.sort_values(["rank", "team"], kind="stable")["team"].astype(str))
    shown = teams[:top]
    summary = team_summary(tables)
    specs: list[tuple[str, str, str, Callable[[], Figure | None], pd.DataFrame]] = [
        ("leaderboard", "Leaderboard",
         "Mean rank over every case and criterion, and each criterion's mean raw value.",
         lambda: rk.leaderboard_figure(board), board),
        ("accuracy_efficiency", "Accuracy against efficiency",
         f"Mean DSC against mean runtime and GPU use; dashed lines: tolerances "
         f"({runtime_tol:g} s, {gpu_tol:g} MiB). Failed runs count with their penalty values.",
         lambda: rk.accuracy_efficiency_figure(summary, runtime_tolerance_s=runtime_tol,
                                               gpu_tolerance_mib=gpu_tol), summary),
        ("radar", f"Radar chart of the top {len(shown)} teams",
         "Per criterion, how many other teams each team outperforms (lower mean rank over the "
         "cases), and in the final ranking.",
         lambda: rk.radar_figure(tables.case_ranks, board, top=top),
         rk.outperform_table(tables.case_ranks, board)),
        ("kendall_tau", "Ranking stability",
         "Kendall's tau-b between the ranking of each bootstrap sample of the cases and the "
         "full ranking (1: identical order).",
         lambda: rk.kendall_figure(tables.kendall), tables.kendall),
        ("bootstrap_blob", "Bootstrap ranks",
         "Rank distribution of each team over the bootstrap samples.",
         lambda: rk.bootstrap_blob_figure(tables.bootstrap_ranks, board), tables.bootstrap_ranks),
        ("rank_heatmap", "Ranking heatmap",
         "How often each team takes each rank over all cases and criteria.",
         lambda: rk.rank_heatmap_figure(tables.case_ranks, board), tables.case_ranks),
        ("podium", "Podium (organ DSC)",
         "Each case's organ DSC of every team placed at the team's rank in that case.",
         lambda: rk.podium_figure(tables.case_ranks, board), tables.case_ranks),
        ("significance", "Significance maps",
         "One-sided paired Wilcoxon signed-rank tests, "
         + ("Holm-adjusted" if tables.ranking_config.get("p_adjust", "holm") == "holm"
            else "not adjusted") + f", significant when p <= {tables.ranking_config.get('alpha', 0.05):g}.",
         lambda: rk.significance_figure(tables.significance, board), tables.significance),
        ("organs", f"Per-organ accuracy of the top {len(shown)} teams",
         "Per-case DSC and NSD of each organ, grouped as in the FLARE23 paper.",
         lambda: acc.organ_figure(tables.organ_table, shown, preset=preset), tables.organ_table),
        ("lesion_metrics", "Lesion segmentation and detection",
         "Per-case lesion DSC and NSD, and lesion-wise precision, recall and F1 (connected "
         "components matched by IoU). Undefined values (no predicted lesion) are left out.",
         lambda: acc.lesion_metrics_figure(tables.lesion_table, shown), tables.lesion_table),
        ("lesion_volume_dsc", "Lesion DSC against lesion volume",
         "Cases with at least one reference lesion.",
         lambda: acc.lesion_volume_dsc_figure(tables.lesion_table, shown), tables.lesion_table),
        ("lesion_volume_agreement", "Predicted against reference lesion volume",
         "Total lesion volume per case; dashed: identity.",
         lambda: acc.lesion_volume_agreement_figure(tables.lesion_table, shown),
         tables.lesion_table),
    ]
    figures = []
    for name, title, caption, draw, data in specs:
        figure = draw()
        if figure is not None:
            figures.append(ReportFigure(name, title, caption, figure, data,
                                        in_html=name != "leaderboard"))
    return figures


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { border-bottom: 3px solid #0072B2; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; color: #0072B2; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: right; }
th { background: #DDE6F0; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #F6F6F6; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
.note { color: #555; font-size: .9rem; }
nav a { margin-right: .8rem; font-size: .85rem; color: #0072B2; }
"""


def _table_html(table: pd.DataFrame, *, float_format: str = "{:.4g}") -> str:
    return table.to_html(index=False, border=0, na_rep="n/a", escape=True,
                         float_format=float_format.format)


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _configuration(tables: ReportTables) -> dict[str, Any]:
    """The settings a reader needs to reproduce the results, from ranking.json and run.json."""
    ranking = {k: v for k, v in tables.ranking_config.items()
               if k not in ("versions", "warnings", "definition")}
    ranking["definition content_sha256"] = tables.ranking_config.get("definition", {}).get("content_sha256")
    score = next(iter(tables.score_config.values())).get("options", {})
    preset = {k: v for k, v in score.get("preset", {}).items() if k != "classes"}
    return {"ranking": ranking, "scoring preset": preset,
            "lesion matching": score.get("lesions", {})}


def _versions(tables: ReportTables) -> dict[str, str]:
    import matplotlib

    from flare_eval import __version__

    versions = {"flare_eval (report)": __version__, "python (report)": platform.python_version(),
                "matplotlib": matplotlib.__version__}
    for name, version in tables.ranking_config.get("versions", {}).items():
        versions[f"{name} (ranking)"] = str(version)
    for team_config in tables.score_config.values():
        for name, version in team_config.get("versions", {}).items():
            versions.setdefault(f"{name} (scoring)", str(version))
    return versions


def _slots_html(tables: ReportTables) -> list[str]:
    """Where each team's cases ran, and the calibration the slots were checked against."""
    from flare_eval.presets import SLOT_TOLERANCE
    from flare_eval.runner.calibrate import slot_spread

    esc = html.escape
    where = slot_table(tables)
    parts = ['<h2 id="slots">Where the cases ran</h2>']
    if where.empty:
        parts.append('<p class="note">The runner outputs do not say where the cases ran '
                     "(no host and slot in runs.csv).</p>")
    else:
        parts += ['<p class="note">Per team, the host, slot, cores and GPU of its cases '
                  "(runs.csv), and how many cases ran there; a team's timings are comparable "
                  "when its slots are alike.</p>", _table_html(where)]
    if tables.calibration is None:
        return parts
    parts += ['<h2 id="calibration">Calibration</h2>',
              '<p class="note">The reference workload on every slot alone and on all slots at '
              "once (flare-eval calibrate); ratio: to the fastest slot of the same workload and "
              f"mode. The slots may differ by at most {SLOT_TOLERANCE:.0%} (slowest / fastest "
              "- 1).</p>",
              _table_html(tables.calibration, float_format="{:.3f}")]
    for row in slot_spread(tables.calibration).itertuples():
        verdict = "within" if row.spread <= SLOT_TOLERANCE else "beyond"
        parts.append(f'<p class="note">{esc(str(row.workload))} workload, {esc(str(row.mode))}: '
                     f"slots differ by {row.spread:.1%} (slot {esc(str(row.slowest))} slowest, "
                     f"slot {esc(str(row.fastest))} fastest), {verdict} the tolerance.</p>")
    return parts


def render_html(tables: ReportTables, figures: list[ReportFigure], pngs: dict[str, bytes], *,
                title: str) -> str:
    """The report as one HTML string (see the module docstring).

    Parameters
    ----------
    tables
        The results.
    figures
        The figures, in report order.
    pngs
        Each figure rendered by :func:`flare_eval.report.figure_png`, by figure name.
    title
        Page title.
    """
    import pandas as pd

    esc = html.escape
    n_teams = tables.leaderboard["team"].nunique()
    n_cases = tables.ranking_config.get("n_cases", tables.ranking_table["case"].nunique())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">{n_teams} teams, {n_cases} cases, scheme '
        f'{esc(str(tables.ranking_config.get("scheme", "?")))}, preset '
        f'{esc(str(tables.ranking_config.get("preset", "?")))} (sha256 '
        f'{esc(str(tables.ranking_config.get("definition", {}).get("content_sha256", "?"))[:12])}), '
        f'{tables.ranking_config.get("n_bootstrap", 0)} bootstrap samples '
        f'(seed {esc(str(tables.ranking_config.get("seed", "?")))}).</p>',
        '<nav><a href="#leaderboard">Leaderboard</a>'
        + "".join(f'<a href="#{f.name}">{esc(f.title)}</a>' for f in figures if f.in_html)
        + '<a href="#failures">Failed cases</a><a href="#slots">Slots</a>'
        + ('<a href="#calibration">Calibration</a>' if tables.calibration is not None else "")
        + '<a href="#configuration">Configuration</a>'
        + '<a href="#versions">Versions</a></nav>',
        '<h2 id="leaderboard">Leaderboard</h2>',
        '<p class="note">Lower mean rank is better: the mean of each team\'s ranks over every '
        "case and criterion; the other columns are each criterion's mean raw value over the "
        "values the team has (a failed case's 0 or penalty included), and the number of "
        "(case, criterion) values it lacks, each ranked worst in its case.</p>",
        _table_html(leaderboard_text(tables.leaderboard)),
    ]
    for warning in tables.ranking_config.get("warnings", []):
        parts.append(f'<p class="note">Ranking warning: {esc(str(warning))}</p>')
    for figure in (f for f in figures if f.in_html):
        parts += [f'<h2 id="{figure.name}">{esc(figure.title)}</h2><figure>',
                  f'<img src="{_png_data_uri(pngs[figure.name])}" alt="{esc(figure.title)}">',
                  f"<figcaption>{esc(figure.caption)}</figcaption></figure>"]
    parts.append('<h2 id="failures">Missing and failed cases</h2>')
    if tables.failures.empty:
        parts.append('<p class="note">Every case of every team was scored and ran.</p>')
    else:
        parts.append('<p class="note">A case without a prediction scores 0 on every class '
                     "present; a failed run takes the preset's runtime and GPU penalties.</p>")
        parts.append(_table_html(tables.failures))
    parts += _slots_html(tables)
    parts.append('<h2 id="configuration">Configuration</h2>')
    for section, settings in _configuration(tables).items():
        rows = pd.DataFrame({"setting": list(settings),
                             "value": [v if isinstance(v, str) else json.dumps(v)
                                       for v in settings.values()]})
        parts += [f"<h3>{esc(section.capitalize())}</h3>", _table_html(rows)]
    versions = _versions(tables)
    parts += ['<h2 id="versions">Software versions</h2>',
              _table_html(pd.DataFrame({"package": list(versions),
                                        "version": list(versions.values())})),
              "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(results_dir: StrPath, out_html: StrPath, *, figures_dir: StrPath | None = None,
                 top: int = 5, title: str = "flare-eval challenge report",
                 calibration: StrPath | None = None) -> Path:
    """Read a results folder, draw every figure and write the self-contained HTML report.

    Parameters
    ----------
    results_dir
        ``RESULTS/<team>/`` and ``RESULTS/ranking/`` (see :func:`load_results`).
    out_html
        The HTML file to write.
    figures_dir
        Also save every figure there as PNG, SVG and the CSV of its data.
    top
        Teams shown in the per-team figures.
    title
        Page title.
    calibration
        The ``flare-eval calibrate`` table the slots were checked against, shown after where
        each team's cases ran (:func:`load_results`).

    Returns
    -------
    pathlib.Path
        ``out_html``.
    """
    from flare_eval.io import atomic_write_text
    from flare_eval.report.base import figure_png, save_figure

    tables = load_results(results_dir, calibration=calibration)
    figures = report_figures(tables, top=top)
    pngs = {figure.name: figure_png(figure.figure) for figure in figures}
    if figures_dir is not None:
        for figure in figures:
            save_figure(figure.figure, figure.data, figures_dir, figure.name, png=pngs[figure.name])
    out = Path(out_html)
    atomic_write_text(out, render_html(tables, figures, pngs, title=title))
    return out
