"""The one bounding-box helper that surface distances, the FLARE rules and lesions crop with."""

from __future__ import annotations

import numpy as np
import pytest

from scipy import ndimage

from flare_eval.metrics.boxes import bounding_box, boxes_of_labels, union_box


@pytest.mark.parametrize("order", ["C", "F"])
def test_box_of_two_volumes_is_their_union(order):
    a = np.zeros((7, 8, 9), np.uint8, order=order)
    b = np.zeros((7, 8, 9), bool, order=order)
    a[2, 3, 4] = 5  # one voxel: box [2,3) x [3,4) x [4,5)
    b[5, 1, 8] = True  # widens axis 0 to 6, axis 1 down to 1, axis 2 up to 9
    assert bounding_box(a, b) == (slice(2, 6), slice(1, 4), slice(4, 9))
    assert bounding_box(a) == (slice(2, 3), slice(3, 4), slice(4, 5))


def test_empty_volumes_have_no_box_and_do_not_widen_one():
    empty = np.zeros((3, 3, 3), bool)
    assert bounding_box(empty, empty) is None
    full = np.ones((3, 3, 3), bool)
    assert bounding_box(empty, full) == (slice(0, 3),) * 3
    assert union_box(None, None) is None
    assert union_box(None, (slice(1, 2),)) == (slice(1, 2),)


def test_a_strided_view_is_boxed_in_its_own_coordinates():
    vol = np.zeros((10, 10, 10), np.uint8)
    vol[4, 6, 8] = 1
    view = vol[::2, ::2, ::2]  # neither C- nor F-contiguous; the voxel sits at (2, 3, 4)
    assert bounding_box(view) == (slice(2, 3), slice(3, 4), slice(4, 5))


def test_not_3d_is_refused_with_the_shape():
    with pytest.raises(ValueError, match=r"3-D, got shape \(4, 4\)"):
        bounding_box(np.zeros((4, 4)))


# 14 is FLARE's (16-bit presence), 20 and 40 the wider types, 100 scipy's own path
@pytest.mark.parametrize("max_label", [1, 14, 15, 16, 20, 40, 100])
@pytest.mark.parametrize("order", ["C", "F"])
def test_boxes_of_labels_equal_scipy_find_objects(rng, max_label, order):
    for _ in range(10):
        shape = tuple(int(n) for n in rng.integers(1, 14, 3))
        sparse = rng.random(shape) < 0.05
        volume = np.asarray(sparse * rng.integers(0, 256, shape), np.uint8, order=order)
        volume.flat[0] = max_label  # a label at the very first voxel
        volume.flat[-1] = max_label + 1  # and one just above the map, which is ignored
        assert boxes_of_labels(volume, max_label=max_label) == list(
            ndimage.find_objects(volume, max_label=max_label))


@pytest.mark.parametrize("shape", [(40, 4, 6), (40, 3, 5), (9, 8, 8)])  # rows of 8 bytes or not
@pytest.mark.parametrize("dtype", [np.uint8, bool, np.int16])
def test_box_equals_the_extent_of_nonzero_voxels(rng, shape, dtype):
    # the extent is found from both ends of the first axis inwards, several rows per test:
    # voxels deep inside, at the ends, on one row only; oracle: np.nonzero's min and max
    for rows in ([17, 29], [0], [shape[0] - 1], [23 % shape[0]], [0, shape[0] - 1], [5, 6, 7, 8]):
        volume = np.zeros(shape, dtype)
        for row in rows:
            volume[row % shape[0], rng.integers(shape[1]), rng.integers(shape[2])] = 1
        where = np.nonzero(volume)
        expected = tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)
        assert bounding_box(volume) == expected
        assert bounding_box(np.asfortranarray(volume)) == expected
