"""How hard each loss term pulls: the gradient norm of every named term of a model's loss over
its first optimizer steps on real Beauty batches.

Each model at its own defaults (d = 64, batches of 256, seed 0) trains with Adam at 1e-3, as
the trainer does (transform_batch, loss, backward); every `--every` steps the gradient of each
term (its weight included) with respect to all parameters is measured on that step's batch,
before the step. A term whose gradient is many times the next-item loss's steers Adam's first
steps, whatever its weight says (the reason for `--aux-warmup-steps`, docs/training.md).

    python benchmarks/loss_gradients.py --models sasrec,cl4srec,iclrec,duorec --steps 41 --every 10
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from epochs import training_setup  # noqa: E402

from famerec.data import leave_one_out, load_bundled  # noqa: E402
from famerec.models import EpochContext  # noqa: E402


def term_norms(model: torch.nn.Module, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each term's gradient norm over all trainable parameters (the graph is kept)."""
    params = [p for p in model.parameters() if p.requires_grad]
    norms = {}
    for name, value in losses.items():
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        norms[name] = float(
            torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None))
        )
    return norms


def measure(name: str, split, num_items: int, steps: int, every: int) -> list[dict]:
    model, tensors, train, _ = training_setup(name, split, num_items)
    model.on_epoch_start(EpochContext(1, tensors, torch.device("cpu"), 256))  # ICLRec's k-means
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rows = []
    for step, indices in enumerate(train.batch_indices()[:steps]):
        losses = model.loss(model.transform_batch(train.batch(indices)))
        losses = losses if isinstance(losses, dict) else {"next_item": losses}
        if step % every == 0:
            norms = term_norms(model, losses)
            rows.append(
                {
                    "step": step,
                    "losses": {k: float(v.detach()) for k, v in losses.items()},
                    "norms": norms,
                }
            )
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="sasrec,cl4srec,iclrec,duorec")
    parser.add_argument("--steps", type=int, default=41)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_bundled("beauty")
    split = leave_one_out(data)
    stamp = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    print(
        f"Loss terms' gradient norms on Beauty: {platform.machine()} CPU, "
        f"torch {torch.__version__}, {args.threads} thread(s), {stamp}"
    )
    print()
    print("| model | step | term | loss (weighted) | gradient norm | vs next-item |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for name in args.models.split(","):
        for row in measure(name, split, data.num_items, args.steps, args.every):
            base = row["norms"].get("next_item")
            for term, norm in row["norms"].items():
                ratio = f"{norm / base:.1f}x" if base else ""
                loss = row["losses"][term]
                print(f"| {name} | {row['step']} | {term} | {loss:.3f} | {norm:.3f} | {ratio} |")
    print()
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
