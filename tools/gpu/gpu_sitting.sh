#!/usr/bin/env bash
# Several experiment specs at once on a GPU machine, records back (docs/gpu.md). On the GPU
# machine, from the repository root, with the run directories the specs start from copied there
# first (here runs/fame_beauty/beauty/sasrec):
#   export OUT=$PWD/gpu-out && mkdir -p "$OUT"
#   bash tools/gpu/gpu_sitting.sh 450 fp32 experiments/fame_beauty.toml:6:0-7 \
#       experiments/fame_toys.toml:4:8-11
# Arguments: SECONDS before every runner is interrupted (they stop their jobs cleanly; 10 s
# before, their --time-limit has their runs pause between epochs, so none is cut short), the
# --precision of every run (auto = bf16 autocast on CUDA; fp32 matches CPU records), then
# SPEC:JOBS:CORES per spec. Each runner is pinned to its CPU cores (taskset), so its jobs get
# cores / jobs threads and the runners do not slow each other down on the CPU.
# Back in $OUT: sitting.log, records.tar.gz (the finished runs' records of every spec: unpack
# at the repository root, check `famerec experiment status SPEC`, regenerate the report and
# commit) and back.tar.gz.part-aa, -ab, ... (parts of at most 15 MiB; BACK_MB, default 56 MiB
# per spec, in all): first the weights that later runs start from (per dataset, model, hidden
# size and seed, the best finished run whose id matches WEIGHTS, space-separated patterns; by
# default the runs the spec's other entries start from, e.g. '*/sasrec-init/*'), then
# the runs cut off by the time limit whose id matches RESUME (default '*'), most trained first,
# with their checkpoints and logs (`carry_runs.py pick`). `cat back.tar.gz.part-* | tar xzf -`
# at the repository root puts them in runs/, and the next sitting, here or on the CPU, resumes
# them after their last GPU epoch (checkpoints load onto the device of the run that resumes
# them). ONLY (space-separated run-id patterns, e.g. '*/sasrec/* */fame/*') limits every
# runner to those runs (`famerec experiment run --only`). MPS=1 starts the card's
# Multi-Process Service for the sitting (see below). The machine needs no polars:
# reading the bundled datasets does not import it.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
SECONDS_LEFT=${1:?usage: gpu_sitting.sh SECONDS PRECISION SPEC:JOBS:CORES...}
PRECISION=${2:?precision: auto, fp32 or bf16}
shift 2
weights=()
[ -z "${WEIGHTS:-}" ] || weights=(--weights "$WEIGHTS")
RESUME=${RESUME:-*}
BACK_MB=${BACK_MB:-56}
only=()
set -f  # the patterns are for the runner, not the shell
for pattern in ${ONLY:-}; do only+=(--only "$pattern"); done
set +f
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
LOG=$OUT/sitting.log
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
  python3 -c "import torch; print('torch', torch.__version__)"
} >>"$LOG" 2>&1
# MPS=1: the card's Multi-Process Service, so that the runs' kernels share the card at once
# instead of taking turns (untried here: time a sitting with and without it before relying on it).
# Where the service starts but then refuses the runs, they fail: the log shows it.
if [ "${MPS:-0}" = 1 ]; then
  if nvidia-cuda-mps-control -d >>"$LOG" 2>&1; then
    trap 'echo quit | nvidia-cuda-mps-control' EXIT
    echo "MPS on" >>"$LOG"
  else
    echo "MPS could not start; the runs take turns on the card" >>"$LOG"
  fi
fi
start=$(date +%s)
names=()
folders=()
specs=()
for item in "$@"; do
  IFS=: read -r spec jobs cores <<<"$item"
  # the spec's name and records folder (results/records/<name>, or the one `records` names)
  IFS=$'\t' read -r name records < <(python3 -c "import os, sys; from famerec.experiments \
import load_spec; s = load_spec(sys.argv[1]); print(s.name, os.path.relpath(s.records_dir), \
sep='\t')" "$spec")
  names+=("$name")
  folders+=("$records")
  specs+=("$spec")
  timeout --signal=INT --kill-after=60 "$SECONDS_LEFT" taskset -c "$cores" python3 -m famerec \
    experiment run "$spec" --jobs "$jobs" --device "${DEVICE:-cuda}" --precision "$PRECISION" \
    --time-limit "$((SECONDS_LEFT - 10))" "${only[@]}" >"$OUT/$name.log" 2>&1 &
done
wait
for i in "${!names[@]}"; do
  name=${names[$i]}
  grep -v "^start" "$OUT/$name.log" | tail -n 40 >>"$LOG"
  rm -f "$OUT/$name.log"
  echo "$name: $(find "${folders[$i]}" -name record.json 2>/dev/null | wc -l) records" >>"$LOG"
done
echo "wall $(($(date +%s) - start)) s" >>"$LOG"
tar czf "$OUT/records.tar.gz" $(printf '%s\n' "${folders[@]}" | sort -u) 2>>"$LOG"
# What later runs start from, then the unfinished runs, within BACK_MB per spec.
for spec in "${specs[@]}"; do
  python3 tools/carry_runs.py --pattern "$RESUME" "${weights[@]}" \
    --budget-mb "$BACK_MB" pick "$spec" >>"$OUT/back.txt" 2>>"$LOG"
done
if [ -s "$OUT/back.txt" ]; then
  tar czf - -T "$OUT/back.txt" | split -b 15M - "$OUT/back.tar.gz.part-"
  echo "back: $(grep -c . "$OUT/back.txt") files of $(sed -n 's|/[^/]*$||p' "$OUT/back.txt" | sort -u | wc -l) runs" >>"$LOG"
  sed -n 's|/checkpoint.pt$||p' "$OUT/back.txt" | sed 's/^/  unfinished: /' >>"$LOG"
  files=$(find "$OUT" -maxdepth 1 -type f ! -name back.txt | wc -l)
  [ "$files" -le 8 ] || echo "warning: $files files in \$OUT, only 8 come back: lower BACK_MB" >>"$LOG"
fi
rm -f "$OUT/back.txt"
cat "$LOG"
