"""Accuracy metrics as plain functions on numpy arrays.

- :mod:`~flare_eval.metrics.boxes`: bounding boxes of non-zero voxels, the crop every metric uses.
- :mod:`~flare_eval.metrics.overlap`: DSC, for one mask pair or all labels in one pass.
- :mod:`~flare_eval.metrics.surface`: DeepMind surface distances, NSD, HD95, ASSD.
- :mod:`~flare_eval.metrics.flare`: the per-case FLARE23 rule set.
- :mod:`~flare_eval.metrics.lesions`: lesion instances, matching, F1, panoptic quality, volumes.
"""

from __future__ import annotations

from flare_eval.metrics.flare import ClassScore, flare_round, score_case
from flare_eval.metrics.lesions import LesionResult, lesion_metrics
from flare_eval.metrics.overlap import confusion_counts, dice, dice_all_labels, dice_from_counts
from flare_eval.metrics.surface import (
    SurfaceDistances,
    average_surface_distance,
    compute_surface_distances,
    robust_hausdorff,
    surface_dice,
)

__all__ = [
    "ClassScore",
    "LesionResult",
    "SurfaceDistances",
    "average_surface_distance",
    "compute_surface_distances",
    "confusion_counts",
    "dice",
    "dice_all_labels",
    "dice_from_counts",
    "flare_round",
    "lesion_metrics",
    "robust_hausdorff",
    "score_case",
    "surface_dice",
]
