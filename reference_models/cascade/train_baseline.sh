#!/bin/sh
# Reproduce the shipped smoke-test weights (about 1.6 hours on a 2-core machine).
# Usage: sh train_baseline.sh OUT_DIR [SHARED_DATA_DIR]
#   OUT_DIR receives the phantoms (OUT_DIR/phantoms) and the weights (OUT_DIR/weights).
# The pieced schedule (--stop-after, then --resume with other --steps) is how the shipped weights
# were made on a shared 2-core machine: the organ schedule was re-planned three times mid-run to fit
# the CPU time left. Checkpoints hold the sampler and torch RNG states, so the pieces are exact.
# Two fine-tuning runs follow (--init: the weights so far, a fresh optimiser at a lower rate, two
# threads): they lifted the adrenal glands and lesions, which the first schedule never predicted.
set -eu
OUT=${1:?usage: sh train_baseline.sh OUT_DIR [SHARED_DATA_DIR]}
DATA=${2:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data}
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
flare-eval phantoms --out "$OUT/phantoms" --cases 20 --seed 0
set -- --dataset "$OUT/phantoms" --dataset "$DATA/totalseg-example" --dataset-weights 4 1 \
  --annotations annotated_classes.totalseg-example.json --out "$OUT/weights" --threads 1
python -m cascade_model.training --stage organs --steps 1200 --stop-after 650 "$@"
python -m cascade_model.training --stage roi --steps 300 "$@"
python -m cascade_model.training --stage organs --steps 2000 --resume --stop-after 800 "$@"
python -m cascade_model.training --stage roi --steps 800 --resume "$@"
python -m cascade_model.training --stage organs --steps 1500 --resume --stop-after 1300 "$@"
python -m cascade_model.training --stage organs --steps 2600 --resume "$@"
python -m cascade_model.training --stage organs --steps 2000 --lr 1e-3 --init "$OUT/weights/organs.pt" "$@" --threads 2
python -m cascade_model.training --stage organs --steps 4000 --lr 1e-3 --init "$OUT/weights/organs.pt" "$@" --threads 2
