"""Print a markdown table of finished runs: test and validation metrics, epochs, times.

python results/summarize.py runs/sasrec-beauty runs/fame-beauty ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def describe(metrics: dict) -> str:
    model = metrics["config"]["model"]
    if model["name"] == "sasrec":
        return f"SASRec (H={model['num_heads']})"
    name = "FAME w/o MoE" if model["num_experts"] == 1 else "FAME"
    origin = " from SASRec" if "init_from" in metrics else " from scratch"
    return f"{name} (H={model['num_heads']}, N={model['num_experts']}){origin}"


def main(paths: list[str]) -> None:
    print(
        "| run | model | test HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 "
        "| valid NDCG@10 | best / run epochs | train s | s / epoch |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in paths:
        metrics = json.loads((Path(path) / "metrics.json").read_text())
        test = metrics["test"]
        seconds = metrics["train_seconds"]
        print(
            f"| {Path(path).name} | {describe(metrics)} | "
            + " | ".join(
                f"{test[k]:.4f}" for k in ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")
            )
            + f" | {metrics['valid']['NDCG@10']:.4f} | {metrics['best_epoch']} / "
            f"{metrics['epochs_run']} | {seconds:.0f} | {seconds / metrics['epochs_run']:.1f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
