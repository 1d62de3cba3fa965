"""The per-case FLARE23 rule set: DSC, NSD and HD95 of every class of one case.

The rules (``docs/protocol.md`` section 3), applied per class ``i`` in this order:

1. Emptiness is judged on the whole volume: both empty gives DSC = NSD = 1
   (``preset.both_empty_value``), exactly one empty gives 0 (``preset.one_empty_value``).
2. For the z-cropped classes (aorta, IVC, esophagus) both masks are cut to the reference's
   extent along axis 2 as the half-open slice ``[zmin, zmax)``: the topmost reference slice is
   dropped, as in the official code.  A reference on a single slice makes that slice empty and
   the official code crash; flare-eval applies ``preset.single_slice_z_crop``: ``"keep"``
   (default) scores the single slice ``[zmin, zmin + 1)``, ``"nan"`` reports NaN for every
   prediction, an empty one too (the rule is the reference's, judged before step 1).
3. ``DSC = 2|G ∩ P| / (|G| + |P|)``.
4. ``NSD = 0`` if ``DSC < preset.nsd_dsc_threshold`` (strict), else DeepMind's surface Dice at
   the class tolerance.
5. Every value is rounded with ``np.round(np.float64(x), preset.decimals)`` (half to even on the
   binary value, as the official scorer; Python's ``round`` differs at ties).

HD95 (an extra, not official) is reported for every class where both masks are non-empty after
the crop; it is NaN when both are empty and ``inf`` when exactly one is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from flare_eval.errors import InputError
from flare_eval.metrics.boxes import Box, bounding_box, boxes_of_labels, union_box
from flare_eval.metrics.overlap import dice_from_counts
from flare_eval.metrics.surface import (
    robust_hausdorff,
    surface_dice,
    surface_distances_of_view,
)
from flare_eval.presets import FLARE23, Preset
from flare_eval.typing import LabelArray, Spacing

__all__ = ["ClassScore", "LabelBoxes", "label_boxes", "score_case", "flare_round"]


@dataclass(frozen=True)
class ClassScore:
    """Scores of one class of one case.

    Attributes
    ----------
    label
        Class label.
    dsc, nsd
        Rounded per the preset (``preset.decimals``).
    hd95_mm
        Robust Hausdorff distance (95th percentile), rounded likewise; NaN (both empty) or inf
        (one empty).
    reference_voxels, prediction_voxels
        Voxel counts in the whole volume (before any z-crop).
    rule
        Which branch applied: ``both_empty``, ``reference_empty``, ``prediction_empty``,
        ``below_threshold`` (NSD skipped), ``scored``, ``single_slice_kept``,
        ``single_slice_nan``; ``out_of_map_zeroed`` where the prediction file's values
        outside the label map zeroed the case (:mod:`flare_eval.scoring.case`).
    """

    label: int
    dsc: float
    nsd: float
    hd95_mm: float
    reference_voxels: int
    prediction_voxels: int
    rule: str


def flare_round(value: float, decimals: int = 4) -> float:
    """Round as the official scorer: ``np.round(np.float64(value), decimals)``.

    Examples
    --------
    >>> flare_round(0.95325)  # the binary value lies below the tie
    0.9532
    """
    return float(np.round(np.float64(value), decimals))


@dataclass(frozen=True)
class LabelBoxes:
    """Two label volumes cropped to their foreground, with every label's bounding box.

    Made by :func:`label_boxes`; the work every per-class score and the lesion crop share.

    Attributes
    ----------
    reference, prediction
        C-contiguous crops of the volumes' non-zero voxels (axes reversed when
        ``reversed_axes``: nibabel's Fortran arrays are used through their transposed view).
    origin
        Index of the crops' first voxel in the (possibly transposed) volume.
    reference_boxes, prediction_boxes
        Box of label ``k`` in the crop at ``k - 1``, None where the label is absent.
    reversed_axes
        The crops' axes are the stored axes reversed.
    """

    reference: NDArray[np.uint8]
    prediction: NDArray[np.uint8]
    origin: tuple[int, ...]
    reference_boxes: list[Box | None]
    prediction_boxes: list[Box | None]
    reversed_axes: bool

    def stored_box(self, label: int) -> Box | None:
        """Box of ``label`` in either volume, in the stored axes of the whole volume."""
        box = union_box(self.reference_boxes[label - 1], self.prediction_boxes[label - 1])
        if box is None:
            return None
        whole = tuple(slice(s.start + o, s.stop + o) for s, o in zip(box, self.origin))
        return whole[::-1] if self.reversed_axes else whole


def _as_labels(data: NDArray, argument: str) -> NDArray:
    """``data`` if it is a uint8 label map; other dtypes must hold whole numbers in 0..255.

    A plain cast would wrap (int16 257 -> 1, liver) or truncate (1.7 -> 1) silently; files go
    through :func:`flare_eval.io.read_label`, which applies the official rules and warns.
    """
    if data.dtype == np.uint8 or data.dtype == np.bool_:
        return data
    if data.dtype.kind not in "iuf":
        raise InputError(f"score_case: {argument} has unsupported data type {data.dtype}")
    if data.size and (not np.isfinite(data).all() or not np.array_equal(data, np.trunc(data))
                      or data.min() < 0 or data.max() > 255):
        bad = data[~np.isfinite(data) | (data != np.trunc(data)) | (data < 0) | (data > 255)]
        raise InputError(
            f"score_case: {argument} ({data.dtype}) holds values that are not labels 0..255, "
            f"e.g. {np.unique(bad)[:5].tolist()}",
            hint="read files with flare_eval.io.read_label (official truncation, out-of-map "
                 "labels as background) or give uint8 arrays",
        )
    return data


def label_boxes(reference: LabelArray, prediction: LabelArray, *, max_label: int) -> LabelBoxes:
    """Crop two label volumes to their foreground and find every label's box in one pass each.

    Parameters
    ----------
    reference, prediction
        uint8 label volumes of one shape (X, Y, Z) in stored voxel order.
    max_label
        Boxes are found for the labels 1..``max_label``.

    Raises
    ------
    InputError
        When the shapes differ, the volumes are not 3D or hold values that are not labels.
    """
    if reference.shape != prediction.shape:
        raise InputError(
            f"shape mismatch: reference {reference.shape}, prediction {prediction.shape}",
            hint="the prediction must be on the reference's voxel grid",
        )
    if reference.ndim != 3:
        raise InputError(f"expected 3D label volumes, got shape {reference.shape}")
    ref = _as_labels(np.asarray(reference), "reference")
    pred = _as_labels(np.asarray(prediction), "prediction")
    reversed_axes = ref.flags.f_contiguous and not ref.flags.c_contiguous
    if reversed_axes:
        ref, pred = ref.T, pred.T
    ref = np.ascontiguousarray(ref, dtype=np.uint8)
    pred = np.ascontiguousarray(pred, dtype=np.uint8)
    box = bounding_box(ref, pred)
    if box is None:
        return LabelBoxes(ref, pred, (0, 0, 0), [None] * max_label, [None] * max_label,
                          reversed_axes)
    # every label's box from three reductions over the foreground crop
    ref_c = np.ascontiguousarray(ref[box])
    pred_c = np.ascontiguousarray(pred[box])
    return LabelBoxes(
        ref_c, pred_c, tuple(s.start for s in box),
        boxes_of_labels(ref_c, max_label=max_label),
        boxes_of_labels(pred_c, max_label=max_label),
        reversed_axes,
    )


def _class_score(
    label: int,
    ref: NDArray[np.uint8],
    pred: NDArray[np.uint8],
    ref_box: tuple[slice, ...] | None,
    pred_box: tuple[slice, ...] | None,
    *,
    z_axis: int,
    spacing_mm: Spacing,
    reversed_axes: bool,
    preset: Preset,
) -> ClassScore:
    info = preset.class_info(label)
    rnd = preset.decimals
    z_cropped = label in preset.z_crop_labels
    single_slice = (z_cropped and ref_box is not None
                    and ref_box[z_axis].stop - ref_box[z_axis].start == 1)
    if single_slice and preset.single_slice_z_crop == "nan":
        # a rule of the reference: every team gets NaN, an empty prediction too (a 0 there
        # would rank above the NaN of a team that segmented the organ)
        nan = float("nan")
        n_ref = int(np.count_nonzero(ref[ref_box] == label))
        n_pred = 0 if pred_box is None else int(np.count_nonzero(pred[pred_box] == label))
        return ClassScore(label, nan, nan, nan, n_ref, n_pred, "single_slice_nan")
    if ref_box is None or pred_box is None:
        n_ref = 0 if ref_box is None else int(np.count_nonzero(ref[ref_box] == label))
        n_pred = 0 if pred_box is None else int(np.count_nonzero(pred[pred_box] == label))
        if ref_box is None and pred_box is None:
            v = preset.both_empty_value
            return ClassScore(label, v, v, float("nan"), 0, 0, "both_empty")
        v = preset.one_empty_value
        rule = "reference_empty" if ref_box is None else "prediction_empty"
        return ClassScore(label, v, v, float("inf"), n_ref, n_pred, rule)
    box = list(union_box(ref_box, pred_box))  # type: ignore[arg-type]
    rule = "scored"
    if z_cropped:
        n_ref = int(np.count_nonzero(ref[ref_box] == label))
        n_pred = int(np.count_nonzero(pred[pred_box] == label))
        zmin, zlast = ref_box[z_axis].start, ref_box[z_axis].stop - 1
        if single_slice:
            box[z_axis] = slice(zmin, zmin + 1)
            rule = "single_slice_kept"
        else:
            box[z_axis] = slice(zmin, zlast)  # the official half-open [zmin, zmax)
    g = ref[tuple(box)] == label
    p = pred[tuple(box)] == label
    inter = int(np.count_nonzero(g & p))
    size_g, size_p = int(np.count_nonzero(g)), int(np.count_nonzero(p))
    if not z_cropped:  # the union box holds every voxel of both
        n_ref, n_pred = size_g, size_p
    dsc = dice_from_counts(inter, size_g, size_p)
    if size_p == 0:  # the z-crop removed the whole prediction
        return ClassScore(label, flare_round(dsc, rnd), 0.0, float("inf"), n_ref, n_pred, rule)
    distances = surface_distances_of_view(g, p, spacing_mm=spacing_mm, reversed_axes=reversed_axes)
    if dsc < preset.nsd_dsc_threshold:
        nsd, rule = 0.0, "below_threshold"
    else:
        nsd = surface_dice(distances, tolerance_mm=info.tolerance_mm)
    hd95 = robust_hausdorff(distances, percent=95.0)
    return ClassScore(
        label, flare_round(dsc, rnd), flare_round(nsd, rnd), flare_round(hd95, rnd), n_ref, n_pred, rule
    )


def score_case(
    reference: LabelArray,
    prediction: LabelArray,
    *,
    spacing_mm: Spacing,
    preset: Preset = FLARE23,
    boxes: LabelBoxes | None = None,
) -> list[ClassScore]:
    """Score every class of one case under the preset's rules.

    Parameters
    ----------
    reference, prediction
        uint8 label volumes of shape (X, Y, Z) in stored voxel order (nibabel's Fortran-ordered
        arrays are used through their free C-ordered transposed view).  Values outside the
        preset's labels are ignored, as by the official scorer.
    spacing_mm
        The reference's voxel size (the official scorer never reads the prediction's header).
    preset
        The rules; :data:`flare_eval.presets.FLARE23` by default.
    boxes
        :func:`label_boxes` of these volumes when the caller has it already (the lesion crop
        uses it too); made here otherwise.

    Returns
    -------
    list of ClassScore
        One per class, in the preset's column order.

    Raises
    ------
    InputError
        When the shapes differ or the volumes are not 3D.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros((8, 8, 8), np.uint8); g[2:6, 2:6, 2:6] = 1
    >>> s = score_case(g, g, spacing_mm=(1.0, 1.0, 1.0))
    >>> (s[0].dsc, s[0].nsd, s[1].dsc, s[1].rule)
    (1.0, 1.0, 1.0, 'both_empty')
    """
    if boxes is None:
        boxes = label_boxes(reference, prediction, max_label=preset.max_label)
    return [
        _class_score(
            label,
            boxes.reference,
            boxes.prediction,
            boxes.reference_boxes[label - 1],
            boxes.prediction_boxes[label - 1],
            z_axis=0 if boxes.reversed_axes else 2,
            spacing_mm=tuple(float(s) for s in spacing_mm),  # type: ignore[arg-type]
            reversed_axes=boxes.reversed_axes,
            preset=preset,
        )
        for label in preset.labels
    ]
