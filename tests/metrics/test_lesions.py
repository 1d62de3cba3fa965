"""Lesion instance metrics: hand-computed edge cases, a brute-force matching oracle, panoptica."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from flare_eval.errors import ConfigError, InputError

from flare_eval.metrics import lesions
from flare_eval.metrics.lesions import lesion_metrics as _lesion_metrics
from tests.conftest import require_module

UNIT = (1.0, 1.0, 1.0)
#: The rules these cases were worked out with (the function has none: a definition sets them)
RULES = dict(connectivity=26, iou_threshold=0.5, match="iou")


def lesion_metrics(reference, prediction, **options):
    return _lesion_metrics(reference, prediction, **{**RULES, **options})


def _box(shape, *slices) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for s in slices:
        mask[s] = True
    return mask


def _nan_equal(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def _assert_summary(result, expected: dict) -> None:
    summary = result.summary()
    assert list(summary) == list(lesions.LESION_SUMMARY_COLUMNS)
    for key, value in expected.items():
        assert _nan_equal(summary[key], value), (key, summary[key], value)


# --- empty-case conventions (module docstring table) -------------------------------------

NAN = math.nan
S = (slice(2, 4), slice(2, 4), slice(2, 4))  # a 2x2x2 lesion: 8 voxels


@pytest.mark.parametrize(
    ("ref_slices", "pred_slices", "expected"),
    [
        pytest.param((), (), dict(ref_lesions=0, pred_lesions=0, tp=0, fp=0, fn=0, precision=NAN,
                                  recall=NAN, f1=NAN, pq=NAN, sq=NAN, rq=NAN, ref_volume_ml=0.0,
                                  pred_volume_ml=0.0), id="both-empty"),
        pytest.param((), (S,), dict(tp=0, fp=1, fn=0, precision=0.0, recall=NAN, f1=0.0, pq=0.0,
                                    sq=NAN, rq=0.0, ref_volume_ml=0.0, pred_volume_ml=0.008),
                     id="reference-empty"),
        pytest.param((S,), (), dict(tp=0, fp=0, fn=1, precision=NAN, recall=0.0, f1=0.0, pq=0.0,
                                    sq=NAN, rq=0.0, ref_volume_ml=0.008, pred_volume_ml=0.0),
                     id="prediction-empty"),
        # disjoint lesions: tp 0, everything 0 except SQ (no match to average)
        pytest.param((S,), ((slice(6, 8),) * 3,), dict(tp=0, fp=1, fn=1, precision=0.0,
                                                       recall=0.0, f1=0.0, pq=0.0, sq=NAN,
                                                       rq=0.0), id="no-match"),
        # identical: every quality 1
        pytest.param((S,), (S,), dict(tp=1, fp=0, fn=0, precision=1.0, recall=1.0, f1=1.0,
                                      pq=1.0, sq=1.0, rq=1.0), id="identical"),
    ],
)
def test_empty_case_conventions(ref_slices, pred_slices, expected):
    ref = _box((10, 10, 10), *ref_slices)
    pred = _box((10, 10, 10), *pred_slices)
    _assert_summary(lesion_metrics(ref, pred, spacing_mm=UNIT), expected)


# --- connectivity -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("second", "expected_by_connectivity"),
    [
        # shares only a corner with [0:2]^3: one lesion under 26, two under 18 and 6
        ((slice(2, 4), slice(2, 4), slice(2, 4)), {26: 1, 18: 2, 6: 2}),
        # shares an edge (x = 2 and y = 2 planes meet along z): one under 26 and 18
        ((slice(2, 4), slice(2, 4), slice(0, 2)), {26: 1, 18: 1, 6: 2}),
        # shares a face: one lesion whatever the connectivity
        ((slice(2, 4), slice(0, 2), slice(0, 2)), {26: 1, 18: 1, 6: 1}),
    ],
    ids=["corner", "edge", "face"],
)
def test_touching_lesions_follow_connectivity(second, expected_by_connectivity):
    ref = _box((6, 6, 6), (slice(0, 2),) * 3, second)
    for connectivity, n in expected_by_connectivity.items():
        result = lesion_metrics(ref, ref, spacing_mm=UNIT, connectivity=connectivity)
        # prediction == reference: every lesion matches itself with IoU 1
        assert (result.ref_lesions, result.pred_lesions, result.tp, result.pq) == (n, n, n, 1.0)


def test_corner_touching_lesions_counted_as_two_misses_under_6_connectivity():
    # reference: two corner-touching 2x2x2 cubes; prediction: only the first cube.
    ref = _box((6, 6, 6), (slice(0, 2),) * 3, (slice(2, 4),) * 3)
    pred = _box((6, 6, 6), (slice(0, 2),) * 3)
    # 26: one 16-voxel reference lesion, IoU 8/16 = 0.5, not > 0.5: no match.
    _assert_summary(lesion_metrics(ref, pred, spacing_mm=UNIT),
                    dict(ref_lesions=1, tp=0, fp=1, fn=1, pq=0.0))
    # 6: two lesions, the first matched with IoU 1: PQ = 1 / (1 + 0/2 + 1/2) = 2/3.
    _assert_summary(lesion_metrics(ref, pred, spacing_mm=UNIT, connectivity=6),
                    dict(ref_lesions=2, tp=1, fp=0, fn=1, pq=2 / 3, sq=1.0, recall=0.5))


# --- split and merge ----------------------------------------------------------------------

def test_lesion_split_in_two_by_the_prediction():
    shape = (8, 4, 4)
    ref = _box(shape, (slice(0, 6), slice(0, 2), slice(0, 2)))                 # 24 voxels
    pred = _box(shape, (slice(0, 4), slice(0, 2), slice(0, 2)),                # 16 voxels
                (slice(5, 6), slice(0, 2), slice(0, 2)))                       # 4 voxels
    # IoU(ref, p1) = 16/24 = 2/3 > 0.5; IoU(ref, p2) = 4/24 = 1/6: p2 is a false positive.
    # PQ = (2/3) / (1 + 1/2 + 0) = 4/9; F1 = 2/(2+1) = 2/3; DSC(ref, p1) = 32/40 = 0.8.
    expected = dict(ref_lesions=1, pred_lesions=2, tp=1, fp=1, fn=0, precision=0.5, recall=1.0,
                    f1=2 / 3, rq=2 / 3, sq=2 / 3, pq=4 / 9)
    result = lesion_metrics(ref, pred, spacing_mm=UNIT)
    _assert_summary(result, expected)
    # "overlap" mode: both pieces touch the lesion, one-to-one keeps the larger IoU (p1).
    overlap = lesion_metrics(ref, pred, spacing_mm=UNIT, match="overlap")
    _assert_summary(overlap, expected)
    rows = {(r["side"], r["lesion_id"]): r for r in overlap.instances()}
    assert rows[("ref", 1)]["matched_id"] == 1
    assert rows[("ref", 1)]["iou"] == pytest.approx(2 / 3)
    assert rows[("ref", 1)]["dsc"] == pytest.approx(0.8)
    assert rows[("pred", 1)]["matched_id"] == 1
    assert rows[("pred", 2)]["matched_id"] == 0
    assert math.isnan(rows[("pred", 2)]["iou"]) and math.isnan(rows[("pred", 2)]["dsc"])


def test_two_lesions_merged_by_the_prediction():
    shape = (8, 4, 4)
    ref = _box(shape, (slice(0, 3), slice(0, 2), slice(0, 2)),                 # 12 voxels
               (slice(4, 6), slice(0, 2), slice(0, 2)))                        # 8 voxels
    pred = _box(shape, (slice(0, 6), slice(0, 2), slice(0, 2)))                # 24 voxels
    # IoU(r1, p) = 12/24 = 0.5 exactly, IoU(r2, p) = 8/24 = 1/3.
    # Default (> 0.5, strict): no match. tp 0, fp 1, fn 2.
    _assert_summary(lesion_metrics(ref, pred, spacing_mm=UNIT),
                    dict(tp=0, fp=1, fn=2, f1=0.0, pq=0.0, sq=NAN, precision=0.0, recall=0.0))
    # > 0.49: r1 matches; PQ = 0.5 / (1 + 0 + 2/2... ) -> 0.5 / (1 + 0/2 + 1/2) = 1/3.
    _assert_summary(lesion_metrics(ref, pred, spacing_mm=UNIT, iou_threshold=0.49),
                    dict(tp=1, fp=0, fn=1, pq=1 / 3, sq=0.5, recall=0.5, precision=1.0))
    # overlap mode: both candidates, one prediction; the larger IoU (r1) wins.
    result = lesion_metrics(ref, pred, spacing_mm=UNIT, match="overlap")
    assert result.matches.tolist() == [[1, 1]]
    assert result.pq == pytest.approx(1 / 3)


def test_volumes_and_centroids_use_spacing_and_full_volume_indices():
    shape = (12, 12, 6)
    ref = _box(shape, (slice(2, 4), slice(4, 6), slice(1, 2)))   # 4 voxels, centroid (2.5, 4.5, 1)
    pred = _box(shape, (slice(9, 12), slice(10, 12), slice(5, 6)))  # 6 voxels, (10, 10.5, 5)
    spacing = (0.5, 2.0, 3.0)  # voxel volume 3 mm^3
    result = lesion_metrics(ref, pred, spacing_mm=spacing)
    assert result.ref_volume_ml == pytest.approx(4 * 3 / 1000)
    assert result.pred_volume_ml == pytest.approx(6 * 3 / 1000)
    ref_row, pred_row = result.instances()
    assert (ref_row["side"], pred_row["side"]) == ("ref", "pred")
    assert [ref_row[f"centroid_{a}_mm"] for a in "xyz"] == pytest.approx([1.25, 9.0, 3.0])
    assert [pred_row[f"centroid_{a}_mm"] for a in "xyz"] == pytest.approx([5.0, 21.0, 15.0])
    assert list(ref_row) == list(lesions.LESION_INSTANCE_COLUMNS)


def test_inputs_are_not_modified_and_memory_order_does_not_matter(rng):
    ref = rng.random((20, 18, 16)) > 0.7
    pred = rng.random((20, 18, 16)) > 0.7
    ref_copy, pred_copy = ref.copy(), pred.copy()
    c_order = lesion_metrics(ref, pred, spacing_mm=UNIT).summary()
    f_order = lesion_metrics(np.asfortranarray(ref), np.asfortranarray(pred),
                             spacing_mm=UNIT).summary()
    assert np.array_equal(ref, ref_copy) and np.array_equal(pred, pred_copy)
    assert all(_nan_equal(c_order[k], f_order[k]) for k in c_order)
    c_rows = lesion_metrics(ref, pred, spacing_mm=UNIT).instances()
    f_rows = lesion_metrics(np.asfortranarray(ref), pred, spacing_mm=UNIT).instances()
    assert [r["lesion_id"] for r in c_rows] == [r["lesion_id"] for r in f_rows]
    assert [r["centroid_x_mm"] for r in c_rows] == pytest.approx([r["centroid_x_mm"] for r in f_rows])


def test_ids_volumes_and_centroids_equal_scipy(rng):
    # scipy.ndimage.label numbers components in C raster order of their first voxel, the
    # documented id order; center_of_mass gives voxel-index centroids.
    ref = _random_lesions(rng, (30, 26, 22), 6)
    ref[0:2, 0:2, 0:2] = True  # a lesion at the volume's corner: the crop offset is zero
    spacing = (0.7, 0.9, 2.5)
    labels, n = ndimage.label(ref, structure=np.ones((3, 3, 3)))
    rows = lesion_metrics(ref, np.zeros_like(ref), spacing_mm=spacing).instances()
    assert [r["lesion_id"] for r in rows] == list(range(1, n + 1))
    counts = ndimage.sum_labels(np.ones_like(labels), labels, range(1, n + 1))
    assert [r["volume_ml"] for r in rows] == pytest.approx(counts * 0.7 * 0.9 * 2.5 / 1000)
    centroids = np.array(ndimage.center_of_mass(ref, labels, range(1, n + 1))) * spacing
    ours = np.array([[r[f"centroid_{a}_mm"] for a in "xyz"] for r in rows])
    np.testing.assert_allclose(ours, centroids, rtol=0, atol=1e-9)


def test_rules_have_no_default():
    """One place for the rules: the challenge definition, not the function's signature."""
    mask = np.zeros((4, 4, 4), bool)
    with pytest.raises(TypeError, match="connectivity.*iou_threshold.*match"):
        _lesion_metrics(mask, mask, spacing_mm=UNIT)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(reference=np.zeros((4, 4, 4), np.uint8)), InputError, "reference must be a 3-D boolean"),
        (dict(prediction=np.zeros((4, 4), bool)), InputError, "prediction must be a 3-D boolean"),
        (dict(prediction=np.zeros((4, 4, 5), bool)), InputError, r"shape \(4, 4, 4\) and prediction"),
        (dict(spacing_mm=(1.0, 0.0, 1.0)), InputError, "spacing_mm must be 3 positive"),
        (dict(connectivity=8), ConfigError, r"connectivity must be one of \[6, 18, 26\], got 8"),
        (dict(connectivity=26.0), ConfigError, r"connectivity must be one of \[6, 18, 26\], got 26\.0"),
        (dict(match="dice"), ConfigError, "match must be one of"),
        (dict(iou_threshold=1.0), ConfigError, r"iou_threshold must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_raise_named_errors(kwargs, error, match):
    args = dict(reference=np.zeros((4, 4, 4), bool), prediction=np.zeros((4, 4, 4), bool),
                spacing_mm=UNIT)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        lesion_metrics(args.pop("reference"), args.pop("prediction"), **args)


# --- random cases: brute-force matching oracle and panoptica ------------------------------

def _random_lesions(rng, shape, n, radius_range=(1.5, 4.0)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    grid = np.indices(shape)
    for _ in range(n):
        center = [rng.uniform(3, s - 3) for s in shape]
        radii = rng.uniform(*radius_range, size=3)
        mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0
    return mask


def _perturb(rng, ref: np.ndarray) -> np.ndarray:
    """A plausible prediction: shifted, dilated or eroded, a lesion dropped, false ones added."""
    pred = np.roll(ref, tuple(int(v) for v in rng.integers(-1, 2, size=3)), axis=(0, 1, 2))
    op = rng.integers(3)
    if op == 1:
        pred = ndimage.binary_dilation(pred)
    elif op == 2:
        pred = ndimage.binary_erosion(pred)
    labels, n = ndimage.label(pred, structure=np.ones((3, 3, 3)))
    if n > 1:
        pred[labels == rng.integers(1, n + 1)] = False
    return pred | _random_lesions(rng, ref.shape, int(rng.integers(0, 3)), (1.0, 2.5))


def _brute_force_best(ref: np.ndarray, pred: np.ndarray, threshold: float) -> tuple[int, float]:
    """Largest number of one-to-one pairs with IoU > threshold, then largest IoU sum (scipy labels)."""
    structure = np.ones((3, 3, 3))
    ref_l, n_ref = ndimage.label(ref, structure=structure)
    pred_l, n_pred = ndimage.label(pred, structure=structure)
    iou = {}
    for i in range(1, n_ref + 1):
        a = ref_l == i
        for j in range(1, n_pred + 1):
            b = pred_l == j
            value = (a & b).sum() / (a | b).sum()
            if value > threshold:
                iou[i, j] = value
    best = (0, 0.0)
    pairs = list(iou)
    for k in range(1, min(n_ref, n_pred, len(pairs)) + 1):
        for subset in itertools.combinations(pairs, k):
            if len({p[0] for p in subset}) == k and len({p[1] for p in subset}) == k:
                best = max(best, (k, sum(iou[p] for p in subset)))
    return best


def _staggered_segments(rng, length: int = 40) -> np.ndarray:
    """Runs of 2-8 voxels with 1-3 voxel gaps along a 2x2 tube: overlaps chain across lesions."""
    mask = np.zeros((length, 2, 2), dtype=bool)
    x = int(rng.integers(0, 3))
    while x < length:
        run = int(rng.integers(2, 9))
        mask[x:x + run] = True
        x += run + int(rng.integers(1, 4))
    return mask


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("mode", [("iou", 0.1), ("overlap", 0.0)], ids=["iou>0.1", "overlap"])
def test_low_threshold_matching_is_optimal_one_to_one(seed, mode):
    # Independent staggered runs: most predicted lesions overlap two reference lesions, so
    # candidate pairs conflict and the one-to-one choice matters.
    rng = np.random.default_rng(1000 + seed)
    ref, pred = _staggered_segments(rng), _staggered_segments(rng)
    match, threshold = mode
    result = lesion_metrics(ref, pred, spacing_mm=UNIT, match=match, iou_threshold=threshold)
    n_best, iou_sum_best = _brute_force_best(ref, pred, threshold)
    assert result.tp == n_best
    assert result.match_iou.sum() == pytest.approx(iou_sum_best)
    assert len(set(result.matches[:, 0])) == len(set(result.matches[:, 1])) == result.tp


def test_overlap_mode_prefers_more_matches_to_one_greedy_best_pair():
    # Tube along x. ref A = [2:12), B = [13:17); pred Y = [0:3), X = [4:14).
    # IoU(A, X) = 8/12, IoU(A, Y) = 1/12, IoU(B, X) = 1/13. Greedy by IoU would keep A-X only
    # (tp 1); the most one-to-one pairs are A-Y and B-X (tp 2, fp 0, fn 0).
    ref = _box((20, 2, 2), slice(2, 12), slice(13, 17))
    pred = _box((20, 2, 2), slice(0, 3), slice(4, 14))
    result = lesion_metrics(ref, pred, spacing_mm=UNIT, match="overlap")
    assert result.matches.tolist() == [[1, 1], [2, 2]]  # ids in raster order: A=1, B=2; Y=1, X=2
    assert result.match_iou.tolist() == pytest.approx([1 / 12, 1 / 13])
    assert (result.tp, result.fp, result.fn) == (2, 0, 0)
    # PQ = (1/12 + 1/13) / 2
    assert result.pq == pytest.approx((1 / 12 + 1 / 13) / 2)
    # at the default IoU > 0.5 only A-X qualifies
    assert lesion_metrics(ref, pred, spacing_mm=UNIT).matches.tolist() == [[1, 2]]


def _panoptica(ref: np.ndarray, pred: np.ndarray, spacing_mm):
    panoptica = require_module("panoptica")
    panoptica.disable_citation_reminder()
    evaluator = panoptica.Panoptica_Evaluator(
        expected_input=panoptica.InputType.SEMANTIC,
        instance_approximator=panoptica.ConnectedComponentsInstanceApproximator(
            panoptica.CCABackend.cc3d),  # cc3d's default connectivity: 26
        instance_matcher=panoptica.NaiveThresholdMatching(
            panoptica.Metric.IOU, 0.5, strict_threshold=True),
        instance_metrics=[panoptica.Metric.IOU],
        global_metrics=[panoptica.Metric.DSC],
    )
    return evaluator.evaluate(pred.astype(np.uint8), ref.astype(np.uint8),
                              voxelspacing=tuple(float(s) for s in spacing_mm),
                              verbose=False)["ungrouped"]


def _assert_agrees_with_panoptica(ref, pred, spacing_mm):
    ours = lesion_metrics(ref, pred, spacing_mm=spacing_mm)
    peer = _panoptica(ref, pred, spacing_mm)
    assert (ours.ref_lesions, ours.pred_lesions) == (peer.n_ref_instances, peer.n_pred_instances)
    assert (ours.tp, ours.fp, ours.fn) == (peer.tp, peer.fp, peer.fn)
    assert ours.pq == pytest.approx(peer.pq, abs=1e-12)
    if ours.tp:
        assert ours.sq == pytest.approx(peer.sq, abs=1e-12)
    return ours


@pytest.mark.parametrize("seed", range(8))
def test_random_multi_lesion_cases_agree_with_panoptica(seed):
    rng = np.random.default_rng(seed)
    ref = _random_lesions(rng, (40, 36, 30), int(rng.integers(2, 7)), (2.5, 6.0))
    pred = _perturb(rng, ref)
    ours = _assert_agrees_with_panoptica(ref, pred, (0.8, 0.8, 2.5))
    assert ours.ref_lesions >= 2 and ours.tp >= 1  # the comparison covers real matches


@pytest.mark.shared_data
def test_real_deeplesion_crop_agrees_with_panoptica(shared_data, rng):
    nib = pytest.importorskip("nibabel")
    path = shared_data / "deeplesion-crop" / "labels" / "dl_000015.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    image = nib.load(path)  # non-RAS (P, L, I); used in stored voxel order as the scorer does
    ref = np.asarray(image.dataobj) == 14
    spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
    # prediction: the lesion shifted by one voxel in-plane and eroded, a cut slab splitting
    # off a piece, and two false lesions far from it
    pred = ndimage.binary_erosion(np.roll(ref, 1, axis=0))
    xs = np.flatnonzero(pred.any(axis=(1, 2)))
    pred[xs[0] + (xs[-1] - xs[0]) // 4] = False
    pred[5:9, 5:9, 2:4] = True
    pred[-9:-5, -9:-5, 8:11] = True
    ours = _assert_agrees_with_panoptica(ref, pred, spacing)
    assert ours.ref_lesions == 1 and ours.fp >= 2
    # also the empty prediction and the lesion against itself
    _assert_agrees_with_panoptica(ref, ref, spacing)
    assert lesion_metrics(ref, ref, spacing_mm=spacing).pq == 1.0


def test_a_crop_with_its_origin_gives_the_whole_volume_centroids():
    full = np.zeros((10, 6, 12), bool)
    full[4:6, 2, 7] = True  # voxels x 4 and 5, y 2, z 7
    crop = (slice(3, 8), slice(1, 4), slice(5, 9))
    result = lesion_metrics(full[crop], full[crop], spacing_mm=(1.0, 2.0, 3.0),
                            origin_voxel=(3, 1, 5))
    row = result.instances()[0]
    # centroid (4.5, 2, 7) voxels times spacing (1, 2, 3) mm; 2 voxels of 6 mm^3 = 0.012 ml
    assert (row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"]) == (4.5, 4.0, 21.0)
    assert row["volume_ml"] == pytest.approx(0.012)
