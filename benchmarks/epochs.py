"""Seconds per Beauty training epoch of every registered model, against SASRec's, same process.

Each model (its own defaults, d = 64) trains `--batches` random batches of the real Beauty
epoch after two warm-up batches, through the trainer's own step (transform_batch, loss,
backward, Adam); its epoch hook (e.g. ICLRec's clustering) runs once and is timed apart. The
epoch estimate is (seconds per batch x batches per epoch + hook seconds); SASRec runs first and
last, and the ratio uses their mean, so that a machine that slows down in between shows.

    python benchmarks/epochs.py                        # every model, ~10 minutes on 2 cores
    python benchmarks/epochs.py --models sasrec,gru4rec --batches 10
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from famerec.config import RunConfig  # noqa: E402
from famerec.data import leave_one_out, load_bundled  # noqa: E402
from famerec.data.batching import TrainBatches, train_tensors  # noqa: E402
from famerec.models import MODELS, EpochContext, build_model, model_spec  # noqa: E402
from famerec.training.memory import keep_freed_memory  # noqa: E402


def training_setup(name: str, split, num_items: int):
    """Model `name` at its defaults (seed 0), its real Beauty batches and the trainer's step
    (transform_batch, loss, backward, Adam): (model, tensors, batches, step)."""
    defaults = model_spec(name).own_defaults()  # the recipe's batch size and dropout too
    config = RunConfig().with_overrides({"model.name": name, **defaults}).validate()
    torch.manual_seed(0)
    model = build_model(config.model, num_items, config.options)
    model.loss_chunk = config.train.loss_chunk
    tensors = train_tensors(split.train, config.model.max_len)
    train = TrainBatches(tensors, config.train.batch_size, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(rows) -> None:
        losses = model.loss(model.transform_batch(train.batch(rows)))
        loss = sum(losses.values()) if isinstance(losses, dict) else losses
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, tensors, train, step


def time_model(name: str, split, num_items: int, batches: int) -> dict:
    model, tensors, train, train_step = training_setup(name, split, num_items)
    started = time.perf_counter()
    model.on_epoch_start(EpochContext(1, tensors, torch.device("cpu"), 256))
    hook_seconds = time.perf_counter() - started
    indices = train.batch_indices()
    timings = []
    for step, rows in enumerate(indices[: batches + 2]):
        started = time.perf_counter()
        train_step(rows)
        if step >= 2:
            timings.append(time.perf_counter() - started)
    per_batch = sum(timings) / len(timings)
    return {
        "model": name,
        "per_batch": per_batch,
        "hook": hook_seconds,
        "epoch": per_batch * len(indices) + hook_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(sorted(MODELS)))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()  # as `famerec train` does
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_bundled("beauty")
    split = leave_one_out(data)
    names = [n for n in args.models.split(",") if n != "sasrec"]
    first = time_model("sasrec", split, data.num_items, args.batches)
    rows = [time_model(name, split, data.num_items, args.batches) for name in names]
    last = time_model("sasrec", split, data.num_items, args.batches)
    sasrec = (first["epoch"] + last["epoch"]) / 2
    print(
        f"Beauty, {platform.machine()} CPU, torch {torch.__version__}, {args.threads} threads; "
        f"{args.batches} timed batches of 256 per model after 2 warm-up batches; wall time "
        f"{time.perf_counter() - started:.0f} s. SASRec epoch: {first['epoch']:.1f} s first, "
        f"{last['epoch']:.1f} s last.\n"
    )
    print("| model | s / batch | epoch hook (s) | epoch estimate (s) | vs SASRec |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in [first, *rows]:
        print(
            f"| {row['model']} | {row['per_batch']:.3f} | {row['hook']:.1f} | "
            f"{row['epoch']:.1f} | {row['epoch'] / sasrec:.2f}x |"
        )


if __name__ == "__main__":
    main()
