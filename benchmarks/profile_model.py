"""Where a model's training step spends its time: torch.profiler over a few Beauty batches.

Each model at its own defaults (d = 64) runs the trainer's step (transform_batch, loss,
backward, Adam) on random real Beauty batches after one warm-up batch; prints the operators
with the most CPU time, so that a speed-up starts from a measurement.

    python benchmarks/profile_model.py --model msgifsr --batches 2 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from epochs import training_setup  # noqa: E402

from famerec.data import leave_one_out, load_bundled  # noqa: E402
from famerec.models import MODELS  # noqa: E402
from famerec.training.memory import keep_freed_memory  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=15, help="operators to print")
    args = parser.parse_args()
    keep_freed_memory()  # as `famerec train` does
    torch.set_num_threads(args.threads)
    data = load_bundled("beauty")
    split = leave_one_out(data)
    _, _, batches, step = training_setup(args.model, split, data.num_items)
    indices = batches.batch_indices()
    step(indices[0])  # warm-up
    started, cpu = time.perf_counter(), time.process_time()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for rows in indices[1 : 1 + args.batches]:
            step(rows)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{args.model} on Beauty, {args.batches} batches of {batches.batch_size}, "
        f"{args.threads} thread(s), torch {torch.__version__}: {wall / args.batches:.2f} s wall, "
        f"{cpu / args.batches:.2f} s CPU per batch (under the profiler)"
    )
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
