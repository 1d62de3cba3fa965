"""Figure functions on small hand-made tables: one team, five, forty, missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from flare_eval.presets import FLARE23
from flare_eval.report import (
    accuracy_efficiency_figure,
    bootstrap_blob_figure,
    kendall_figure,
    leaderboard_figure,
    lesion_metrics_figure,
    lesion_volume_agreement_figure,
    lesion_volume_dsc_figure,
    organ_figure,
    outperform_table,
    podium_figure,
    radar_figure,
    rank_heatmap_figure,
    save_figure,
    significance_figure,
    team_styles,
)

METRICS = ("organ_dsc", "organ_nsd", "lesion_dsc", "lesion_nsd", "runtime", "gpu_auc")


def _tables(n_teams: int, rng: np.random.Generator, *, n_cases: int = 4) -> dict[str, pd.DataFrame]:
    """Tables shaped like the outputs of ``flare-eval rank`` and ``score``, some values NaN."""
    teams = [f"team{i:02d}" for i in range(n_teams)]
    rows = []
    for m in METRICS:
        for c in range(n_cases):
            values = rng.random(n_teams)
            ranks = pd.Series(values).rank(method="min", ascending=m in ("runtime", "gpu_auc"))
            rows += [(t, f"case{c}", m, v, r) for t, v, r in zip(teams, values, ranks)]
    case_ranks = pd.DataFrame(rows, columns=["team", "case", "metric", "value", "rank"])
    case_ranks.loc[0, "value"] = np.nan  # a missing value with its (worst) rank
    means = case_ranks.groupby(["team", "metric"])["value"].mean().unstack()
    mean_rank = case_ranks.groupby("team")["rank"].mean()
    board = pd.DataFrame({"team": teams, "mean_rank": mean_rank.reindex(teams).to_numpy()})
    board["rank"] = board["mean_rank"].rank(method="min").astype(int)
    for m in METRICS:
        board[m] = means.reindex(teams)[m].to_numpy()
    board = board[["rank", "team", "mean_rank", *METRICS]].sort_values("rank")
    samples = 5
    boot = pd.DataFrame({"sample": np.repeat(np.arange(1, samples + 1), n_teams),
                         "team": teams * samples,
                         "rank": np.concatenate([rng.permutation(n_teams) + 1 for _ in range(samples)])})
    kendall = pd.DataFrame({"sample": [1, 2, 3, 4], "tau": [0.8, 1.0, np.nan, 0.6]})
    sig = pd.DataFrame([(m, a, b, 0.01, 0.03, a < b) for m in METRICS for a in teams for b in teams
                        if a != b], columns=["metric", "team", "other", "p_value", "p_holm", "significant"])
    organs = pd.DataFrame([(t, f"case{c}", cls.name, k, rng.random())
                           for t in teams for c in range(n_cases) for cls in FLARE23.classes[:13]
                           for k in ("dsc", "nsd")], columns=["team", "case", "class", "metric", "value"])
    organs.loc[3, "value"] = np.nan
    lesions = pd.DataFrame({"team": np.repeat(teams, n_cases), "case": [f"case{c}" for c in range(n_cases)] * n_teams})
    for col in ("dsc", "nsd", "precision", "recall", "f1"):
        lesions[col] = rng.random(len(lesions))
    lesions.loc[0, "precision"] = np.nan  # no predicted lesion: precision undefined
    lesions["ref_volume_ml"] = rng.uniform(0.0, 50.0, len(lesions))
    lesions.loc[1, "ref_volume_ml"] = 0.0  # no reference lesion
    lesions["pred_volume_ml"] = lesions["ref_volume_ml"] * rng.uniform(0.5, 1.5, len(lesions))
    return {"teams": teams, "board": board, "case_ranks": case_ranks, "boot": boot,
            "kendall": kendall, "sig": sig, "organs": organs, "lesions": lesions}


@pytest.mark.parametrize("n_teams", [1, 5, 40])
def test_every_figure_draws(n_teams: int, rng: np.random.Generator) -> None:
    t = _tables(n_teams, rng)
    top = t["teams"][:5]
    summary = t["board"][["team", "organ_dsc", "lesion_dsc", "runtime", "gpu_auc"]]
    figures = [
        leaderboard_figure(t["board"]),
        accuracy_efficiency_figure(summary, runtime_tolerance_s=15.0, gpu_tolerance_mib=4096.0),
        radar_figure(t["case_ranks"], t["board"]),
        kendall_figure(t["kendall"]),
        bootstrap_blob_figure(t["boot"], t["board"]),
        rank_heatmap_figure(t["case_ranks"], t["board"]),
        podium_figure(t["case_ranks"], t["board"]),
        significance_figure(t["sig"], t["board"]),
        organ_figure(t["organs"], top),
        lesion_metrics_figure(t["lesions"], top),
        lesion_volume_dsc_figure(t["lesions"], top),
        lesion_volume_agreement_figure(t["lesions"], top),
    ]
    for figure in figures:
        assert isinstance(figure, Figure)
        figure.canvas.draw()  # layout and rendering run here: errors and warnings surface


def test_leaderboard_shows_every_team_and_na(rng: np.random.Generator) -> None:
    board = _tables(40, rng)["board"]
    board.loc[board.index[0], "lesion_nsd"] = np.nan
    fig = leaderboard_figure(board)
    texts = [c.get_text().get_text() for c in fig.axes[0].tables[0].get_celld().values()]
    assert all(team in texts for team in board["team"])
    assert "n/a" in texts


def test_no_efficiency_data_gives_no_figure() -> None:
    summary = pd.DataFrame({"team": ["a", "b"], "organ_dsc": [0.9, 0.8], "lesion_dsc": [0.5, 0.6],
                            "runtime": [np.nan, np.nan]})
    assert accuracy_efficiency_figure(summary, runtime_tolerance_s=15, gpu_tolerance_mib=4096) is None
    summary["runtime"] = [10.0, 3600.0]
    fig = accuracy_efficiency_figure(summary, runtime_tolerance_s=15, gpu_tolerance_mib=4096)
    assert fig is not None and len(fig.axes) == 1
    # the tolerance line sits at 15 s; the failure penalty pushes the axis to log scale
    ax = fig.axes[0]
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [15.0]
    assert ax.get_xscale() == "log"


def test_outperform_counts_by_hand() -> None:
    # mean ranks on organ_dsc: a 1, b 2, c 2 -> a beats 2, b and c beat 0 (tie);
    # on runtime: a 3, b 1, c 2 -> a 0, b 2, c 1; final ranks a 1, b 2, c 3 -> 2, 1, 0
    case_ranks = pd.DataFrame({
        "team": ["a", "b", "c"] * 2, "case": ["x"] * 6,
        "metric": ["organ_dsc"] * 3 + ["runtime"] * 3, "rank": [1, 2, 2, 3, 1, 2],
    })
    board = pd.DataFrame({"rank": [1, 2, 3], "team": ["a", "b", "c"]})
    table = outperform_table(case_ranks, board).set_index(["criterion", "team"])["outperforms"]
    assert table.loc["organ_dsc"].to_dict() == {"a": 2, "b": 0, "c": 0}
    assert table.loc["runtime"].to_dict() == {"a": 0, "b": 2, "c": 1}
    assert table.loc["final"].to_dict() == {"a": 2, "b": 1, "c": 0}


def test_blob_marks_median_and_interval() -> None:
    # team a: ranks 1,1,1,2 -> median 1; team b: 2,2,2,1 -> median 2
    boot = pd.DataFrame({"sample": [1, 1, 2, 2, 3, 3, 4, 4], "team": ["a", "b"] * 4,
                         "rank": [1, 2, 1, 2, 1, 2, 2, 1]})
    board = pd.DataFrame({"rank": [1, 2], "team": ["a", "b"]})
    fig = bootstrap_blob_figure(boot, board)
    ax = fig.axes[0]
    medians = [c.get_offsets()[0].tolist() for c in ax.collections if len(c.get_offsets()) == 1
               and c.get_paths()[0] is not None and c.get_sizes()[0] == 25]
    assert medians == [[1.0, 1.0], [2.0, 2.0]]
    # disc areas: a at rank 1 in 3 of 4 samples -> 0.75 * 300
    assert sorted(ax.collections[0].get_sizes().tolist()) == [75.0, 225.0]


def test_empty_inputs_explain_themselves() -> None:
    board = pd.DataFrame({"rank": [1], "team": ["a"]})
    fig = kendall_figure(pd.DataFrame({"sample": [1, 2], "tau": [np.nan, np.nan]}))
    assert "no defined tau" in fig.axes[0].texts[0].get_text()
    fig = bootstrap_blob_figure(pd.DataFrame(columns=["sample", "team", "rank"]), board)
    assert "no bootstrap" in fig.axes[0].texts[0].get_text()


def test_team_styles_unique_for_forty_teams() -> None:
    styles = team_styles([f"t{i}" for i in range(40)])
    assert len(set(styles.values())) == 40


def test_save_figure_writes_png_svg_csv(tmp_path, rng: np.random.Generator) -> None:
    data = pd.DataFrame({"sample": [1, 2, 3], "tau": [0.5, 0.75, 1.0]})
    paths = save_figure(kendall_figure(data), data, tmp_path / "figs", "tau")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths["svg"].read_text()
    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), data)


def _figure_texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_significance_map_without_significant_pair_says_so() -> None:
    board = pd.DataFrame({"rank": [1, 2, 3], "team": ["a", "b", "c"]})
    pairs = [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b")]
    # organ_dsc: nothing significant, smallest Holm p 0.14; runtime: a beats c (p 0.004)
    sig = pd.DataFrame(
        [("organ_dsc", t, o, 0.01, p, False) for (t, o), p in zip(pairs, [0.14, 0.5, 1, 1, 1, 0.9])]
        + [("runtime", t, o, 0.001, p, p < 0.05)
           for (t, o), p in zip(pairs, [0.2, 0.004, 1, 1, 1, 1])],
        columns=["metric", "team", "other", "p_value", "p_holm", "significant"])
    fig = significance_figure(sig, board)
    organ, runtime = fig.axes[:2]
    # the note, wherever it is drawn (a text of the axes or its title), covers no cell's p-value
    notes = [t for t in [*organ.texts, organ.title]
             if "no significant pair\n(smallest p = 0.14)" in t.get_text()]
    assert len(notes) == 1
    cells = [t for t in organ.texts if t is not notes[0]]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # lays the figure out: positions as saved
    patch = notes[0].get_bbox_patch()  # the box drawn around a text, where it has one
    note_box = (notes[0].get_window_extent(renderer) if patch is None
                else patch.get_window_extent(renderer))
    from matplotlib.transforms import Bbox

    # each annotated cell: the unit square around its text's position, on screen
    squares = [Bbox(organ.transData.transform([np.subtract(t.get_position(), 0.5),
                                               np.add(t.get_position(), 0.5)])) for t in cells]
    assert not any(note_box.overlaps(square) for square in squares)
    assert not note_box.overlaps(runtime.title.get_window_extent(renderer))  # nor the next map's
    # every pair's adjusted p-value in its cell: row a, column b holds 0.14
    cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in cells}
    assert len(cell) == 6
    assert cell[(0, 1)] == "0.14" and cell[(2, 1)] == "0.90" and cell[(1, 0)] == "1.00"
    runtime_texts = [t.get_text() for t in [*runtime.texts, runtime.title]]
    assert not any("no significant pair" in t for t in runtime_texts)
    assert "<.01" in runtime_texts  # a over c, p = 0.004
    assert runtime.images[0].get_array()[0, 2] == 1.0  # and that cell is filled


def test_significance_map_of_many_teams_has_no_cell_text(rng: np.random.Generator) -> None:
    t = _tables(40, rng)
    texts = _figure_texts(significance_figure(t["sig"], t["board"]))
    assert texts == []  # 40 x 40 cells: no room for p-values; all pairs significant: no note


def test_leaderboard_numbers_have_one_format_per_column() -> None:
    board = pd.DataFrame({"rank": [1], "team": ["a"], "mean_rank": [1.0], "organ_dsc": [0.94971],
                          "runtime": [40.158], "gpu_auc": [174040.0]})
    fig = leaderboard_figure(board)
    cells = {(r, c): cell.get_text().get_text()
             for (r, c), cell in fig.axes[0].tables[0].get_celld().items()}
    assert [cells[(0, c)] for c in range(6)] == [
        "Rank", "Team", "Mean rank", "Organ DSC", "Runtime (s)", "GPU AUC (MiB·s)"]
    assert [cells[(1, c)] for c in range(6)] == ["1", "a", "1.000", "0.9497", "40.2", "174,040"]


def test_organ_figure_groups_as_the_paper():
    # FLARE23 paper's groups: large solid (liver, kidneys, spleen, pancreas, stomach), small
    # (gallbladder, adrenal glands), tubular (esophagus, aorta, IVC, duodenum)
    organs = [c.name for c in FLARE23.classes if c.label != FLARE23.lesion_label]
    table = pd.DataFrame({"team": "a", "class": organs, "metric": "dsc", "value": 0.9})
    figure = organ_figure(table, ["a"])
    panels = {ax.get_title(): sorted(t.get_text() for t in ax.get_xticklabels())
              for ax in figure.axes if ax.get_title()}
    assert panels == {
        "Large solid organs": ["LK", "Liver", "Pancreas", "RK", "Spleen", "Stomach"],
        "Small organs": ["Gallbladder", "LAG", "RAG"],
        "Tubular organs": ["Aorta", "Duodenum", "Esophagus", "IVC"],
    }
