"""Lesion instance metrics on a full-size case: flare-eval against panoptica, same run.

Run: ``python benchmarks/bench_lesions.py``. Builds a 512x512x200 case (0.8x0.8x2.5 mm) with
eight ellipsoid lesions (radii 4-20 mm), and a prediction that shifts each by up to a voxel and rescales it by 0.9-1.05, misses
one and adds two false ones. Both tools use 26-connectivity and IoU > 0.5; the
script checks they agree on tp, fp, fn and PQ, then prints the median of a few timed runs of
each and the speed-up ratio (the whole call: cropping, labelling, matching, metrics); also
flare-eval on Fortran-ordered masks, as the scorer gets them from nibabel.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

from flare_eval.metrics.lesions import lesion_metrics
from flare_eval.presets import FLARE23

SHAPE = (512, 512, 200)
SPACING_MM = (0.8, 0.8, 2.5)
REPEATS = 3
#: FLARE23's lesion rules (26-connectivity, IoU > 0.5), the ones panoptica is run with
RULES = dataclasses.asdict(FLARE23.lesions)


def _ellipsoid(volume: np.ndarray, center: tuple[int, int, int], radii_mm: tuple[float, ...]) -> None:
    """Set an axis-aligned ellipsoid in place, touching only its bounding box."""
    radii = [r / s for r, s in zip(radii_mm, SPACING_MM)]
    box = tuple(slice(max(0, int(c - r) - 1), int(c + r) + 2) for c, r in zip(center, radii))
    grids = np.ogrid[box]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0
    volume[box] |= inside


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = np.zeros(SHAPE, dtype=bool)
    prediction = np.zeros(SHAPE, dtype=bool)
    for index in range(8):
        center = (int(rng.integers(100, 412)), int(rng.integers(100, 412)), int(rng.integers(30, 170)))
        radii = tuple(rng.uniform(4.0, 20.0, size=3))
        _ellipsoid(reference, center, radii)
        if index == 0:
            continue  # a missed lesion
        shift = tuple(int(v) for v in rng.integers(-1, 2, size=3))
        scale = rng.uniform(0.9, 1.05)
        _ellipsoid(prediction, tuple(c + d for c, d in zip(center, shift)), tuple(r * scale for r in radii))
    for _ in range(2):  # false positives
        center = (int(rng.integers(100, 412)), int(rng.integers(100, 412)), int(rng.integers(30, 170)))
        _ellipsoid(prediction, center, (5.0, 5.0, 5.0))
    return reference, prediction


def run_panoptica(reference: np.ndarray, prediction: np.ndarray):
    from panoptica import (
        CCABackend, ConnectedComponentsInstanceApproximator, InputType, Metric,
        NaiveThresholdMatching, Panoptica_Evaluator,
    )

    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(CCABackend.cc3d),
        instance_matcher=NaiveThresholdMatching(Metric.IOU, 0.5, strict_threshold=True),
        instance_metrics=[Metric.IOU], global_metrics=[Metric.DSC],
    )
    result = evaluator.evaluate(prediction.astype(np.uint8), reference.astype(np.uint8),
                                voxelspacing=SPACING_MM, verbose=False)
    return result["ungrouped"]


def _median_time(func) -> tuple[float, object]:
    times, out = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    import panoptica

    panoptica.disable_citation_reminder()
    reference, prediction = make_case()
    ours_s, ours = _median_time(lambda: lesion_metrics(reference, prediction, spacing_mm=SPACING_MM, **RULES))
    # Fortran order, as nibabel hands arrays to the scorer (panoptica gets its faster C order).
    ref_f, pred_f = np.asfortranarray(reference), np.asfortranarray(prediction)
    ours_f_s, _ = _median_time(lambda: lesion_metrics(ref_f, pred_f, spacing_mm=SPACING_MM, **RULES))
    peer_s, peer = _median_time(lambda: run_panoptica(reference, prediction))
    same = (ours.tp, ours.fp, ours.fn) == (peer.tp, peer.fp, peer.fn) and np.isclose(ours.pq, peer.pq)
    print(f"case {SHAPE} at {SPACING_MM} mm: {ours.ref_lesions} reference, {ours.pred_lesions} "
          f"predicted lesions; tp/fp/fn {ours.tp}/{ours.fp}/{ours.fn}, PQ {ours.pq:.4f} "
          f"(panoptica {peer.tp}/{peer.fp}/{peer.fn}, PQ {peer.pq:.4f}: "
          f"{'agree' if same else 'DISAGREE'})")
    print(f"flare-eval lesion_metrics: {ours_s:.3f} s   panoptica 2.x: {peer_s:.3f} s   "
          f"(median of {REPEATS})")
    print(f"flare-eval on Fortran-ordered masks (as read by nibabel): {ours_f_s:.3f} s")
    print(f"speed-up vs panoptica: {peer_s / ours_s:.1f}x (Fortran-ordered: {peer_s / ours_f_s:.1f}x)")
    if not same:
        raise SystemExit("flare-eval and panoptica disagree")


if __name__ == "__main__":
    main()
