"""Volume overlap: the Dice similarity coefficient (DSC), for one mask pair or all labels at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from flare_eval.errors import InputError
from flare_eval.typing import BoolArray, LabelArray

__all__ = ["dice", "dice_from_counts", "confusion_counts", "dice_all_labels"]


def dice_from_counts(intersection: int, reference_size: int, prediction_size: int) -> float:
    """``2 |G ∩ P| / (|G| + |P|)``; NaN when both masks are empty (callers apply their policy).

    Examples
    --------
    >>> dice_from_counts(3, 4, 4)
    0.75
    """
    total = reference_size + prediction_size
    return float("nan") if total == 0 else 2.0 * intersection / total


def dice(reference: BoolArray, prediction: BoolArray) -> float:
    """Dice similarity coefficient of two binary masks of equal shape (NaN when both are empty).

    Raises
    ------
    InputError
        When the shapes differ.
    """
    if reference.shape != prediction.shape:
        raise InputError(
            f"reference and prediction must have the same shape, got {reference.shape} and "
            f"{prediction.shape}"
        )
    ref = np.asarray(reference, dtype=bool)
    pred = np.asarray(prediction, dtype=bool)
    return dice_from_counts(
        int(np.count_nonzero(ref & pred)), int(np.count_nonzero(ref)), int(np.count_nonzero(pred))
    )


def confusion_counts(
    reference: LabelArray, prediction: LabelArray, *, n_labels: int
) -> NDArray[np.int64]:
    """Joint voxel counts of (reference label, predicted label) in one pass.

    Parameters
    ----------
    reference, prediction
        Integer label volumes of equal shape with values in ``0 .. n_labels - 1``.
    n_labels
        Number of label values, background included.

    Returns
    -------
    ndarray, shape (n_labels, n_labels)
        ``counts[g, p]`` = number of voxels with reference ``g`` and prediction ``p``.
    """
    if reference.shape != prediction.shape:
        raise InputError(
            f"reference and prediction must have the same shape, got {reference.shape} and "
            f"{prediction.shape}"
        )
    ref = np.asarray(reference).ravel(order="K")
    pred = np.asarray(prediction).ravel(order="K")
    for name, arr in (("reference", ref), ("prediction", pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_labels):
            raise InputError(f"{name} labels must lie in 0..{n_labels - 1}, got {arr.min()}..{arr.max()}")
    joint = ref.astype(np.intp) * n_labels + pred
    return np.bincount(joint, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


def dice_all_labels(
    reference: LabelArray, prediction: LabelArray, *, labels: Sequence[int]
) -> dict[int, float]:
    """DSC of every label from one pass over the volumes (NaN where both masks are empty).

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([0, 1, 1, 2]); p = np.array([0, 1, 2, 2])
    >>> dice_all_labels(g, p, labels=[1, 2])
    {1: 0.6666666666666666, 2: 0.6666666666666666}
    """
    n = int(max(labels)) + 1
    ref_max = int(np.max(reference)) if np.size(reference) else 0
    pred_max = int(np.max(prediction)) if np.size(prediction) else 0
    counts = confusion_counts(reference, prediction, n_labels=max(n, ref_max + 1, pred_max + 1))
    return {
        int(label): dice_from_counts(
            int(counts[label, label]), int(counts[label].sum()), int(counts[:, label].sum())
        )
        for label in labels
    }
