"""Catalogs of millions of items: full against sampled softmax, and bounded evaluation memory.

For synthetic catalogs of 100k, 1M and 5M items (Zipf-like popularity, generated from a seed at
run time), each case in a fresh process: SASRec (d = 64, 2 layers) takes one warm-up optimizer
step on 16 sequences (it allocates Adam's state over the whole catalog), then `--steps` timed
steps on batches of 256 sequences with the full softmax (`--loss full`, chunked so that no
logit matrix exceeds 2^26 scores) or the sampled softmax (`--loss sampled --negatives 1024`,
popularity negatives with logQ correction), then evaluates a sample of `--eval-users` users with
full ranking over the whole catalog (batches shrunk to the same 2^26-score budget, so memory
stays bounded whatever the catalog). Reported: seconds per training step, the epoch time that
implies for the synthetic users (an estimate: s/step x steps per epoch, not a timed epoch),
evaluation seconds per 1,000 users, the case's wall time and the process's peak RSS.

    python benchmarks/catalog.py                    # all cases, about 10 minutes on 2 cores
    python benchmarks/catalog.py --items 100000 --steps 3
    python benchmarks/catalog.py --items 5000000 --steps 1 --threads 1   # a few minutes per case
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from famerec.config import ModelConfig  # noqa: E402
from famerec.data.batching import EvalBatches, TrainBatches, train_tensors  # noqa: E402
from famerec.data.sequences import SequenceData  # noqa: E402
from famerec.data.split import PrefixSet, leave_one_out  # noqa: E402
from famerec.evaluation import evaluate  # noqa: E402
from famerec.models import build_model  # noqa: E402
from famerec.models.losses import NegativeSampler  # noqa: E402
from famerec.training.trainer import SCORE_BUDGET  # noqa: E402

USERS = 20_000
EVAL_USERS = 1_024
WARM_UP_ROWS = 16  # sequences of the warm-up step: it allocates Adam's state, and stays cheap


def synthetic(num_items: int, users: int, seed: int = 0) -> SequenceData:
    """Users of 5-20 items each, items drawn with Zipf-like popularity (exponent 1.1)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 21, users)
    ranks = np.arange(1, num_items + 1, dtype=np.float64)
    probs = ranks**-1.1
    probs /= probs.sum()
    items = rng.choice(num_items, size=int(lengths.sum()), p=probs) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SequenceData(
        f"synthetic-{num_items}",
        items.astype(np.int64),
        offsets,
        np.arange(1, users + 1),
        np.arange(1, num_items + 1),
    )


def run_case(num_items: int, loss: str, steps: int, threads: int, eval_users: int) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = synthetic(num_items, USERS)
    split = leave_one_out(data)
    config = ModelConfig(name="sasrec", hidden_size=64, num_heads=2, max_len=50, dropout=0.2)
    model = build_model(config, num_items)
    rows = max(1, SCORE_BUDGET // (num_items + 1))
    model.loss_chunk = min(512, rows)
    tensors = train_tensors(split.train, config.max_len)
    if loss == "sampled":
        counts = torch.bincount(tensors.targets.flatten(), minlength=num_items + 1)[1:]
        model.negative_sampler = NegativeSampler(counts, 1024, "popularity")
    train = TrainBatches(tensors, 256, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    indices = train.batch_indices()
    if steps + 1 > len(indices):
        raise SystemExit(f"--steps {steps}: an epoch has only {len(indices)} steps")
    model.train()

    def step(batch_rows) -> tuple[float, float]:
        """(wall, CPU) seconds of one optimizer step; the CPU time of all the process's threads
        is what the step costs on cores that other jobs share."""
        began, cpu = time.perf_counter(), time.process_time()
        value = model.loss(train.batch(batch_rows))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        return time.perf_counter() - began, time.process_time() - cpu

    warm_up, _ = step(indices[0][:WARM_UP_ROWS])
    log(f"{num_items:,} items, {loss}: warm-up step ({WARM_UP_ROWS} sequences) {warm_up:.1f} s")
    times, cpu_times = [], []
    for batch_rows in indices[1 : steps + 1]:
        wall, cpu = step(batch_rows)
        times.append(wall)
        cpu_times.append(cpu)
        log(
            f"{num_items:,} items, {loss}: step {len(times)} of {steps}: {wall:.1f} s, "
            f"CPU {cpu:.1f} s"
        )
    valid = split.valid
    sample = np.random.default_rng(1).choice(len(valid), min(eval_users, len(valid)), replace=False)
    sample.sort()
    subset = PrefixSet(valid.items, valid.starts[sample], valid.ends[sample], valid.targets[sample])
    eval_batch = min(256, rows)
    eval_batches = EvalBatches(subset, config.max_len, eval_batch, "cpu")
    began, cpu = time.perf_counter(), time.process_time()
    evaluate(model, eval_batches)
    eval_seconds, eval_cpu = time.perf_counter() - began, time.process_time() - cpu
    log(f"{num_items:,} items, {loss}: evaluation of {eval_users:,} users {eval_seconds:.1f} s")
    per_step, cpu_per_step = float(np.median(times)), float(np.median(cpu_times))
    return {
        "items": num_items,
        "loss": loss,
        "steps": steps,
        "step_seconds": per_step,
        "step_seconds_all": times,
        "step_cpu_seconds": cpu_per_step,
        "warm_up_seconds": warm_up,
        "epoch_seconds": per_step * len(indices),
        "epoch_cpu_seconds": cpu_per_step * len(indices),
        "steps_per_epoch": len(indices),
        "eval_users": eval_users,
        "eval_seconds_per_1000_users": eval_seconds * 1000 / eval_users,
        "eval_cpu_seconds_per_1000_users": eval_cpu * 1000 / eval_users,
        "eval_batch": eval_batch,
        "loss_chunk": model.loss_chunk,
        "case_seconds": time.perf_counter() - started,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="100000,1000000,5000000")
    parser.add_argument("--losses", default="full,sampled")
    parser.add_argument(
        "--steps", "--batches", type=int, default=3, help="timed training steps per case"
    )
    parser.add_argument(
        "--eval-users", type=int, default=EVAL_USERS, help="users evaluated (a seeded sample)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON out
    args = parser.parse_args()
    if args.case:
        items, loss = args.case.split(",")
        result = run_case(int(items), loss, args.steps, args.threads, args.eval_users)
        print(json.dumps(result))
        return
    started = time.perf_counter()
    results = []
    for items in map(int, args.items.split(",")):
        for loss in args.losses.split(","):
            command = [sys.executable, __file__, "--case", f"{items},{loss}"]
            command += ["--steps", str(args.steps), "--threads", str(args.threads)]
            command += ["--eval-users", str(args.eval_users)]
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # stderr: progress
            if done.returncode != 0:
                log(f"{items} {loss}: failed (exit code {done.returncode})")
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread{'s' if args.threads > 1 else ''}, CPU. {USERS:,} synthetic "
        f"users of 5-20 items, SASRec d = 64, batch 256: one warm-up step on "
        f"{WARM_UP_ROWS} sequences, then {args.steps} timed step{'s' if args.steps > 1 else ''} "
        f"per case (median); evaluation of {args.eval_users:,} sampled users. "
        f"Wall time {time.perf_counter() - started:.0f} s.\n"
    )
    print(
        "Wall seconds, and CPU seconds of the case's process (what a step costs when other jobs "
        "share the cores), in parentheses. The epoch column is an estimate, not a timed "
        "epoch: s / step x steps per epoch.\n"
    )
    print(
        "| items | loss | s / step (CPU) | epoch estimate (s) = s / step x steps (CPU) | "
        "eval s / 1,000 users (CPU) | eval batch | loss chunk | case wall (s) | "
        "peak RSS (GiB) |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['items']:,} | {r['loss']} | {r['step_seconds']:.2f} "
            f"({r['step_cpu_seconds']:.2f}) | {r['epoch_seconds']:,.0f} = "
            f"{r['step_seconds']:.2f} x {r['steps_per_epoch']} ({r['epoch_cpu_seconds']:,.0f}) | "
            f"{r['eval_seconds_per_1000_users']:.1f} "
            f"({r['eval_cpu_seconds_per_1000_users']:.1f}) | {r['eval_batch']} | "
            f"{r['loss_chunk']} | {r['case_seconds']:.0f} | {r['peak_rss_gib']:.2f} |"
        )


if __name__ == "__main__":
    main()
