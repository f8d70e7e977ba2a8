#!/usr/bin/env bash
# The prepared GPU check (one NVIDIA GPU, under 10 minutes): the GPU unit tests (tiny engine: profiles,
# padding, CUDA graphs across profiles, INT8 layers), then scripts/gpu_check.py on MiniLM and a
# BERT-base-shaped model (accuracy vs float, INT8 GEMMs and fused attention from the layer report,
# INT8 vs FP16 latency table and plot). Exits non-zero on any failure; results in ${OUTPUT:-gpu_check}/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUTPUT=${OUTPUT:-gpu_check}
"$PYTHON" -c "from trt_quant.runtime.trt import tensorrt_usable; import sys; sys.exit(0 if tensorrt_usable() else 2)" \
  || { echo "gpu_check.sh: TensorRT or a CUDA GPU is not usable here (pip install '.[gpu]')" >&2; exit 2; }
"$PYTHON" -m pytest -m gpu tests/test_gpu.py -q -rs -p no:cacheprovider
"$PYTHON" scripts/gpu_check.py --output "$OUTPUT" "$@"
