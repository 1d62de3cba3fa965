#!/bin/sh
# The reference cascade's FLARE23 efficiency check on a GPU machine: one full-size case
# (512 x 512 x 128 at 0.8 x 0.8 x 2.5 mm) run through the runner (local backend, GPU memory sampled
# through NVML every 0.1 s), scored, and held to FLARE23's tolerances: under 15 s, under 4 GB.
#   sh benchmarks/cascade_gpu.sh [GPU_INDEX] [WORK_DIR]
# Needs flare-eval[runner], torch with CUDA, bubblewrap and an NVIDIA GPU. Exits 1 when a
# tolerance is missed or the model did not run on the GPU.
set -eu
GPU=${1:-0}
WORK=${2:-/tmp/flare-eval-cascade-gpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK"
flare-eval phantoms --out "$WORK/case" --cases 1 --seed 9100 --shape 512 512 128 --spacing 0.8 0.8 2.5
flare-eval run --backend local --submission "$ROOT/reference_models/cascade" --inputs "$WORK/case/images" \
  --out "$WORK/run" --team cascade --gpu "$GPU" --no-progress
flare-eval score --pred "$WORK/run/cascade/predictions" --gt "$WORK/case/labels" --out "$WORK/score"
python - "$WORK/run/cascade" <<'PY'
import sys
from pathlib import Path

import pandas as pd

team = Path(sys.argv[1])
run = pd.read_csv(team / "runs.csv").iloc[0]
log = (team / "logs" / f"{run['case']}.stdout.txt").read_text()
print(log.strip())
checks = {
    "ran": run["status"] == "ok",
    "on the GPU": "on cuda" in log,
    f"time {run['time_s']:.2f} s < 15 s": run["time_s"] < 15,
    f"peak GPU memory {run['max_gpu_mib']:.0f} MiB < 4096 MiB": run["max_gpu_mib"] < 4096,
}
for name, ok in checks.items():
    print(("ok   " if ok else "FAIL ") + name)
print(f"GPU memory-time area {run['auc_gpu_mibs']:.0f} MiB s over {run['n_gpu_samples']} samples")
sys.exit(0 if all(checks.values()) else 1)
PY
