"""Segment every ``<id>_0000.nii.gz`` of an input folder into ``<id>.nii.gz`` of an output folder.

The FLARE23 container contract: defaults ``/workspace/inputs`` -> ``/workspace/outputs``,
overridable by ``--inputs/--outputs`` or the ``FLARE_INPUTS``/``FLARE_OUTPUTS`` environment
variables (arguments win).  Outputs are uint8 with the input's exact shape and affine, whatever
its orientation.  Uses the GPU (fp16) when one is visible, the CPU otherwise.  The model is loaded
once while the first scan is read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # cascade_model lives beside this script, also when run from elsewhere

from cascade_model.inference import CascadePredictor  # noqa: E402
from cascade_model.volume import read_canonical, to_stored_order, write_label_like  # noqa: E402

__all__ = ["main"]

SUFFIX = "_0000.nii.gz"


def main(argv: list[str] | None = None) -> int:
    """Run the cascade over a folder; returns the number of cases that failed (0 on success)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, default=Path(os.environ.get("FLARE_INPUTS", "/workspace/inputs")))
    parser.add_argument("--outputs", type=Path, default=Path(os.environ.get("FLARE_OUTPUTS", "/workspace/outputs")))
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("FLARE_WEIGHTS", HERE / "weights")))
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    args = parser.parse_args(argv)
    cases = sorted(args.inputs.glob(f"*{SUFFIX}"))
    if not cases:
        print(f"predict.py: no *{SUFFIX} files in {args.inputs}", file=sys.stderr)
        return 1
    args.outputs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=1) as reader:
        # overlap reading (gzip inflation) with model loading and with the previous case
        pending = reader.submit(read_canonical, cases[0])
        predictor = CascadePredictor(args.weights, device=args.device)
        failed = 0
        for index, path in enumerate(cases):
            start = time.perf_counter()
            case_id = path.name[: -len(SUFFIX)]
            current = pending
            if index + 1 < len(cases):
                pending = reader.submit(read_canonical, cases[index + 1])
            try:
                volume = current.result()
                label = predictor.predict(volume.data, volume.spacing_mm)
                write_label_like(args.outputs / f"{case_id}.nii.gz", to_stored_order(label, volume), volume.source)
            except Exception:  # a broken case fails alone; the others still get predictions
                traceback.print_exc()
                print(f"{case_id}: FAILED ({path})", file=sys.stderr, flush=True)
                failed += 1
                continue
            print(f"{case_id}: {time.perf_counter() - start:.2f} s on {predictor.device}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
