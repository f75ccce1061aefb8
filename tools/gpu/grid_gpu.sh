#!/usr/bin/env bash
# As much of an experiment grid as fits in SECONDS on a GPU machine, records back
# (docs/gpu.md). On the GPU machine, from the repository root (with polars' wheels in .whl/ if
# the machine lacks polars):
#   export OUT=$PWD/gpu-out && mkdir -p "$OUT" && bash tools/gpu/grid_gpu.sh experiments/table2.toml 6 480
# Arguments: SPEC, JOBS sharing the GPU (default 6), SECONDS before the runner is interrupted
# (default 480; it stops its jobs cleanly), and an optional --only PATTERN ('beauty/*').
# Finished runs' records come back in $OUT/records.tar.gz: unpack them at the repository root
# (`tar xzf records.tar.gz`), check `famerec experiment status SPEC`, and commit them; the next
# sitting, here or on a GPU, skips them. Runs cut off by the time limit start over next time.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
SPEC=${1:?usage: grid_gpu.sh SPEC [JOBS] [SECONDS] [PATTERN]}
JOBS=${2:-6}
SECONDS_LEFT=${3:-480}
ONLY=${4:-}
if [ -d .whl ]; then  # wheels missing on the GPU image (polars), as for benchmarks/gpu.sh
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
name=$(python3 -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['name'])" "$SPEC")
before=$(find "results/records/$name" -name record.json 2>/dev/null | wc -l)
start=$(date +%s)
timeout --signal=INT --kill-after=60 "$SECONDS_LEFT" python3 -m famerec experiment run "$SPEC" \
  --jobs "$JOBS" --device cuda --time-limit "$((SECONDS_LEFT - 10))" ${ONLY:+--only "$ONLY"} 2>&1 |
  grep -v "^start"
after=$(find "results/records/$name" -name record.json 2>/dev/null | wc -l)
echo "$name: $((after - before)) runs finished in $(( $(date +%s) - start )) s wall, $JOBS jobs"
python3 -m famerec experiment status "$SPEC" 2>&1 | head -5
tar czf "$OUT/records.tar.gz" "results/records/$name" 2>/dev/null && echo "records: $OUT/records.tar.gz"
