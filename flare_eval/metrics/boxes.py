"""Bounding boxes of the non-zero voxels of 3-D volumes, the crop every metric starts from."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["Box", "bounding_box", "boxes_of_labels", "union_box"]

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


#: Rows of the first axis tested per call when looking for the first and last non-empty one.
_ROWS_PER_TEST = 8


def _first_axis_extent(rows: NDArray[np.generic]) -> tuple[int, int] | None:
    """First and last non-zero row of a 2-D array, reading rows in from both ends only until
    one is found (the rows between are the box's, read once by the caller)."""
    n = rows.shape[0]
    for start in range(0, n, _ROWS_PER_TEST):
        found = np.flatnonzero(rows[start:start + _ROWS_PER_TEST].max(axis=1))
        if found.size:
            first = start + int(found[0])
            break
    else:
        return None
    stop = n
    while True:  # ends at the latest on the rows that hold ``first``
        start = max(first, stop - _ROWS_PER_TEST)
        found = np.flatnonzero(rows[start:stop].max(axis=1))
        if found.size:
            return first, start + int(found[-1])
        stop = start


def _box_of_c_ordered(volume: NDArray[np.generic]) -> Box | None:
    # In memory order: the extent of the first axis from its ends inwards, then the
    # max-projection of the rows between onto a plane, so the volume is read about once.
    # Bytes are read eight at a time where they can be (a word is non-zero iff one of its
    # bytes is, and the OR of words is the OR of their bytes).
    rows = volume.reshape(volume.shape[0], -1)
    words = rows.dtype.itemsize == 1 and rows.flags.c_contiguous and rows.shape[1] % 8 == 0
    if words:
        rows = rows.view(np.uint64)
    extent = _first_axis_extent(rows)
    if extent is None:
        return None
    first, last = extent
    if words:
        plane = np.bitwise_or.reduce(rows[first : last + 1], axis=0)
        plane = plane.view(np.uint8).reshape(volume.shape[1:])
    else:
        plane = volume[first : last + 1].max(axis=0)
    rows_of_plane = np.flatnonzero(plane.max(axis=1))
    cols = np.flatnonzero(plane.max(axis=0))
    return (
        slice(first, last + 1),
        slice(int(rows_of_plane[0]), int(rows_of_plane[-1]) + 1),
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


def _presence_dtype(max_label: int) -> type[np.unsignedinteger] | None:
    """The smallest unsigned type with a bit for each label 0..``max_label`` (None: over 63)."""
    for dtype in (np.uint16, np.uint32, np.uint64):
        if max_label < np.dtype(dtype).itemsize * 8:
            return dtype
    return None


def _first_last(presence: NDArray[np.unsignedinteger], labels: NDArray[np.unsignedinteger]
                ) -> tuple[NDArray[np.bool_], NDArray[np.intp], NDArray[np.intp]]:
    """Per label: present along this axis at all, and its first and last index."""
    has = (presence[:, None] >> labels) & 1 == 1  # (positions, labels)
    first = has.argmax(axis=0)
    last = has.shape[0] - 1 - has[::-1].argmax(axis=0)
    return has.any(axis=0), first, last


def boxes_of_labels(volume: NDArray[np.integer], *, max_label: int) -> list[Box | None]:
    """Bounding box of each label 1..``max_label`` of a 3-D label volume, as
    ``scipy.ndimage.find_objects(volume, max_label=max_label)`` gives them.

    Each voxel's label becomes one bit (``1 << label``; a label beyond the type's width
    shifts out to 0) and the bits are OR-reduced onto the three axes: three SIMD reductions
    over one array instead of a branch per voxel, about 4x faster than ``find_objects`` on
    a FLARE crop.  Labels above ``max_label`` are ignored; above 63, ``find_objects`` is used.

    Parameters
    ----------
    volume
        3-D array of non-negative integer labels (any memory order).
    max_label
        Boxes are given for the labels 1..``max_label``.

    Returns
    -------
    list
        The box of label ``k`` at ``k - 1``, None where the label is absent.

    Examples
    --------
    >>> v = np.zeros((3, 4, 5), np.uint8); v[1, 2:4, 0] = 2
    >>> boxes_of_labels(v, max_label=2)
    [None, (slice(1, 2, None), slice(2, 4, None), slice(0, 1, None))]
    """
    dtype = _presence_dtype(max_label)
    if dtype is None:
        from scipy import ndimage

        return list(ndimage.find_objects(volume, max_label=max_label))
    bits = np.left_shift(dtype(1), volume, dtype=dtype)
    rows = np.bitwise_or.reduce(bits, axis=2)  # (axis 0, axis 1): the largest reduction first
    labels = np.arange(1, max_label + 1, dtype=dtype)
    along = [
        _first_last(np.bitwise_or.reduce(rows, axis=1), labels),
        _first_last(np.bitwise_or.reduce(rows, axis=0), labels),
        _first_last(np.bitwise_or.reduce(bits, axis=(0, 1)), labels),
    ]
    present = along[0][0]
    return [
        tuple(slice(int(first[k]), int(last[k]) + 1) for _, first, last in along)
        if present[k] else None
        for k in range(max_label)
    ]
