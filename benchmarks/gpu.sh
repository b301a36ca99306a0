#!/usr/bin/env bash
# The prepared accelerator check: the gpu-marked tests, then the ML-20M-shape benchmark of wals2's exact and
# fastest solver at k = 64 and 128 on the device, printing the side-by-side table last.
#
#   bash benchmarks/gpu.sh            # on a one-GPU machine (about 8 minutes)
#   bash benchmarks/gpu.sh --device cpu   # the same command on the CPU (no GPU needed; slower at k = 128)
#
# The JSON lines go to benchmarks/results/<timestamp>.jsonl (benchmarks.run writes them there).
set -euo pipefail
cd "$(dirname "$0")/.."
device=gpu
if [[ ${1:-} == --device ]]; then
  device=${2:?--device needs gpu or cpu}
fi
export TF_CPP_MIN_LOG_LEVEL=2
DEVICE=$device python - <<'PY'
import os
import sys

import tensorflow as tf

gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
print("visible GPUs:", gpus or "none")
if os.environ["DEVICE"] == "gpu" and not gpus:
    sys.exit("benchmarks/gpu.sh: TensorFlow sees no GPU; install its CUDA build (pip install 'tensorflow[and-cuda]') "
             "or pass --device cpu")
PY
python -m pytest -q -m gpu tests -p no:cacheprovider  # skipped with their reason with --device cpu
python -m benchmarks.run --shapes ml-20m --factors 64 128 --systems wals2-cholesky wals2-cg --sweeps 3 \
  --device "$device" --timeout 400
