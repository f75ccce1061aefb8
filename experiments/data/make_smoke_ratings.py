"""Write smoke-ratings.csv: a tiny MovieLens-style ratings table for experiments/smoke.toml.

Each of 60 users walks through 30 items, often one step at a time, sometimes two, sometimes
anywhere (a pattern that a model learns in part in a few epochs), with MovieLens's header
userId,movieId,rating,timestamp.

    python experiments/data/make_smoke_ratings.py
"""

from pathlib import Path

import numpy as np


def main() -> None:
    rng = np.random.default_rng(0)
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, 61):
        item = int(rng.integers(1, 31))
        for step in range(int(rng.integers(5, 13))):
            rating = float(rng.integers(1, 11)) / 2
            rows.append(f"{user},{item},{rating:.1f},{1_500_000_000 + 1000 * user + step}")
            step = int(rng.choice([1, 2, int(rng.integers(3, 30))], p=[0.5, 0.2, 0.3]))
            item = (item + step - 1) % 30 + 1
    path = Path(__file__).with_name("smoke-ratings.csv")
    path.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
