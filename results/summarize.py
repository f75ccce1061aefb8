"""Print a markdown table of finished runs: test and validation metrics, epochs, times.

python results/summarize.py runs/sasrec-beauty runs/fame-beauty ...
python results/summarize.py --seeds runs/sasrec-beauty runs/sasrec-beauty-seed1 ...
    (mean and standard deviation over the runs of each model, e.g. one per seed)
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")


def describe(metrics: dict) -> str:
    """A short model label with the settings that differ from the defaults."""
    config = metrics["config"]
    model, train = config["model"], config["train"]
    # FAME's own settings: in the "fame" section, or (older runs) in "model"/"train".
    fame = {**model, **train, **config.get("fame", {})}
    if model["name"] != "fame":
        label = f"{model['name']} (H={model['num_heads']}, d={model['hidden_size']})"
        return label + (" from a run" if "init_from" in metrics else "")
    name = "FAME w/o MoE" if fame["num_experts"] == 1 else "FAME"
    label = f"{name} (H={model['num_heads']}, N={fame['num_experts']})"
    label += " from SASRec" if "init_from" in metrics else " from scratch"
    if fame.get("freeze_epochs"):
        label += f", {fame['freeze_epochs']} frozen epochs"
    if fame.get("warm_start"):
        label += ", warm start"
    if train["lr"] != 1e-3:
        label += f", lr {train['lr']:g}"
    if not fame.get("attn_residual", True):
        label += ", no attention residual"
    return label


def main(paths: list[str]) -> None:
    print(
        "| run | dataset | model | test HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 "
        "| valid NDCG@10 | best / run epochs | train s | s / epoch | wall s |"
    )
    print("| --- | --- | --- |" + " ---: |" * 12)
    for path in paths:
        metrics = json.loads((Path(path) / "metrics.json").read_text())
        test = metrics["test"]
        seconds = metrics["train_seconds"]
        print(
            f"| {Path(path).name} | {metrics['dataset']['name']} | {describe(metrics)} | "
            + " | ".join(f"{test[k]:.4f}" for k in METRICS)
            + f" | {metrics['valid']['NDCG@10']:.4f} | {metrics['best_epoch']} / "
            f"{metrics['epochs_run']} | {seconds:.0f} | {seconds / metrics['epochs_run']:.1f} "
            f"| {metrics.get('wall_seconds', float('nan')):.0f} |"
        )


def seeds(paths: list[str]) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        metrics = json.loads((Path(path) / "metrics.json").read_text())
        groups[f"{metrics['dataset']['name']} | {describe(metrics)}"].append(metrics)
    columns = (("test", "NDCG@10"), ("test", "HR@10"), ("valid", "NDCG@10"))
    print("| dataset | model | runs (seeds) | test NDCG@10 | test HR@10 | valid NDCG@10 |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for label, runs in groups.items():
        cells = []
        for split, name in columns:
            values = [run[split][name] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f}")
        seed_list = ", ".join(str(run["config"]["train"]["seed"]) for run in runs)
        print(f"| {label} | {len(runs)} ({seed_list}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seeds"]:
        seeds(sys.argv[2:])
    else:
        main(sys.argv[1:])
