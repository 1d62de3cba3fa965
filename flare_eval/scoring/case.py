"""One case: read a reference and a prediction file, apply the preset's rules, record everything.

Failure policy (FLARE22 rules, which the FLARE23 protocol leaves implicit):

- missing prediction (``missing_prediction``) or an unreadable / wrong-shaped prediction
  (``bad_prediction``): the case is scored as if the prediction were empty, i.e. 0 for every class
  present in the reference and 1 where both are empty, and the status says why;
- unreadable reference (``bad_reference``): nothing can be scored; every value is NaN and the
  status says why.

With ``strict=True`` any of these raises :class:`~flare_eval.errors.InputError` instead.

A prediction holding values outside the label map is scored with those voxels as background
(``out_of_map_labels = "background"``, a note names the values) or, with ``"zero_case"``, every
class of the case gets DSC = NSD = 0 and HD95 ``inf`` (rule ``out_of_map_zeroed``) whatever the
other rules say, and the lesion instance metrics see an empty prediction (FLARE24 task 1).  The
rule judges the file's values, which only this module sees: :func:`read_label` has already set
them to 0 in the arrays :func:`~flare_eval.metrics.flare.score_case` receives.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flare_eval.errors import InputError
from flare_eval.io import LabelVolume, LabelWarning, read_label
from flare_eval.io.layout import case_id
from flare_eval.metrics.flare import ClassScore, label_boxes, score_case
from flare_eval.metrics.lesions import lesion_metrics
from flare_eval.presets import Preset

__all__ = ["CaseRecord", "score_files"]

STATUSES = ("ok", "missing_prediction", "bad_prediction", "bad_reference")


@dataclass(frozen=True)
class CaseRecord:
    """Everything scored for one case; plain data, so it round-trips through JSON for resuming.

    Attributes
    ----------
    case
        Case id (file name without ``.nii.gz``).
    name
        Reference file name, the ``Name`` column of the official tables.
    status
        ``ok``, ``missing_prediction``, ``bad_prediction`` or ``bad_reference``.
    message
        Why the status is not ``ok``, and warnings (affine mismatch, labels outside the map).
    classes
        One dict per class (the fields of :class:`~flare_eval.metrics.flare.ClassScore`).
    lesions
        The lesion summary (``lesions_per_case.csv`` columns) or None without a lesion label.
    lesion_instances
        One dict per lesion instance (``lesions.csv`` rows).
    """

    case: str
    name: str
    status: str
    message: str
    classes: list[dict[str, Any]] = field(default_factory=list)
    lesions: dict[str, Any] | None = None
    lesion_instances: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # the fields hold plain data already: a shallow copy (dataclasses.asdict deep-copies
        # every nested dict and list, ~0.5 ms a case)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseRecord:
        return cls(**data)


def _read(path: Path, preset: Preset, notes: list[str],
          shape: tuple[int, ...] | None = None) -> LabelVolume:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_label(path, max_label=preset.max_label, shape=shape)
    # a prediction's out-of-map values zero the case under "zero_case": the reader's "scored as
    # background" would be untrue, and score_files writes the note instead
    zeroes = shape is not None and preset.out_of_map_labels == "zero_case"
    notes.extend(str(w.message) for w in caught
                 if not (zeroes and issubclass(w.category, LabelWarning)))
    return volume


def score_files(
    reference_path: Path,
    prediction_path: Path | None,
    *,
    preset: Preset,
    strict: bool = False,
) -> CaseRecord:
    """Score one case from its files.

    Parameters
    ----------
    reference_path
        Ground-truth label file.
    prediction_path
        Prediction file, or None when the submission has none for this case.
    preset
        Scoring rules, the lesion instance rules (``preset.lesions``) included.
    strict
        Raise on a missing or bad file instead of recording a failed case.

    Returns
    -------
    CaseRecord

    Raises
    ------
    InputError
        Only with ``strict=True``.
    """
    notes: list[str] = []
    case, name = case_id(reference_path), reference_path.name
    try:
        reference = _read(reference_path, preset, notes)
    except InputError as err:
        if strict:
            raise
        nan = float("nan")
        classes = [
            dataclasses.asdict(ClassScore(c.label, nan, nan, nan, 0, 0, "bad_reference"))
            for c in preset.classes
        ]
        return CaseRecord(case, name, "bad_reference", str(err), classes)

    status = "ok"
    prediction_data = None
    zeroed = False
    if prediction_path is None or not prediction_path.exists():
        status = "missing_prediction"
        notes.insert(0, f"no prediction {name} in the submission; scored as an empty prediction")
        if strict:
            raise InputError(f"case {case}: prediction {name} is missing")
    else:
        try:
            # the shape is checked on the header, before a (possibly hostile) file is inflated
            prediction = _read(prediction_path, preset, notes, shape=reference.data.shape)
            if not np.allclose(prediction.affine, reference.affine, atol=1e-3):
                notes.append(
                    f"{prediction_path}: affine differs from the reference's (scored on the voxel "
                    "grid as the official scorer does; check the orientation)"
                )
            prediction_data = prediction.data
            zeroed = preset.out_of_map_labels == "zero_case" and bool(prediction.outside_labels)
            if zeroed:
                notes.append(
                    f"{prediction_path}: values outside the label map 0..{preset.max_label} "
                    f"{list(prediction.outside_labels[:10])}: every class scored 0 "
                    "(out_of_map_labels = \"zero_case\")"
                )
        except InputError as err:
            if strict:
                raise
            status = "bad_prediction"
            notes.insert(0, f"{err}; scored as an empty prediction")
    if prediction_data is None:
        prediction_data = np.zeros(reference.data.shape, dtype=np.uint8, order="F")
    boxes = label_boxes(reference.data, prediction_data, max_label=preset.max_label)
    scores = score_case(
        reference.data, prediction_data, spacing_mm=reference.spacing_mm, preset=preset, boxes=boxes
    )
    if zeroed:
        scores = [dataclasses.replace(s, dsc=0.0, nsd=0.0, hd95_mm=float("inf"),
                                      rule="out_of_map_zeroed") for s in scores]
    lesions, instances = None, []
    if preset.lesion_label is not None and preset.lesions is not None:
        # The lesion masks of the lesions' box only (no lesion: one voxel, holding none), not
        # two whole-volume comparisons.
        box = boxes.stored_box(preset.lesion_label) or (slice(0, 1),) * 3
        result = lesion_metrics(
            reference.data[box] == preset.lesion_label,
            # a zeroed case's prediction counts as empty here too
            (prediction_data[box] == preset.lesion_label) & (not zeroed),
            origin_voxel=tuple(s.start for s in box),  # type: ignore[arg-type]
            spacing_mm=reference.spacing_mm,
            connectivity=preset.lesions.connectivity,
            iou_threshold=preset.lesions.iou_threshold,
            match=preset.lesions.match,
        )
        lesions, instances = result.summary(), result.instances()
    return CaseRecord(
        case,
        name,
        status,
        "; ".join(notes),
        [dataclasses.asdict(s) for s in scores],
        lesions,
        instances,
    )
