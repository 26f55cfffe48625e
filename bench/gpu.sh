#!/usr/bin/env bash
# GPU benchmark at SD1.5 (512 px) and SDXL (1024 px) size, random weights, no download, for one CUDA GPU.
# --backbone sd15|sdxl|flux|all (default all: sd15 and sdxl; flux on its own, bf16 and nf4); gpu.json is rewritten
# after each backbone, so a cut run keeps the first.
# Needs torch with CUDA, diffusers, transformers, bitsandbytes, safetensors. On a machine without a
# package registry, put wheels in bench/gpu-wheels/ (pip download -d bench/gpu-wheels diffusers
# bitsandbytes) and they are installed from there first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d bench/gpu-wheels ]; then
  $PY -m pip install -q --no-index --find-links bench/gpu-wheels diffusers bitsandbytes || true
fi
$PY -c "import diffusers, bitsandbytes, transformers" || { echo "missing packages: see the header of bench/gpu.sh" >&2; exit 2; }
exec $PY -m bench.gpu_bench --out "${OUT:-bench/results}" "$@"
