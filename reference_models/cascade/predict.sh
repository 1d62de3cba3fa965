#!/bin/sh
# FLARE23 container entry point (the official harness runs `sh predict.sh`, so POSIX sh only):
# /workspace/inputs/<id>_0000.nii.gz -> /workspace/outputs/<id>.nii.gz.
# FLARE_INPUTS / FLARE_OUTPUTS override the folders; arguments (--inputs, --outputs) are passed on.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
exec python3 "$HERE/predict.py" "$@"
