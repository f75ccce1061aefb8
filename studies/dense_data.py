"""Small dense sequence data, generated from a seed, on which validation curves are slow and
uneven: models learn popularity and taste within a few epochs, then sit on a plateau before
they pick up the item-to-item transitions (the case that stopped SASRec too early).

    python studies/dense_data.py OUT.txt [--seed 0] [--items 1000] [--follow 0.15] [--taste 0.5]
"""

from __future__ import annotations

import argparse

import numpy as np


def dense_sequences(
    users: int = 1000,
    items: int = 1000,
    length: int = 50,
    topics: int = 25,
    follow: float = 0.15,
    taste: float = 0.5,
    seed: int = 0,
) -> list[list[int]]:
    """Each user has a few favourite topics; every next item follows one of the current item's
    four successors (probability `follow`), is drawn from the user's taste (`taste`), or is a
    popular item. Items are 1..items, lengths length +- 10."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(topics, size=items)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity = popularity[rng.permutation(items)]
    successors = np.empty((items, 4), dtype=np.int64)
    for item in range(items):
        successors[item] = rng.choice(np.flatnonzero(topic == topic[item]), 4)
    popular = popularity / popularity.sum()
    sequences = []
    for _ in range(users):
        weights = popularity * rng.dirichlet(np.full(topics, 0.1))[topic]
        weights /= weights.sum()
        steps = int(rng.integers(length - 10, length + 11)) - 1
        current = rng.choice(items, p=weights)
        sequence = [int(current) + 1]
        for _ in range(steps):
            draw = rng.random()
            if draw < follow:
                current = successors[current, rng.integers(4)]
            elif draw < follow + taste:
                current = rng.choice(items, p=weights)
            else:
                current = rng.choice(items, p=popular)
            sequence.append(int(current) + 1)
        sequences.append(sequence)
    return sequences


def write_dense(path, **kwargs) -> None:
    """A sequence file (`user item item ...`) that `famerec train --data` reads."""
    lines = [" ".join(map(str, [user, *s])) for user, s in enumerate(dense_sequences(**kwargs), 1)]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    for name in ("seed", "users", "items"):
        parser.add_argument(f"--{name}", type=int, default=argparse.SUPPRESS)
    for name in ("follow", "taste"):
        parser.add_argument(f"--{name}", type=float, default=argparse.SUPPRESS)
    args = vars(parser.parse_args())
    write_dense(args.pop("out"), **args)


if __name__ == "__main__":
    main()
