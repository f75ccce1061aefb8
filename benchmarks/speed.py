"""Training and evaluation speed of famerec against a straightforward reference.

    python benchmarks/speed.py                 # the full table (about 20 minutes on 2 cores)
    python benchmarks/speed.py --quick         # Beauty only, a few reference batches

For each case (dataset x model) a fresh subprocess builds the data and the model, times one
full training epoch and one full-ranking evaluation of all users, records its peak RSS, and
then runs the reference (benchmarks/reference.py) on the same batches with the same initial
weights. Synthetic datasets with ML-20m's shape are generated at run time from a seed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reference import reference_evaluate, reference_loss  # noqa: E402
from famerec.config import ModelConfig  # noqa: E402
from famerec.data import leave_one_out, load_bundled  # noqa: E402
from famerec.data.batching import EvalBatches, TrainBatches, train_tensors  # noqa: E402
from famerec.data.sequences import SequenceData  # noqa: E402
from famerec.evaluation import evaluate  # noqa: E402
from famerec.models import FAMEOptions, build_model  # noqa: E402
from famerec.runs.machine import cpu_name  # noqa: E402

ML20M_SHAPE = {"users": 96_726, "items": 16_297, "actions": 1_856_746}


def synthetic(users: int, items: int, actions: int, seed: int = 0) -> SequenceData:
    """Sequences of ML-20m's shape: lengths >= 5 with a long tail, Zipf-like item popularity."""
    rng = np.random.default_rng(seed)
    extra = rng.lognormal(mean=2.0, sigma=1.0, size=users)
    lengths = 5 + np.floor(extra * (actions - 5 * users) / extra.sum()).astype(np.int64)
    lengths[rng.choice(users, actions - lengths.sum(), replace=False)] += 1
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    flat = rng.choice(items, size=actions, p=popularity / popularity.sum()) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return SequenceData(
        f"synthetic-{users}u-{items}i",
        flat.astype(np.int64),
        offsets,
        np.arange(1, users + 1),
        np.arange(1, items + 1),
    )


def dataset(name: str) -> SequenceData:
    if name == "beauty":
        return load_bundled("beauty")
    if name == "ml20m":
        return synthetic(**ML20M_SHAPE)
    if name == "ml20m-half-users":
        return synthetic(
            ML20M_SHAPE["users"] // 2, ML20M_SHAPE["items"], ML20M_SHAPE["actions"] // 2
        )
    if name == "ml20m-half-items":
        return synthetic(ML20M_SHAPE["users"], ML20M_SHAPE["items"] // 2, ML20M_SHAPE["actions"])
    raise ValueError(name)


def matmul_peak(device: torch.device, size: int = 4096) -> float:
    """Best fp32 GFLOP/s of a large square matmul: this machine's practical peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = 0.0
    for _ in range(5):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def useful_flops(config: ModelConfig, experts: int, positions: int, num_items: int) -> float:
    """Matmul FLOPs that any implementation must do for one epoch (forward + backward).

    Output layer 2 V d per position, linear layers of each block 10 d^2 (Q, K, V, two FFN),
    FAME's last layer N d^2 (expert queries) + 2 d^2 (K, V) + 2 d^2 / H (FFN') + d^2 (W_f);
    times 3 for the backward pass. Attention scores are left out (they depend on the length).
    """
    d, heads = config.hidden_size, config.num_heads
    per_position = 2 * num_items * d + 2 * 10 * d * d * (config.num_layers - 1)
    if config.name == "fame":
        per_position += 2 * (experts * d * d + 2 * d * d + 2 * d * d / heads + d * d)
    else:
        per_position += 2 * 10 * d * d
    return 3.0 * per_position * positions


@dataclass
class Case:
    dataset: str
    model: str
    reference_batches: int  # 0 = the whole epoch
    device: str = "cpu"


def run_case(case: Case) -> dict:
    device = torch.device(case.device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    data = dataset(case.dataset)
    split = leave_one_out(data)
    config = ModelConfig(name=case.model, num_heads=2, hidden_size=64, max_len=50)
    experts = 4
    options = FAMEOptions(num_experts=experts) if case.model == "fame" else None
    torch.manual_seed(0)
    model = build_model(config, data.num_items, options).to(device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.loss_chunk = 512 if device.type == "cpu" else 4096
    tensors = train_tensors(split.train, config.max_len)
    batches = TrainBatches(tensors, 256, torch.Generator().manual_seed(0), device=device)
    padded = TrainBatches(tensors, 256, torch.Generator(), pad_to_max_len=True, device=device)
    epoch_indices = batches.batch_indices()

    def batch_at(rows, pad):
        return padded.batch(rows) if pad else batches.batch(rows)

    def train(loss_fn, indices, pad):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        _sync(device)
        started = time.perf_counter()
        for rows in indices:
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                loss = loss_fn(batch_at(rows, pad))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)
        return time.perf_counter() - started

    sample = epoch_indices[: case.reference_batches] if case.reference_batches else epoch_indices

    # famerec: warm-up on a few batches, then one full epoch
    train(model.loss, epoch_indices[:3], pad=False)
    model.load_state_dict(initial)
    epoch_seconds = train(model.loss, epoch_indices, pad=False)
    model.load_state_dict(initial)
    sample_seconds = train(model.loss, sample, pad=False)
    eval_batches = EvalBatches(split.valid, config.max_len, 256, device)
    evaluate(model, eval_batches)  # warm-up
    _sync(device)
    started = time.perf_counter()
    evaluate(model, eval_batches, autocast_dtype=amp)
    _sync(device)
    eval_seconds = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss in KiB)

    # reference: same initial weights, same batches, padded to max_len, full logits
    model.load_state_dict(initial)
    reference_seconds = train(lambda b: reference_loss(model, b), sample, pad=True)
    eval_users = len(split.valid) if not case.reference_batches else min(len(split.valid), 4096)
    subset = split.valid
    if eval_users < len(split.valid):
        from famerec.data.split import PrefixSet

        subset = PrefixSet(
            subset.items,
            subset.starts[:eval_users],
            subset.ends[:eval_users],
            subset.targets[:eval_users],
        )
    started = time.perf_counter()
    reference_evaluate(model, subset, config.max_len, 256)
    reference_eval_seconds = time.perf_counter() - started

    epoch_positions = tensors.num_positions
    return {
        "dataset": case.dataset,
        "model": case.model,
        "device": case.device,
        "users": data.num_users,
        "items": data.num_items,
        "actions": data.num_actions,
        "batches": len(epoch_indices),
        "positions": epoch_positions,
        "epoch_seconds": epoch_seconds,
        "positions_per_second": epoch_positions / epoch_seconds,
        "useful_gflops": useful_flops(config, experts, epoch_positions, data.num_items) / 1e9,
        "eval_seconds": eval_seconds,
        "eval_users": len(split.valid),
        "users_per_second": len(split.valid) / eval_seconds,
        "peak_rss_gib": peak_rss,
        "sample_batches": len(sample),
        "sample_seconds": sample_seconds,
        "reference_sample_seconds": reference_seconds,
        "reference_eval_users": eval_users,
        "reference_users_per_second": eval_users / reference_eval_seconds,
        "threads": torch.get_num_threads(),
    }


def markdown(results: list[dict], peak: float, device: str) -> str:
    lines = [
        "| dataset | model | epoch (s) | positions/s | vs reference | % of matmul peak "
        "| eval all users (s) | users/s | vs reference | peak RSS (GiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        train_ratio = r["reference_sample_seconds"] / r["sample_seconds"]
        eval_ratio = r["users_per_second"] / r["reference_users_per_second"]
        achieved = r["useful_gflops"] / r["epoch_seconds"]
        shape = f"{r['dataset']} ({r['users']:,} u, {r['items']:,} i, {r['actions']:,} a)"
        lines.append(
            f"| {shape} | {r['model']} | {r['epoch_seconds']:.1f} | "
            f"{r['positions_per_second']:,.0f} | {train_ratio:.1f}x faster | "
            f"{100 * achieved / peak:.0f}% | {r['eval_seconds']:.2f} | "
            f"{r['users_per_second']:,.0f} | {eval_ratio:.1f}x faster | {r['peak_rss_gib']:.2f} |"
        )
    fame = {r["dataset"]: r for r in results if r["model"] == "fame"}
    sasrec = {r["dataset"]: r for r in results if r["model"] == "sasrec"}
    notes = [
        "",
        f"Matmul peak: {peak:,.0f} GFLOP/s (best fp32 4096x4096 matmul on {device}, same run).",
        "'vs reference': the reference (every batch padded to max_len, logits at all positions; "
        "FAME with a Python loop over experts and per-head logits) on the same batches and the "
        "same initial weights"
        + "; sampled batches: "
        + ", ".join(
            f"{r['dataset']}/{r['model']} {r['sample_batches']} of {r['batches']}" for r in results
        )
        + ". Evaluation reference: max_len-padded batches in user order, ranks by sorting "
        "(users: "
        + ", ".join(
            f"{r['dataset']} {r['reference_eval_users']:,}"
            for r in results
            if r["model"] == "sasrec"
        )
        + ").",
        "'% of matmul peak': output-layer and linear-layer FLOPs of the epoch (forward and "
        "backward) per second, over the matmul peak.",
    ]
    for name in fame:
        if name in sasrec:
            ratio = fame[name]["epoch_seconds"] / sasrec[name]["epoch_seconds"]
            notes.append(f"FAME epoch / SASRec epoch on {name}: {ratio:.2f}.")
    scaling = {r["dataset"]: r for r in results if r["model"] == "fame"}
    if {"ml20m", "ml20m-half-users", "ml20m-half-items"} <= set(scaling):
        full, users, items = (scaling[k] for k in ("ml20m", "ml20m-half-users", "ml20m-half-items"))
        notes.append(
            "Scaling (FAME): doubling the actions (half-users -> full) multiplies the epoch by "
            f"{full['epoch_seconds'] / users['epoch_seconds']:.2f} and the evaluation by "
            f"{full['eval_seconds'] / users['eval_seconds']:.2f}; doubling the items (half-items "
            f"-> full) multiplies them by {full['epoch_seconds'] / items['epoch_seconds']:.2f} and "
            f"{full['eval_seconds'] / items['eval_seconds']:.2f} (2.00 = linear)."
        )
    return "\n".join(lines + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Beauty only, 10 reference batches")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(Case(**json.loads(args.case)))))
        return
    device = torch.device(args.device)
    cases = [
        Case("beauty", "sasrec", 0 if not args.quick else 10, args.device),
        Case("beauty", "fame", 0 if not args.quick else 10, args.device),
    ]
    if not args.quick:
        cases += [
            Case("ml20m", "sasrec", 20, args.device),
            Case("ml20m", "fame", 20, args.device),
            Case("ml20m-half-users", "fame", 10, args.device),
            Case("ml20m-half-items", "fame", 10, args.device),
        ]
    started = time.perf_counter()
    results = []
    for case in cases:
        print(f"running {case.dataset} / {case.model} ...", file=sys.stderr, flush=True)
        output = subprocess.run(
            [sys.executable, __file__, "--case", json.dumps(vars(case))],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    peak = matmul_peak(device)
    name = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    header = (
        f"Machine: {name}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{results[0]['threads']} threads, device {args.device}. "
        f"Benchmark wall time {time.perf_counter() - started:.0f} s."
    )
    print(header)
    print()
    print(markdown(results, peak, name))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
