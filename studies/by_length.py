"""Where does one model beat another? Relative NDCG@10 by the user's sequence length, from
committed experiment records alone (their per-user ranks), averaged over the seeds.

    python studies/by_length.py results/records/fame_beauty/beauty \
        fame-warm:sasrec-continued fame-warm-lr3e-4:sasrec-lr3e-4

Each pair A:B prints, for the validation and the test split, A's mean per-user NDCG@10 over B's
(as a change in %) for all users and for users grouped by the length of their whole sequence
(the test input is that length minus one, validation minus two). Both models' runs must have
the same seeds. Descriptive only: nothing here selects anything.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from famerec.config import DataConfig
from famerec.data import load_dataset
from famerec.evaluation.significance import per_user
from famerec.report import table
from famerec.runs.dir import read_ranks

GROUPS = ((5, 6), (7, 8), (9, 12), (13, 20), (21, None))


def seed_runs(folder: Path, model: str) -> dict[int, Path]:
    runs = {}
    for run in sorted((folder / model).iterdir()):
        if (run / "ranks.npz").is_file():
            runs[json.loads((run / "config.json").read_text())["train"]["seed"]] = run
    return runs


def mean_gains(runs: dict[int, Path], seeds: list[int], split: str) -> np.ndarray:
    """(users,) per-user NDCG@10 in user order, averaged over the seeds."""
    gains = []
    for seed in seeds:
        users, ranks = read_ranks(runs[seed] / "ranks.npz")[split]
        gains.append(per_user(ranks[np.argsort(users)]))
    return np.mean(gains, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="records of one dataset: <spec>/<dataset>")
    parser.add_argument("pairs", nargs="+", help="A:B model names in that folder")
    args = parser.parse_args()
    config = json.loads(next(args.folder.glob("*/*/config.json")).read_text())
    data = load_dataset(DataConfig(**config["data"]))
    lengths = np.asarray(data.lengths)
    headers = ["A vs B", "split", "all"]
    for low, high in GROUPS:
        count = ((lengths >= low) & (lengths <= (high or lengths.max()))).sum()
        headers.append(f"{low}-{high or ''} ({count:,})")
    rows = []
    for pair in args.pairs:
        a, b = pair.split(":")
        runs_a, runs_b = seed_runs(args.folder, a), seed_runs(args.folder, b)
        seeds = sorted(set(runs_a) & set(runs_b))
        if not seeds:
            raise SystemExit(f"{a} and {b} have no finished seed in common in {args.folder}")
        for split in ("valid", "test"):
            gain_a, gain_b = mean_gains(runs_a, seeds, split), mean_gains(runs_b, seeds, split)
            cells = [f"{100 * (gain_a.mean() / gain_b.mean() - 1):+.1f} %"]
            for low, high in GROUPS:
                rows_in = (lengths >= low) & (lengths <= (high or lengths.max()))
                change = gain_a[rows_in].mean() / gain_b[rows_in].mean() - 1
                cells.append(f"{100 * change:+.1f} %")
            rows.append([f"{a} vs {b} (seeds {', '.join(map(str, seeds))})", split, *cells])
    print(f"{args.folder}: NDCG@10 of A relative to B by sequence length (users in brackets)")
    print(table(headers, rows, align="ll" + "r" * (len(headers) - 2)))


if __name__ == "__main__":
    main()
