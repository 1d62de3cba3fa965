"""The FLARE23 per-case rules: every branch hand-computed, and the official path as the oracle."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from flare_eval.metrics.flare import flare_round, score_case
from flare_eval.phantoms import make_phantom, simulate_prediction
from flare_eval.presets import FLARE23
from tests.conftest import require_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
require_module("surface_distance")
from official_flare23 import official_case  # noqa: E402

ISO = (1.0, 1.0, 1.0)


def by_label(scores):
    return {s.label: s for s in scores}


def test_both_empty_is_one_and_one_empty_is_zero():
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[2:5, 2:5, 2:5] = 1  # liver only in the reference
    pred[6:8, 6:8, 6:8] = 3  # spleen only in the prediction
    s = by_label(score_case(ref, pred, spacing_mm=ISO))
    assert (s[1].dsc, s[1].nsd, s[1].rule) == (0.0, 0.0, "prediction_empty")
    assert (s[3].dsc, s[3].nsd, s[3].rule) == (0.0, 0.0, "reference_empty")
    assert (s[2].dsc, s[2].nsd, s[2].rule) == (1.0, 1.0, "both_empty")
    assert np.isnan(s[2].hd95_mm) and s[1].hd95_mm == float("inf")


def test_vessel_crop_drops_the_topmost_reference_slice():
    ref = np.zeros((12, 12, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[4:8, 4:8, 2:6] = 5  # aorta on slices 2..5
    pred[4:8, 4:8, 2:5] = 5  # prediction misses slice 5
    s = by_label(score_case(ref, pred, spacing_mm=ISO))
    # official crop [2, 5): slices 2, 3, 4 only, where both agree -> DSC 1 (uncropped: 6/7)
    assert s[5].dsc == 1.0 and s[5].nsd == 1.0
    ref[4:8, 4:8, 2:6] = 1  # the same geometry as liver is not cropped: 2*48/(64+48)
    pred[pred == 5] = 1
    s = by_label(score_case(ref, pred, spacing_mm=ISO))
    assert s[1].dsc == flare_round(2 * 48 / (64 + 48))


def test_single_slice_vessel_is_kept_or_nan_by_policy():
    ref = np.zeros((12, 12, 10), np.uint8)
    ref[4:8, 4:8, 3] = 6  # IVC on one slice: the official code would crash
    pred = ref.copy()
    s = by_label(score_case(ref, pred, spacing_mm=ISO))
    assert (s[6].dsc, s[6].nsd, s[6].rule) == (1.0, 1.0, "single_slice_kept")
    s = by_label(score_case(ref, pred, spacing_mm=ISO, preset=FLARE23.with_overrides(single_slice_z_crop="nan")))
    assert np.isnan(s[6].dsc) and np.isnan(s[6].nsd) and s[6].rule == "single_slice_nan"


def test_vessel_crop_that_removes_the_whole_prediction_scores_zero():
    ref = np.zeros((12, 12, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[4:8, 4:8, 2:6] = 10
    pred[4:8, 4:8, 5:9] = 10  # only above the crop [2, 5)
    s = by_label(score_case(ref, pred, spacing_mm=ISO))
    assert (s[10].dsc, s[10].nsd) == (0.0, 0.0)


def test_nsd_skip_threshold_is_strict():
    # |G| = |P| = 10, |G ∩ P| = 1: DSC = 2 / 20 = 0.1 exactly -> not below 0.1, NSD computed
    ref = np.zeros((20, 20, 20), np.uint8)
    pred = np.zeros_like(ref)
    ref[5, 5, 0:10] = 9
    pred[5, 5, 9:19] = 9
    s = by_label(score_case(ref, pred, spacing_mm=ISO))
    assert s[9].dsc == 0.1 and s[9].rule == "scored" and s[9].nsd > 0
    s = by_label(score_case(ref, pred, spacing_mm=ISO, preset=FLARE23.with_overrides(nsd_dsc_threshold=0.2)))
    assert s[9].dsc == 0.1 and s[9].nsd == 0.0 and s[9].rule == "below_threshold"


def test_numpy_rounding_differs_from_python_round_at_ties():
    # np.round scales by 10**4 and rounds half to even: 0.95325 * 1e4 == 9532.5 -> 9532;
    # Python's round decides on the exact decimal expansion and gives 0.9533 (the spec's example)
    assert flare_round(0.95325) == 0.9532
    assert round(0.95325, 4) == 0.9533
    assert flare_round(0.12345) == 0.1234 and round(0.12345, 4) == 0.1235


def test_shape_mismatch_is_an_input_error():
    from flare_eval.errors import InputError

    with pytest.raises(InputError, match=r"shape mismatch.*\(4, 4, 4\).*\(4, 4, 5\)"):
        score_case(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), spacing_mm=ISO)


@pytest.mark.parametrize("seed, quality", [(1, "good"), (2, "poor"), (3, "fair"), (4, "excellent")])
def test_phantom_cases_equal_the_official_path(seed, quality):
    phantom = make_phantom(seed, shape=(96, 96, 60), spacing_mm=(4.0, 4.0, 5.0))
    pred = simulate_prediction(phantom.label, seed + 50, quality=quality)
    spacing = tuple(np.float32(s) for s in phantom.spacing_mm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = official_case(phantom.label, pred, spacing)
    ours = score_case(np.asfortranarray(phantom.label), np.asfortranarray(pred), spacing_mm=phantom.spacing_mm)
    assert {s.label: (s.dsc, s.nsd) for s in ours} == expected


def test_real_pair_equals_the_official_path(shared_data):
    from flare_eval.io import read_label

    ref = read_label(shared_data / "totalseg-pair" / "labels" / "ts_pair.nii.gz")
    pred = read_label(shared_data / "totalseg-pair" / "predictions" / "ts_pair.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = official_case(ref.data, pred.data, tuple(np.float32(s) for s in ref.spacing_mm))
    ours = score_case(ref.data, pred.data, spacing_mm=ref.spacing_mm)
    assert {s.label: (s.dsc, s.nsd) for s in ours} == expected
    # README of the data: voxel counts per label in the reference / prediction
    counts = {s.label: (s.reference_voxels, s.prediction_voxels) for s in ours}
    assert counts[1] == (38634, 39547) and counts[7] == (152, 166)


@pytest.mark.parametrize(("dtype", "value"), [(np.int16, 257), (np.float32, 1.7), (np.int16, -1)])
def test_arrays_that_are_not_labels_are_refused(dtype, value):
    # a plain uint8 cast would score 257 as 1 (liver, 257 mod 256) and 1.7 as 1: refused
    from flare_eval.errors import InputError

    reference = np.zeros((4, 4, 4), np.uint8)
    reference[1:3, 1:3, 1:3] = 1
    prediction = reference.astype(dtype)
    prediction[0, 0, 0] = value
    with pytest.raises(InputError, match=r"prediction .* not labels 0\.\.255"):
        score_case(reference, prediction, spacing_mm=(1.0, 1.0, 1.0))
