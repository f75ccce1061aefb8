"""Catalogs of millions of items: full against sampled softmax, and bounded evaluation memory.

For synthetic catalogs of 100k, 1M and 5M items (Zipf-like popularity, generated from a seed at
run time), each case in a fresh process: SASRec (d = 64, 2 layers) trains a few batches of 256
sequences with the full softmax (`--loss full`, chunked so that no logit matrix exceeds 2^26
scores) or the sampled softmax (`--loss sampled --negatives 1024`, popularity negatives with
logQ correction), then evaluates 1,024 users with full ranking over the whole catalog (batches
shrunk to the same 2^26-score budget). Reported: seconds per training batch, the epoch time
that implies for the synthetic users, evaluation seconds per 1,000 users, and the process's
peak RSS.

    python benchmarks/catalog.py                    # all cases, about 10 minutes on 2 cores
    python benchmarks/catalog.py --items 100000 --batches 3
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
from famerec.data.split import leave_one_out  # noqa: E402
from famerec.evaluation import evaluate  # noqa: E402
from famerec.models import build_model  # noqa: E402
from famerec.models.losses import NegativeSampler  # noqa: E402
from famerec.training.trainer import SCORE_BUDGET  # noqa: E402

USERS = 20_000
EVAL_USERS = 1_024


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


def run_case(num_items: int, loss: str, batches: int, threads: int) -> dict:
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
    model.train()
    times = []
    for step, batch_rows in enumerate(indices[: batches + 1]):
        started = time.perf_counter()
        value = model.loss(train.batch(batch_rows))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if step:  # the first batch warms up
            times.append(time.perf_counter() - started)
    from famerec.data.split import PrefixSet

    valid = split.valid
    subset = PrefixSet(
        valid.items,
        valid.starts[:EVAL_USERS],
        valid.ends[:EVAL_USERS],
        valid.targets[:EVAL_USERS],
    )
    eval_batches = EvalBatches(subset, config.max_len, min(256, rows), "cpu")
    started = time.perf_counter()
    evaluate(model, eval_batches)
    eval_seconds = time.perf_counter() - started
    per_batch = float(np.median(times))
    return {
        "items": num_items,
        "loss": loss,
        "batch_seconds": per_batch,
        "epoch_seconds": per_batch * len(indices),
        "batches_per_epoch": len(indices),
        "eval_seconds_per_1000_users": eval_seconds * 1000 / EVAL_USERS,
        "eval_batch": min(256, rows),
        "loss_chunk": model.loss_chunk,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="100000,1000000,5000000")
    parser.add_argument("--losses", default="full,sampled")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON out
    args = parser.parse_args()
    if args.case:
        items, loss = args.case.split(",")
        print(json.dumps(run_case(int(items), loss, args.batches, args.threads)))
        return
    started = time.perf_counter()
    results = []
    for items in map(int, args.items.split(",")):
        for loss in args.losses.split(","):
            command = [sys.executable, __file__, "--case", f"{items},{loss}"]
            command += ["--batches", str(args.batches), "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{items} {loss}: failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done {items:,} items, {loss}", file=sys.stderr)
    print(
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, CPU. {USERS:,} synthetic users of 5-20 items, SASRec d = 64, "
        f"batch 256, {args.batches} timed batches per case after one warm-up. "
        f"Wall time {time.perf_counter() - started:.0f} s.\n"
    )
    print(
        "| items | loss | s / batch | epoch (s, extrapolated) | eval s / 1,000 users | "
        "eval batch | loss chunk | peak RSS (GiB) |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['items']:,} | {r['loss']} | {r['batch_seconds']:.2f} | "
            f"{r['epoch_seconds']:,.0f} | {r['eval_seconds_per_1000_users']:.1f} | "
            f"{r['eval_batch']} | {r['loss_chunk']} | {r['peak_rss_gib']:.2f} |"
        )


if __name__ == "__main__":
    main()
