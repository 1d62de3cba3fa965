"""NSD, HD95 and surface distances against DeepMind's surface-distance package (the oracle)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from flare_eval.errors import InputError
from flare_eval.metrics.surface import (
    average_surface_distance,
    compute_surface_distances,
    robust_hausdorff,
    surface_dice,
)
from tests.conftest import require_module

sd_oracle = require_module("surface_distance")


def oracle(a, b, spacing):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its scipy.ndimage.filters use
        return sd_oracle.compute_surface_distances(a, b, spacing)


def blob(rng, shape, sigma=3.0, level=0.5):
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


SPACINGS = [(1.0, 1.0, 1.0), (0.8, 0.7, 2.5), (0.9375, 0.9375, 5.0), (3.0, 1.5, 0.5)]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("fortran", [False, True])
def test_random_masks_match_oracle_bit_for_bit(rng, spacing, fortran):
    spacing = tuple(float(np.float32(s)) for s in spacing)
    for _ in range(3):
        a, b = blob(rng, (34, 30, 26)), blob(rng, (34, 30, 26))
        if fortran:
            a, b = np.asfortranarray(a), np.asfortranarray(b)
        expected = oracle(a, b, spacing)
        ours = compute_surface_distances(a, b, spacing_mm=spacing)
        # same multiset of distances and areas, to the bit
        assert np.array_equal(np.sort(expected["distances_gt_to_pred"]), np.sort(ours.distances_ref_to_pred_mm))
        assert np.array_equal(np.sort(expected["distances_pred_to_gt"]), np.sort(ours.distances_pred_to_ref_mm))
        assert np.array_equal(np.sort(expected["surfel_areas_gt"]), np.sort(ours.surfel_areas_ref_mm2))
        for tol in (1.0, 2.0, 3.0, 5.0, 7.0):
            assert surface_dice(ours, tolerance_mm=tol) == pytest.approx(
                sd_oracle.compute_surface_dice_at_tolerance(expected, tol), abs=1e-12
            )
        assert robust_hausdorff(ours, percent=95) == sd_oracle.compute_robust_hausdorff(expected, 95)


def test_far_apart_masks_use_the_tree_path_and_match(rng):
    # distances beyond one voxel spacing are not found by the probe; the k-d tree must give them
    a = np.zeros((40, 40, 40), bool)
    b = np.zeros((40, 40, 40), bool)
    a[5:12, 5:12, 5:12] = True
    b[25:35, 22:30, 20:36] = True
    spacing = (0.8, 0.8, 2.5)
    expected = oracle(a, b, spacing)
    ours = compute_surface_distances(a, b, spacing_mm=spacing)
    assert np.array_equal(np.sort(expected["distances_gt_to_pred"]), np.sort(ours.distances_ref_to_pred_mm))
    assert robust_hausdorff(ours) == sd_oracle.compute_robust_hausdorff(expected, 95)


def test_dilated_prediction_against_oracle_at_every_tolerance():
    a = np.zeros((30, 30, 30), bool)
    a[8:22, 9:20, 10:21] = True
    b = ndimage.binary_dilation(a, iterations=2)
    spacing = (1.0, 1.0, 1.0)
    expected = oracle(a, b, spacing)
    ours = compute_surface_distances(a, b, spacing_mm=spacing)
    # a box grown by 2 voxels: every reference surfel lies 2 voxels from the grown surface
    assert surface_dice(ours, tolerance_mm=1.0) < 1.0
    assert surface_dice(ours, tolerance_mm=2.0) == pytest.approx(1.0)
    for tol in (1.0, 1.5, 2.0):
        assert surface_dice(ours, tolerance_mm=tol) == pytest.approx(
            sd_oracle.compute_surface_dice_at_tolerance(expected, tol), abs=1e-12
        )


def test_identical_masks_have_zero_distances_and_full_nsd():
    a = np.zeros((10, 10, 10), bool)
    a[2:7, 3:8, 4:9] = True
    sd = compute_surface_distances(a, a, spacing_mm=(1.0, 2.0, 3.0))
    assert sd.distances_ref_to_pred_mm.max() == 0.0
    assert surface_dice(sd, tolerance_mm=0.0) == 1.0
    assert robust_hausdorff(sd) == 0.0
    assert average_surface_distance(sd) == (0.0, 0.0)


def test_flat_face_area_is_hand_computable():
    # a 1 x 8 x 8 slab of voxels at spacing (2, 1, 1): the two big faces are each 8 x 8 mm^2;
    # surfel areas summed over the whole surface of a box are its face areas (the neighbour-code
    # normals of a flat face are axis-aligned): 2 * 64 (x faces) + 4 * 8 * 2 (the thin sides)
    a = np.zeros((5, 12, 12), bool)
    a[2:3, 2:10, 2:10] = True
    sd = compute_surface_distances(a, a, spacing_mm=(2.0, 1.0, 1.0))
    total = sd.surfel_areas_ref_mm2.sum()
    assert total < 2 * 64 + 4 * 8 * 2 + 1e-9  # corners are cut by the marching-cube surfels
    assert total > 2 * 64


def test_empty_prediction_gives_inf_distances():
    a = np.zeros((8, 8, 8), bool)
    a[2:5, 2:5, 2:5] = True
    sd = compute_surface_distances(a, np.zeros_like(a), spacing_mm=(1.0, 1.0, 1.0))
    assert np.isinf(sd.distances_ref_to_pred_mm).all()
    assert sd.distances_pred_to_ref_mm.size == 0
    assert surface_dice(sd, tolerance_mm=5.0) == 0.0
    assert robust_hausdorff(sd) == float("inf")


def test_both_empty_nsd_is_nan():
    z = np.zeros((5, 5, 5), bool)
    assert np.isnan(surface_dice(compute_surface_distances(z, z, spacing_mm=(1, 1, 1)), tolerance_mm=1))


@pytest.mark.parametrize(
    "spacing, match",
    [((1.0, 1.0), "three positive"), ((1.0, 0.0, 1.0), "three positive"), ((1.0, np.nan, 1.0), "three positive")],
)
def test_bad_spacing_is_refused(spacing, match):
    a = np.ones((3, 3, 3), bool)
    with pytest.raises(InputError, match=match):
        compute_surface_distances(a, a, spacing_mm=spacing)


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError, match=r"same shape.*\(3, 3, 3\).*\(3, 3, 4\)"):
        compute_surface_distances(np.ones((3, 3, 3), bool), np.ones((3, 3, 4), bool), spacing_mm=(1, 1, 1))


def test_real_masks_match_oracle(shared_data):
    from flare_eval.io import read_label

    ref = read_label(shared_data / "totalseg-pair" / "labels" / "ts_pair.nii.gz")
    pred = read_label(shared_data / "totalseg-pair" / "predictions" / "ts_pair.nii.gz")
    for label in (1, 3, 5, 7, 12):
        a, b = ref.data == label, pred.data == label
        expected = oracle(a, b, ref.spacing_mm)
        ours = compute_surface_distances(a, b, spacing_mm=ref.spacing_mm)
        assert np.array_equal(np.sort(expected["distances_gt_to_pred"]), np.sort(ours.distances_ref_to_pred_mm))
        assert surface_dice(ours, tolerance_mm=2.0) == pytest.approx(
            sd_oracle.compute_surface_dice_at_tolerance(expected, 2.0), abs=1e-12
        )


def _stable_order_holds(sd):
    # the oracle: numpy's stable argsort of the distances themselves
    return (np.array_equal(sd.order_ref_to_pred, np.argsort(sd.distances_ref_to_pred_mm, kind="stable"))
            and np.array_equal(sd.order_pred_to_ref, np.argsort(sd.distances_pred_to_ref_mm, kind="stable")))


@pytest.mark.parametrize("spacing", SPACINGS)
def test_distance_order_is_the_stable_argsort(rng, spacing):
    # blobs on a grid: thousands of equal distances, whose order decides the HD95 sums' last bit
    spacing = tuple(float(np.float32(s)) for s in spacing)
    for _ in range(3):
        a, b = blob(rng, (34, 30, 26)), blob(rng, (34, 30, 26))
        sd = compute_surface_distances(a, b, spacing_mm=spacing)
        assert np.unique(sd.distances_ref_to_pred_mm).size < sd.distances_ref_to_pred_mm.size / 10
        assert _stable_order_holds(sd)


def test_distance_order_with_surfels_beyond_the_probed_ball():
    # two boxes far apart and one touching: distances of the probe and of the k-d tree, mixed
    a = np.zeros((40, 40, 40), bool)
    b = np.zeros((40, 40, 40), bool)
    a[5:12, 5:12, 5:12] = True
    a[25:30, 30:35, 5:10] = True
    b[25:35, 22:30, 20:36] = True
    b[26:31, 30:35, 4:9] = True
    sd = compute_surface_distances(a, b, spacing_mm=(0.8, 0.8, 2.5))
    assert sd.distances_ref_to_pred_mm.max() > 2.5 * 2.5 and sd.distances_ref_to_pred_mm.min() == 0
    assert _stable_order_holds(sd)
    empty = compute_surface_distances(a, np.zeros_like(a), spacing_mm=(1.0, 1.0, 1.0))
    assert np.array_equal(empty.order_ref_to_pred, np.arange(empty.distances_ref_to_pred_mm.size))


def test_every_offset_beyond_the_probed_ball_is_longer_than_it():
    # 2.5 / 0.22727272727272730 rounds below 11, yet 11 such steps are 2.5 mm: a ball boxed by
    # floor(radius / spacing) would leave that offset to the k-d tree, at the ball's own length
    from flare_eval.metrics.surface import BALL_SPACINGS, _ball

    spacing = (1.0, 1.0, 0.2272727272727273)
    assert np.floor(2.5 / spacing[2]) == 10 and 11 * spacing[2] == 2.5
    ball = _ball(spacing, (0, 1, 2))
    grid = np.stack(np.meshgrid(*(np.arange(-15, 16),) * 3, indexing="ij"), -1).reshape(-1, 3)
    lengths = np.sqrt(((grid * np.array(spacing)) ** 2).sum(axis=1))
    inside = {tuple(o) for o in ball.offsets.tolist()}
    outside = np.array([tuple(o) not in inside for o in grid.tolist()])
    assert lengths[outside].min() > lengths[~outside].max() == BALL_SPACINGS * 1.0
