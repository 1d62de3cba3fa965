#!/bin/sh
# The GPU path of slots on a GPU machine: NVML's GPUs as slots (UUID, name, driver), the
# calibration's GPU workload, and the reference cascade run on every slot with per-slot NVML
# sampling (local backend: the slot's device nodes, CUDA_VISIBLE_DEVICES, taskset), each case's
# runs.csv row naming its slot's GPU by UUID; where the docker engine has the NVIDIA runtime, one
# container given its GPU as --gpus device=<UUID>.
#   sh benchmarks/slots_gpu.sh [WORK_DIR]
# Needs flare-eval[runner], torch with CUDA, bubblewrap and an NVIDIA GPU (two or more show that
# each case samples its own GPU). Exits 1 when a check fails.
set -eu
WORK=${1:-/tmp/flare-eval-slots-gpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK"
mkdir -p "$WORK"
python - <<'PY'
from flare_eval.runner.slots import gpu_inventory, parse_slots
gpus, reason = gpu_inventory()
print("NVML:", reason or [(g.index, g.uuid, g.name, g.driver) for g in gpus])
for s in parse_slots("auto"):
    print(f"slot {s.name}: cores {s.cpuset}, GPU {s.gpu.index} {s.gpu.uuid} {s.gpu.name}, "
          f"{s.memory_mib} MiB RAM share")
PY
flare-eval calibrate --slots auto --out "$WORK/calibration.csv"
N=$(python -c "from flare_eval.runner.slots import parse_slots; print(len(parse_slots('auto')))")
flare-eval phantoms --out "$WORK/cases" --cases "$N" --seed 9200 --shape 512 512 128 --spacing 0.8 0.8 2.5
flare-eval run --backend local --submission "$ROOT/reference_models/cascade" --inputs "$WORK/cases/images" \
  --out "$WORK/run" --team cascade --slots auto --no-progress
python - "$WORK" <<'PY'
import sys
from pathlib import Path

import pandas as pd

from flare_eval.runner.slots import parse_slots

work = Path(sys.argv[1])
slots = {s.name: s for s in parse_slots("auto")}
runs = pd.read_csv(work / "run" / "cascade" / "runs.csv", dtype={"slot": str, "cpuset": str})
calibration = pd.read_csv(work / "calibration.csv", dtype={"slot": str})
print(calibration.to_string(index=False))
print(runs[["case", "status", "time_s", "max_gpu_mib", "slot", "cpuset", "gpu_uuid",
            "gpu_name", "gpu_driver"]].to_string(index=False))
checks = {
    "calibration timed the GPU workload": calibration.loc[
        calibration["workload"] == "gpu", "seconds"].notna().all(),
    "every case ran": (runs["status"] == "ok").all(),
    "each case names its slot's GPU by UUID": all(
        row.gpu_uuid == slots[row.slot].gpu.uuid for row in runs.itertuples()),
    "each case is pinned to its slot's cores": all(
        row.cpuset == slots[row.slot].cpuset for row in runs.itertuples()),
    "each case's own GPU was sampled": (runs["max_gpu_mib"] > 0).all(),
}
for name, ok in checks.items():
    print(("ok   " if ok else "FAIL ") + name)
sys.exit(0 if all(checks.values()) else 1)
PY
if docker info 2>/dev/null | grep -qi nvidia && command -v busybox >/dev/null; then
  # an image without a registry: a busybox-static rootfs, docker import
  mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/dev"
  cp "$(command -v busybox)" "$WORK/rootfs/bin/busybox"
  ln -s busybox "$WORK/rootfs/bin/sh"
  ln -s busybox "$WORK/rootfs/bin/ls"
  tar -C "$WORK/rootfs" -c . | docker import - flare-eval-slots-gpu:latest >/dev/null
  UUID=$(python -c "from flare_eval.runner.slots import parse_slots; print(parse_slots('auto')[0].gpu.uuid)")
  if docker run --rm --gpus "device=$UUID" flare-eval-slots-gpu:latest ls /dev | grep -q nvidia; then
    echo "ok   docker --gpus device=$UUID shows the GPU"
  else
    echo "FAIL docker --gpus device=$UUID"; docker rmi flare-eval-slots-gpu:latest >/dev/null; exit 1
  fi
  docker rmi flare-eval-slots-gpu:latest >/dev/null
else
  echo "note: no docker engine with the NVIDIA runtime (or no busybox); --gpus device=<UUID> not tried"
fi
