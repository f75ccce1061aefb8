#!/usr/bin/env bash
# Several experiment specs at once on a GPU machine, records back (docs/gpu.md). On the GPU
# machine, from the repository root, with the run directories the specs start from copied there
# first (here runs/fame_beauty/beauty/sasrec):
#   export OUT=$PWD/gpu-out && mkdir -p "$OUT"
#   bash benchmarks/gpu_sitting.sh 450 fp32 experiments/fame_beauty.toml:6:0-7 \
#       experiments/fame_toys.toml:4:8-11
# Arguments: SECONDS before every runner is interrupted (they stop their jobs cleanly; 10 s
# before, their --time-limit has their runs pause between epochs, so none is cut short), the
# --precision of every run (auto = bf16 autocast on CUDA; fp32 matches CPU records), then
# SPEC:JOBS:CORES per spec. Each runner is pinned to its CPU cores (taskset), so its jobs get
# cores / jobs threads and the runners do not slow each other down on the CPU.
# Back in $OUT: sitting.log, records.tar.gz (the finished runs' records of every spec: unpack
# at the repository root, check `famerec experiment status SPEC`, regenerate the report and
# commit) and weights-*.tar.gz: the weights of finished runs whose id matches WEIGHTS (default
# '*/sasrec/*'; the runs that later runs start from), without checkpoints, in files of at most
# 15 MiB. Runs cut off by the time limit come back too (RESUME, default '*', picks them): their
# checkpoints and logs (a --pretrain run's pretrain/ too; `carry_runs.py files`) in
# checkpoints.tar.gz, split into parts of at most 15 MiB
# (checkpoints.tar.gz.part-aa, -ab, ...); `cat checkpoints.tar.gz.part-* | tar xzf -` at the
# repository root puts them back in runs/, and the next sitting, here or on the CPU, resumes
# them after their last GPU epoch (the device may change between sittings: checkpoints load
# onto the device of the run that resumes them). The log warns when more than 8 files would
# come back (copy fewer: narrow RESUME or WEIGHTS). The machine needs no polars: reading the
# bundled datasets does not import it.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
SECONDS_LEFT=${1:?usage: gpu_sitting.sh SECONDS PRECISION SPEC:JOBS:CORES...}
PRECISION=${2:?precision: auto, fp32 or bf16}
shift 2
WEIGHTS=${WEIGHTS:-*/sasrec/*}
RESUME=${RESUME:-*}
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
LOG=$OUT/sitting.log
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
  python3 -c "import torch; print('torch', torch.__version__)"
} >>"$LOG" 2>&1
start=$(date +%s)
names=()
specs=()
for item in "$@"; do
  IFS=: read -r spec jobs cores <<<"$item"
  name=$(python3 -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['name'])" "$spec")
  names+=("$name")
  specs+=("$spec")
  timeout --signal=INT --kill-after=60 "$SECONDS_LEFT" taskset -c "$cores" python3 -m famerec \
    experiment run "$spec" --jobs "$jobs" --device "${DEVICE:-cuda}" --precision "$PRECISION" \
    --time-limit "$((SECONDS_LEFT - 10))" >"$OUT/$name.log" 2>&1 &
done
wait
for name in "${names[@]}"; do
  grep -v "^start" "$OUT/$name.log" | tail -n 40 >>"$LOG"
  rm -f "$OUT/$name.log"
  echo "$name: $(find "results/records/$name" -name record.json 2>/dev/null | wc -l) records" >>"$LOG"
done
echo "wall $(($(date +%s) - start)) s" >>"$LOG"
dirs=$(for name in "${names[@]}"; do echo "results/records/$name"; done)
tar czf "$OUT/records.tar.gz" $dirs 2>>"$LOG"
# Weights of finished runs (those with a record) that later runs need, packed in chunks.
python3 - "$OUT" "$WEIGHTS" "${names[@]}" <<'PY' >>"$LOG" 2>&1
import fnmatch, pathlib, sys, tarfile
out, pattern, names = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
keep = ("config.json", "dataset.npz", "model.safetensors", "metrics.json", "item_attributes.json")
chunks, size = [[]], 0
for name in names:
    records = pathlib.Path("results/records") / name
    for record in sorted(records.glob("*/*/*/record.json")):
        run_id = str(record.parent.relative_to(records))
        run_dir = pathlib.Path("runs") / name / run_id
        if not fnmatch.fnmatch(run_id, pattern) or not (run_dir / "model.safetensors").is_file():
            continue
        files = [run_dir / f for f in keep if (run_dir / f).is_file()]
        bytes_ = sum(f.stat().st_size for f in files)
        if bytes_ > 15 * 2**20:  # may not come back: say so rather than lose it silently
            print(f"warning: {run_dir} is {bytes_ / 2**20:.1f} MiB, over 15 MiB, in a chunk alone")
        if size + bytes_ > 15 * 2**20 and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1] += files
        size += bytes_
for i, files in enumerate(c for c in chunks if c):
    with tarfile.open(out / f"weights-{i}.tar.gz", "w:gz") as tar:
        for f in files:
            tar.add(f)
    print(f"weights-{i}.tar.gz: {len(files)} files")
PY
# Unfinished runs (a checkpoint, no record) whose id matches RESUME: what resuming needs.
python3 benchmarks/carry_runs.py --pattern "$RESUME" files "${specs[@]}" >"$OUT/unfinished.txt" 2>>"$LOG"
if [ -s "$OUT/unfinished.txt" ]; then
  tar czf - -T "$OUT/unfinished.txt" | split -b 15M - "$OUT/checkpoints.tar.gz.part-"
  echo "unfinished runs back: $(sed -n 's|/checkpoint.pt$||p' "$OUT/unfinished.txt" | tr '\n' ' ')" >>"$LOG"
  files=$(find "$OUT" -maxdepth 1 -type f ! -name unfinished.txt | wc -l)
  [ "$files" -le 8 ] || echo "warning: $files files in \$OUT, only 8 come back: narrow RESUME or WEIGHTS" >>"$LOG"
fi
rm -f "$OUT/unfinished.txt"
cat "$LOG"
