"""CPU time per training batch with glibc's default malloc and with `keep_freed_memory`.

Each model (its defaults, d = 64) trains the same real Beauty batches through the trainer's
step in a fresh process, once per malloc setting (default first, then kept), after one warm-up
batch; the process's user and system CPU time, page faults and peak memory are read from
getrusage. CPU time, unlike wall time, barely moves when another process shares the cores, so
the comparison holds on a busy machine; wall time is printed too.

    python benchmarks/allocator.py --models sasrec,miasrec --batches 4 --threads 1
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from famerec.models import MODELS  # noqa: E402


def measure(model: str, keep: bool, batches: int, threads: int) -> dict:
    """In this process: the step's cost per batch (run as a child by `main`)."""
    from epochs import training_setup

    from famerec.data import leave_one_out, load_bundled
    from famerec.training.memory import keep_freed_memory

    applied = keep_freed_memory() if keep else False
    torch.set_num_threads(threads)
    data = load_bundled("beauty")
    split = leave_one_out(data)
    _, _, train, step = training_setup(model, split, data.num_items)
    indices = train.batch_indices()
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(0)).tolist()
    step(indices[order[0]])  # warm-up
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in order[1 : batches + 1]:
        step(indices[i])
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    return {
        "applied": applied,
        "wall": wall / batches,
        "user": (after.ru_utime - before.ru_utime) / batches,
        "sys": (after.ru_stime - before.ru_stime) / batches,
        "faults": (after.ru_minflt - before.ru_minflt) / batches,
        "peak_mib": after.ru_maxrss / 1024,
    }


def child(model: str, keep: bool, batches: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", model, "--batches", str(batches)]
    command += ["--threads", str(threads)] + (["--keep"] if keep else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="sasrec,fame,miasrec,msgifsr")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=sorted(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.keep, args.batches, args.threads)))
        return
    started = time.perf_counter()
    rows = []
    for model in args.models.split(","):
        default, kept = (child(model, keep, args.batches, args.threads) for keep in (False, True))
        if not kept["applied"]:
            sys.exit("keep_freed_memory did not apply here (not glibc, or MALLOC_* is set)")
        rows.append((model, default, kept))
    print(
        f"Beauty, {platform.machine()} CPU, torch {torch.__version__}, {args.threads} thread(s); "
        f"{args.batches} batches of 256 per model and setting after a warm-up batch; "
        f"wall time {time.perf_counter() - started:.0f} s.\n"
    )
    print(
        "| model | CPU s / batch, default (of it system) | kept (of it system) | CPU speed-up "
        "| page faults / batch, default | kept | peak MiB, default | kept | wall s / batch, "
        "default | kept |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, d, k in rows:
        cpu_d, cpu_k = d["user"] + d["sys"], k["user"] + k["sys"]
        print(
            f"| {model} | {cpu_d:.3f} ({d['sys']:.3f}) | {cpu_k:.3f} ({k['sys']:.3f}) | "
            f"{cpu_d / cpu_k:.2f}x | {d['faults']:,.0f} | {k['faults']:,.0f} | "
            f"{d['peak_mib']:,.0f} | {k['peak_mib']:,.0f} | {d['wall']:.3f} | {k['wall']:.3f} |"
        )


if __name__ == "__main__":
    main()
