#!/bin/sh
# The GPU path of slots on a GPU machine, self-checking: the GPU given by UUID to a slot beside a
# CPU-only slot, calibration with the GPU workload, the reference cascade on both slots with NVML
# sampling of the slot's GPU only (device-wide and per process), gpu_check.py, the fleet's
# calibration on slot workers (FLARE_EVAL_SLOT=UUID:cores), and, where the docker engine has the
# NVIDIA runtime, the runner's --gpus device=UUID. One PASS/FAIL/SKIP line per check, and the
# figures; exits 1 when a check fails. About 3 minutes on one H200 with 16 cores; run it in the
# same session as benchmarks/cascade_gpu.sh:
#   sh benchmarks/cascade_gpu.sh && sh benchmarks/slots_gpu.sh [WORK_DIR]
# Needs flare-eval[all], torch with CUDA, nvidia-ml-py, bubblewrap and an NVIDIA GPU (without one
# it prints one SKIP line and exits 0). The steps are described in benchmarks/slots_gpu.py.
set -eu
exec python "$(cd "$(dirname "$0")" && pwd)/slots_gpu.py" "${1:-/tmp/flare-eval-slots-gpu}"
