#!/usr/bin/env bash
# The experiment runner on a GPU (docs/gpu.md). On the GPU machine, from the repository root
# (with polars' wheels in .whl/ if the machine lacks polars; about 8 minutes):
#   export OUT=$PWD/gpu-out && mkdir -p "$OUT" && bash benchmarks/experiments_gpu.sh
# Runs experiments/probe.toml (8 short runs on Beauty and Sports) with 4 jobs sharing the GPU,
# then its 4 Beauty runs again one at a time, and prints seconds per epoch and wall times: the
# numbers behind the cost estimate of experiments/table2.toml. Records come back in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
test -d src/famerec/experiments || { echo "no famerec experiments here"; exit 3; }
if [ -d .whl ]; then  # wheels missing on the GPU image (polars), as for benchmarks/gpu.sh
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
rm -rf results/records/probe results/records/probe-j1 runs/probe runs/probe-j1
start=$(date +%s)
python3 -m famerec experiment run experiments/probe.toml --jobs 4 --device cuda 2>&1 | grep -v "^start"
echo "probe: 8 runs, 4 jobs sharing the GPU: $(( $(date +%s) - start )) s wall"
sed 's/^name = "probe"/name = "probe-j1"/' experiments/probe.toml > experiments/probe-j1.toml
start=$(date +%s)
python3 -m famerec experiment run experiments/probe-j1.toml --jobs 1 --device cuda --only 'beauty/*' \
  2>&1 | grep -v "^start"
echo "probe-j1: the 4 Beauty runs, one at a time: $(( $(date +%s) - start )) s wall"
python3 - <<'PY' | tee "$OUT/probe-epochs.md"
import json
from pathlib import Path

print("| spec | run | train s / epoch | eval s / epoch | wall s | threads | jobs | gpu |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
for record in sorted(Path("results/records").glob("probe*/**/record.json")):
    info = json.loads(record.read_text())
    log = [json.loads(line) for line in (record.parent / "log.jsonl").read_text().splitlines()]
    train = sum(r["train_seconds"] for r in log[1:]) / max(len(log) - 1, 1)  # after warm-up
    evaluation = sum(r["eval_seconds"] for r in log) / len(log)
    print(
        f"| {info['spec']} | {info['id']} | {train:.2f} | {evaluation:.2f} | "
        f"{info['wall_seconds']:.0f} | {info['threads']} | {info['jobs']} | "
        f"{info['machine'].get('gpu', '-')} |"
    )
PY
tar czf "$OUT/probe-records.tar.gz" results/records/probe results/records/probe-j1
