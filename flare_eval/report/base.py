"""Common ground of every figure: the colour-blind-safe palette, figure creation and saving.

matplotlib is imported inside the functions, and figures are plain ``Figure`` objects that never
touch pyplot or its backend, so that
``import flare_eval`` stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flare_eval.typing import StrPath

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "OKABE_ITO", "MARKERS", "DPI", "team_styles", "new_figure", "message_figure", "figure_png",
    "save_figure",
]

#: Okabe & Ito (2008) colours, distinguishable with every common colour-vision deficiency;
#: black is left out because medians and reference lines are drawn in black.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
)
#: Marker shapes: with more teams than colours, the (colour, marker) pair stays unique.
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")

#: Resolution of the PNG files (and of the images embedded in the HTML report).
DPI = 110


def team_styles(teams: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``team -> (colour, marker)`` in the order given, unique for up to 64 teams.

    Examples
    --------
    >>> team_styles(["a", "b"])["b"]
    ('#E69F00', 'o')
    """
    n = len(OKABE_ITO)
    return {team: (OKABE_ITO[i % n], MARKERS[(i // n) % len(MARKERS)]) for i, team in enumerate(teams)}


def new_figure(width_in: float, height_in: float, *, nrows: int = 1, ncols: int = 1,
               polar: bool = False) -> tuple[Figure, list]:
    """A figure (not registered with pyplot, so never shown and never leaked) and its axes.

    Returns the figure and a flat list of its ``nrows * ncols`` axes.
    """
    try:
        # Figure objects need no pyplot backend: choosing one here would switch a notebook's
        # inline backend away
        from matplotlib.figure import Figure
    except ImportError:
        from flare_eval.errors import ConfigError

        raise ConfigError("figures and reports need matplotlib",
                          hint="pip install 'flare-eval[report]'") from None
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False,
                        subplot_kw={"projection": "polar"} if polar else None)
    return fig, list(axes.ravel())


def message_figure(title: str, message: str) -> Figure:
    """A small figure that says why there is nothing to plot (e.g. no bootstrap samples)."""
    fig, (ax,) = new_figure(6.0, 1.6)
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555555")
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes at :data:`DPI`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_figure(fig: Figure, data: pd.DataFrame, out_dir: StrPath, name: str, *,
                png: bytes | None = None) -> dict[str, Path]:
    """Write ``name.png``, ``name.svg`` and the data behind the figure as ``name.csv``.

    Parameters
    ----------
    fig
        The figure.
    data
        The table it was drawn from (written as is, without the index).
    out_dir
        Folder, created if needed.
    name
        File stem.
    png
        The figure already rendered by :func:`figure_png` (rendering is the slow part).

    Returns
    -------
    dict
        ``{"png": path, "svg": path, "csv": path}``.
    """
    from flare_eval.io import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"{name}.{kind}" for kind in ("png", "svg", "csv")}
    paths["png"].write_bytes(figure_png(fig) if png is None else png)
    import matplotlib

    # a fixed hash salt and no date keep the SVG identical from run to run
    with matplotlib.rc_context({"svg.hashsalt": "flare-eval"}):
        fig.savefig(paths["svg"], format="svg", metadata={"Date": None})
    atomic_write_text(paths["csv"], data.to_csv(index=False))
    return paths
