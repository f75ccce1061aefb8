"""Ingestion of a 20-million-row interaction table, the size of MovieLens-20m.

    python benchmarks/ingest.py              # 20M rows, CSV and Parquet
    python benchmarks/ingest.py --rows 2000000

The table (userId,movieId,rating,timestamp with a header, like ML-20m's ratings.csv) is
generated at run time from a seed: 138,493 users, 26,744 items, Zipf-like item popularity
(scaled down with --rows).
Each format is read in a fresh subprocess by `famerec.data.read_table` with 5-core filtering;
the table reports wall time and the subprocess's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

USERS, ITEMS = 138_493, 26_744


def generate(rows: int, directory: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    scale = min(1.0, rows / 20_000_000)  # smaller tables keep ML-20m's density
    num_users, num_items = max(50, int(USERS * scale)), max(50, int(ITEMS * scale))
    users = rng.integers(1, num_users + 1, size=rows, dtype=np.int64)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    items = rng.choice(num_items, size=rows, p=popularity / popularity.sum()) + 1
    frame = pl.DataFrame(
        {
            "userId": users,
            "movieId": items,
            "rating": rng.integers(1, 11, size=rows) / 2.0,
            "timestamp": rng.integers(789_652_009, 1_427_784_002, size=rows),
        }
    )
    paths = {"csv": directory / "ratings.csv", "parquet": directory / "ratings.parquet"}
    frame.write_csv(paths["csv"])
    frame.write_parquet(paths["parquet"])
    return paths


def ingest(path: str) -> dict:
    from famerec.data import read_table

    started = time.perf_counter()
    data = read_table(path, user_col="userId", item_col="movieId", kcore=5)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "users": data.num_users,
        "items": data.num_items,
        "actions": data.num_actions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(ingest(args.one)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        paths = generate(args.rows, Path(tmp))
        generated = time.perf_counter() - started
        print(f"generated {args.rows:,} rows in {generated:.0f} s", file=sys.stderr)
        print(
            "| format | rows | file size (MB) | ingest with 5-core (s) | rows/s | peak RSS (GiB) "
            "| users / items / actions kept |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for kind, path in paths.items():
            output = subprocess.run(
                [sys.executable, __file__, "--one", str(path)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(output.strip().splitlines()[-1])
            size = path.stat().st_size / 1e6
            kept = f"{result['users']:,} / {result['items']:,} / {result['actions']:,}"
            print(
                f"| {kind} | {args.rows:,} | {size:,.0f} | {result['seconds']:.1f} | "
                f"{args.rows / result['seconds']:,.0f} | {result['peak_rss_gib']:.2f} | {kept} |"
            )


if __name__ == "__main__":
    main()
