"""Does a model fit the training data better, or generalize better? Per model of one dataset's
committed records: the training loss at the best-validation epoch (dropout on, the next-item
loss alone where a run adds auxiliary terms), validation and test NDCG@10, means over seeds, and
how much of its validation score a run keeps on test (test / valid, mean of the runs' ratios),
and how sharp the validation peak that early stopping picked is (the best epoch's validation
NDCG@10 over the mean of the up to four epochs within two of it, as a change in %).

    python studies/fit.py results/records/fame_beauty/beauty
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from famerec.report import table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="records of one dataset: <spec>/<dataset>")
    args = parser.parse_args()
    rows = []
    for model in sorted(p for p in args.folder.iterdir() if p.is_dir()):
        losses, valid, test, best, peaks = [], [], [], [], []
        for run in sorted(model.iterdir()):
            if not (run / "metrics.json").is_file():
                continue
            metrics = json.loads((run / "metrics.json").read_text())
            epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            epoch = next(e for e in epochs if e["epoch"] == metrics["best_epoch"])
            losses.append(epoch.get("train_losses", {}).get("next_item", epoch["train_loss"]))
            valid.append(metrics["valid"]["NDCG@10"])
            test.append(metrics["test"]["NDCG@10"])
            best.append(metrics["best_epoch"])
            curve = {e["epoch"]: e["valid"]["NDCG@10"] for e in epochs}
            near = [curve[e] for e in range(best[-1] - 2, best[-1] + 3) if e in curve]
            near.remove(curve[best[-1]])
            if near:
                peaks.append(curve[best[-1]] / statistics.mean(near) - 1)
        if losses:
            rows.append(
                [model.name, len(losses), f"{statistics.mean(losses):.4f}",
                 f"{statistics.mean(valid):.4f}", f"{statistics.mean(test):.4f}",
                 f"{statistics.mean(t / v for t, v in zip(test, valid)):.3f}",
                 f"{100 * statistics.mean(peaks):+.2f} %" if peaks else "",
                 " ".join(map(str, best))]
            )  # fmt: skip
    headers = ["model", "runs", "train loss (best epoch)", "valid NDCG@10", "test NDCG@10"]
    extra = ["test / valid", "peak over neighbours", "best epochs"]
    print(table([*headers, *extra], rows, align="lrrrrrrl"))


if __name__ == "__main__":
    main()
