"""Bounding boxes of the non-zero voxels of 3-D volumes, the crop every metric starts from."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["Box", "bounding_box", "union_box"]

#: One slice per array axis, half-open ``[start, stop)``.
Box = tuple[slice, ...]


def union_box(a: Box | None, b: Box | None) -> Box | None:
    """The smallest box holding both boxes; ``None`` stands for an empty one.

    Examples
    --------
    >>> union_box((slice(1, 3), slice(0, 2)), (slice(2, 5), slice(1, 2)))
    (slice(1, 5, None), slice(0, 2, None))
    """
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _box_of_c_ordered(volume: NDArray[np.generic]) -> Box | None:
    # Max-projections in memory order: rows of the first axis (one contiguous reduction over
    # the volume), then a plane of the first axis's extent only.
    outer = np.flatnonzero(volume.reshape(volume.shape[0], -1).max(axis=1))
    if outer.size == 0:
        return None
    plane = volume[outer[0] : outer[-1] + 1].max(axis=0)
    rows = np.flatnonzero(plane.max(axis=1))
    cols = np.flatnonzero(plane.max(axis=0))
    return (
        slice(int(outer[0]), int(outer[-1]) + 1),
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(cols[0]), int(cols[-1]) + 1),
    )


def bounding_box(*volumes: NDArray[np.generic]) -> Box | None:
    """Bounding box of the non-zero voxels of all volumes, or ``None`` when all are empty.

    Parameters
    ----------
    *volumes
        3-D arrays of one shape (bool or integer labels), C- or Fortran-ordered: a Fortran
        array is read through its transposed view, so no copy is made either way.

    Returns
    -------
    tuple of slice or None
        One half-open slice per axis.

    Examples
    --------
    >>> a = np.zeros((4, 5, 6), bool); a[1, 2:4, 5] = True
    >>> bounding_box(a, np.asfortranarray(a[::-1]))
    (slice(1, 3, None), slice(2, 4, None), slice(5, 6, None))
    >>> bounding_box(np.zeros((2, 2, 2), np.uint8)) is None
    True
    """
    box: Box | None = None
    for volume in volumes:
        if volume.ndim != 3:
            raise ValueError(f"bounding_box: volumes must be 3-D, got shape {volume.shape}")
        if volume.flags.f_contiguous and not volume.flags.c_contiguous:
            this = _box_of_c_ordered(volume.T)
            this = None if this is None else this[::-1]
        else:
            this = _box_of_c_ordered(volume)
        box = union_box(box, this)
    return box
