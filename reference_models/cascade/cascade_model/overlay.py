"""Overlay figure of a predicted label map (and optionally its reference) on the CT scan.

Slices are drawn in radiological convention (the patient's right on the viewer's left, anterior
up, superior up) from the canonical RAS volume, with the true voxel aspect, so the picture looks
like a viewer's screen whatever the file's stored orientation.  The slices shown are those with
the most labelled voxels (of the reference when given, else of the prediction).

Usage::

    python -m cascade_model.overlay --image CASE_0000.nii.gz --pred CASE.nii.gz \\
        [--ref LABEL.nii.gz] --out figure.png [--title TEXT]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from numpy.typing import NDArray

from flare_eval.presets import FLARE23

from .volume import CanonicalVolume, read_canonical

__all__ = ["pick_slices", "overlay_figure", "main"]

#: Abdominal soft-tissue window (HU), the usual reading window for these organs.
WINDOW_HU = (-160.0, 240.0)


def _label_colours() -> ListedColormap:
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[: len(FLARE23.classes)]
    colours[-1] = (1.0, 0.9, 0.0, 1.0)  # lesions in yellow, apart from every organ colour
    return ListedColormap(colours)


#: Colour of label k at index k - 1.
LABEL_CMAP = _label_colours()


def pick_slices(label: NDArray[np.uint8]) -> tuple[int, int]:
    """Axial (z) and coronal (y) indices with the most labelled voxels; the centre if empty."""
    mask = label > 0
    if not mask.any():
        return label.shape[2] // 2, label.shape[1] // 2
    return int(mask.sum(axis=(0, 1)).argmax()), int(mask.sum(axis=(0, 2)).argmax())


def _show(ax: plt.Axes, ct: NDArray[np.float32], label: NDArray[np.uint8], aspect: float,
          title: str) -> None:
    # Transposed so rows run along the second RAS axis; origin "lower" puts anterior / superior
    # up, and the inverted x axis puts the patient's right on the viewer's left.
    ax.imshow(ct.T, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], origin="lower",
              aspect=aspect, interpolation="nearest")
    shown = np.ma.masked_equal(label.T.astype(np.int16), 0)
    ax.imshow(shown - 1, cmap=LABEL_CMAP, vmin=0, vmax=LABEL_CMAP.N - 1, origin="lower", aspect=aspect,
              alpha=0.55, interpolation="nearest")
    ax.invert_xaxis()
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def overlay_figure(volume: CanonicalVolume, pred: NDArray[np.uint8],
                   ref: NDArray[np.uint8] | None = None, title: str = "") -> plt.Figure:
    """Axial and coronal slices of ``pred`` (and ``ref``, one row each) over the CT.

    Parameters
    ----------
    volume
        The scan in RAS order (:func:`cascade_model.volume.read_canonical`).
    pred, ref
        Label maps in the same RAS order and shape as ``volume.data``.
    title
        Figure title.
    """
    rows = [("prediction", pred)] + ([("reference", ref)] if ref is not None else [])
    z, y = pick_slices(ref if ref is not None else pred)
    sx, sy, sz = volume.spacing_mm
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 4.6 * len(rows)), squeeze=False)
    for (name, label), (ax_axial, ax_coronal) in zip(rows, axes):
        _show(ax_axial, volume.data[:, :, z], label[:, :, z], sy / sx, f"axial z={z} {name}")
        _show(ax_coronal, volume.data[:, y, :], label[:, y, :], sz / sx, f"coronal y={y} {name}")
    present = np.unique(np.concatenate([np.unique(label) for _, label in rows]))
    handles = [Patch(color=LABEL_CMAP(c.label - 1), label=c.name) for c in FLARE23.classes
               if c.label in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7) or 1,
               fontsize=9, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.12 / len(rows), 1, 0.97))
    return fig


def _read_label(path: Path, like: CanonicalVolume) -> NDArray[np.uint8]:
    label = read_canonical(path)
    if label.data.shape != like.data.shape:
        raise ValueError(f"{path}: shape {label.source.shape} differs from the image's "
                         f"{like.source.shape}")
    return np.rint(label.data).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: write the overlay PNG."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, required=True, help="CT scan (NIfTI)")
    parser.add_argument("--pred", type=Path, required=True, help="predicted label map")
    parser.add_argument("--ref", type=Path, help="reference label map, drawn as a second row")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    volume = read_canonical(args.image)
    pred = _read_label(args.pred, volume)
    ref = _read_label(args.ref, volume) if args.ref else None
    fig = overlay_figure(volume, pred, ref, args.title)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
