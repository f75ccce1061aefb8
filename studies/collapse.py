"""How alike are a run's sequence vectors, column by column? A diagnostic for contrastive
regularizers that collapse the representation ranking uses (DuoRec with `--anchor last`).

For the first `--users` users of each run, the model encodes the training part of their
sequence (everything but the validation and test items), left-padded as ranking sees it, and
this prints, for the last column and a few before it, the mean cosine similarity between
different users' vectors and their mean norm. Near 1: every user gets nearly the same vector,
so the ranking barely depends on the history.

    python studies/collapse.py RUN_DIR [RUN_DIR ...] [--users 2000]
"""

from __future__ import annotations

import argparse

import torch

import famerec

BACK = (1, 2, 3, 5)  # columns L - 1, L - 2, L - 3, L - 5


def column_statistics(run_dir: str, users: int) -> list[tuple[int, float, float]]:
    """(back, mean pairwise cosine, mean norm) for each column L - back."""
    recommender = famerec.load(run_dir)
    data = recommender.data
    rows = range(min(users, len(data.user_ids)))
    sequences = [list(data.sequence(row))[:-2] for row in rows]  # training part of each user
    item_seq = recommender._pad(sequences)  # (U, L) left-padded, as ranking sees them
    with torch.inference_mode():
        vectors = recommender.model.eval().query_vectors(item_seq).float()  # (U, L, d)
    statistics = []
    for back in BACK:
        present = item_seq[:, -back] != 0
        columns = vectors[present, -back]  # (u, d) users with an item at that column
        unit = torch.nn.functional.normalize(columns, dim=1)
        cosine = unit @ unit.T
        count = len(unit)
        mean_cosine = (cosine.sum() - cosine.diagonal().sum()) / (count * (count - 1))
        statistics.append((back, float(mean_cosine), float(columns.norm(dim=1).mean())))
    return statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (famerec train --out)")
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = " | ".join(f"column L-{back}: cosine / norm" for back in BACK)
    print(f"| run | {header} |")
    print("| --- |" + " ---: |" * len(BACK))
    for run in args.runs:
        cells = " | ".join(
            f"{cos:.3f} / {norm:.1f}" for _, cos, norm in column_statistics(run, args.users)
        )
        print(f"| {run} | {cells} |")


if __name__ == "__main__":
    main()
