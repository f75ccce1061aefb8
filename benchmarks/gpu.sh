#!/usr/bin/env bash
# GPU checks on a machine with an H100/H200 (docs/gpu.md). On the GPU machine, from the
# repository root (with polars' wheels in .whl/ if the machine lacks polars; about 9 minutes):
#   export OUT=$PWD/gpu-out && mkdir -p "$OUT" && bash benchmarks/gpu.sh
# Prints the speed table on CUDA and a timed Beauty FAME run (SASRec pretraining + fine-tuning
# to early stop, --device auto => bf16 autocast, tensors on the GPU).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then  # wheels of packages missing on the GPU image (polars, safetensors, ...)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, famerec; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
python3 benchmarks/speed.py --device cuda --quick 2>&1 | tee "$OUT/speed-cuda.md"
start=$(date +%s)
python3 -m famerec train --model fame --pretrain --dataset beauty --device auto \
  --out "$OUT/fame-beauty" 2>&1 | grep -v "^famerec: epoch" | tee "$OUT/fame-beauty.txt"
echo "Beauty FAME with SASRec pretraining, to early stop: $(( $(date +%s) - start )) s wall"
cp "$OUT/fame-beauty/metrics.json" "$OUT/fame-metrics.json" 2>/dev/null
cp "$OUT/fame-beauty/pretrain/metrics.json" "$OUT/sasrec-metrics.json" 2>/dev/null
