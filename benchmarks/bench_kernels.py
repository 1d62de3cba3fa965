"""Two hand-written kernels of case scoring against the plain numpy they replace.

- HD95: :func:`flare_eval.metrics.surface.robust_hausdorff` sums the surfel areas in the order the
probing found (``SurfaceDistances.order_*``, a radix sort of 16-bit length ranks) instead of
``np.argsort(distances, kind="stable")`` of every surfel;
- the bounding box of a whole volume: :func:`flare_eval.metrics.boxes.bounding_box` reads the
  first axis from both ends inwards, eight bytes a word, against two max-projections.

On the cached full-size cases of ``bench_scoring.py`` this checks that both sides agree (the
orders element for element, HD95 to the bit, the boxes) and prints the milliseconds per case,
the fastest of five runs each.

Run: ``python benchmarks/bench_kernels.py [--cases 5]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from flare_eval.io import read_label
from flare_eval.metrics.boxes import bounding_box, union_box
from flare_eval.metrics.flare import label_boxes
from flare_eval.metrics.surface import robust_hausdorff, surface_distances_of_view

from bench_scoring import CACHE, cached_cases


def by_definition(distances: np.ndarray, areas: np.ndarray, percent: float = 95.0) -> float:
    """One direction's percentile as DeepMind's definition reads: a full stable sort first."""
    if distances.size == 0:
        return float("inf")
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(areas[order]) / areas.sum()
    return float(distances[order][min(int(np.searchsorted(cumulative, percent / 100.0)), distances.size - 1)])


def two_projections(volume: np.ndarray) -> tuple[slice, ...] | None:
    """A C-ordered volume's box from a max over its rows, then over the rows in the box."""
    outer = np.flatnonzero(volume.reshape(volume.shape[0], -1).max(axis=1))
    if outer.size == 0:
        return None
    plane = volume[outer[0]:outer[-1] + 1].max(axis=0)
    rows, cols = np.flatnonzero(plane.max(axis=1)), np.flatnonzero(plane.max(axis=0))
    return (slice(int(outer[0]), int(outer[-1]) + 1), slice(int(rows[0]), int(rows[-1]) + 1),
            slice(int(cols[0]), int(cols[-1]) + 1))


def fastest(run, times: int = 5) -> float:
    """Seconds of the fastest of ``times`` calls (the machine may be shared)."""
    best = float("inf")
    for _ in range(times):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5)
    args = parser.parse_args()
    ours = definition = box_ours = box_plain = 0.0
    pairs = 0
    for name in cached_cases(args.cases):
        ref, pred = read_label(CACHE / "labels" / name), read_label(CACHE / "pred" / name)
        for volume in (ref.data.T, pred.data.T):  # nibabel's Fortran arrays, C-ordered views
            if bounding_box(volume) != two_projections(volume):
                raise SystemExit(f"{name}: the boxes differ")
            box_ours += fastest(lambda: bounding_box(volume))
            box_plain += fastest(lambda: two_projections(volume))
        boxes = label_boxes(ref.data, pred.data, max_label=14)
        for k in range(14):
            r_box, p_box = boxes.reference_boxes[k], boxes.prediction_boxes[k]
            if r_box is None or p_box is None:
                continue
            box = union_box(r_box, p_box)
            sd = surface_distances_of_view(boxes.reference[box] == k + 1, boxes.prediction[box] == k + 1,
                                           spacing_mm=ref.spacing_mm, reversed_axes=boxes.reversed_axes)
            for order, dist in ((sd.order_ref_to_pred, sd.distances_ref_to_pred_mm),
                                (sd.order_pred_to_ref, sd.distances_pred_to_ref_mm)):
                if not np.array_equal(order, np.argsort(dist, kind="stable")):
                    raise SystemExit(f"{name} class {k + 1}: the stored order is not the stable sort")
            value = robust_hausdorff(sd)
            expected = max(by_definition(sd.distances_ref_to_pred_mm, sd.surfel_areas_ref_mm2),
                           by_definition(sd.distances_pred_to_ref_mm, sd.surfel_areas_pred_mm2))
            if value != expected:
                raise SystemExit(f"{name} class {k + 1}: HD95 {value!r} != {expected!r}")
            best = [fastest(lambda: robust_hausdorff(sd)), fastest(lambda: max(
                by_definition(sd.distances_ref_to_pred_mm, sd.surfel_areas_ref_mm2),
                by_definition(sd.distances_pred_to_ref_mm, sd.surfel_areas_pred_mm2)))]
            ours, definition, pairs = ours + best[0], definition + best[1], pairs + 1
    n = args.cases
    print(f"{pairs} class pairs of {n} cases, equal to the bit; HD95 per case: stored order "
          f"{1000 * ours / n:.1f} ms, full stable sort {1000 * definition / n:.1f} ms "
          f"({definition / ours:.1f}x)")
    print(f"bounding boxes of both volumes per case, equal: ends inwards in words "
          f"{1000 * box_ours / n:.1f} ms, two max-projections {1000 * box_plain / n:.1f} ms "
          f"({box_plain / box_ours:.1f}x)")
    print(f"load average {os.getloadavg()[0]:.2f} (2-core machine)")


if __name__ == "__main__":
    main()
