"""A model's old recipe against a new one, seed by seed: quality, epochs and minutes, paired test.

Each side is a list of finished run directories, one per seed, in the same seed order (the
runs' config.json must name the same seeds). For each run: the best validation NDCG@10 and its
epoch, the epochs run, training plus validation minutes (the log's), and test NDCG@10 and
HR@10. Then mean ± std per side and two paired t-tests of per-user test NDCG@10: each seed's
pair, and the users' means over the seeds (new against old; a positive difference means the
new recipe ranks better).

"Loses nothing", the rule a new default must pass: its mean best validation NDCG@10 is at least
`--tolerance` (0.99) of the old one's, and its test NDCG@10 is not significantly lower
(p >= 0.05 on the seed means, or a higher mean).

    R=results/records
    python benchmarks/recipes.py --old $R/fame_beauty/beauty/sasrec/num_heads=2,seed={42,1,2} \\
        --new $R/recipes_beauty/beauty/sasrec/num_heads=2,seed={42,1,2}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from famerec.evaluation.significance import paired_t_test, per_user, saved_test_ranks  # noqa: E402
from famerec.runs.dir import logged_seconds  # noqa: E402

METRIC = "NDCG@10"


def run_row(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {
        "seed": config["train"]["seed"],
        "valid": metrics["valid"][METRIC],
        "best_epoch": metrics["best_epoch"],
        "epochs": len(log),
        "minutes": logged_seconds(log) / 60,
        "test": metrics["test"][METRIC],
        "test_hr": metrics["test"]["HR@10"],
        "threads": config["train"]["threads"],
        "per_user": per_user(saved_test_ranks(run), METRIC),
    }


def spread(values: list[float], digits: int = 4) -> str:
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(old: list[dict], new: list[dict], tolerance: float) -> str:
    lines = [
        "| recipe | seed | best valid NDCG@10 | best epoch | epochs run | minutes "
        "(train + valid) | threads | test NDCG@10 | test HR@10 | p (paired, vs old) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in (("old", old), ("new", new)):
        for index, row in enumerate(rows):
            p = paired_t_test(old[index]["per_user"], row["per_user"]) if name == "new" else None
            lines.append(
                f"| {name} | {row['seed']} | {row['valid']:.4f} | {row['best_epoch']} | "
                f"{row['epochs']} | {row['minutes']:.1f} | {row['threads']} | {row['test']:.4f} | "
                f"{row['test_hr']:.4f} | {'' if p is None else f'{p:.3f}'} |"
            )
    old_users = np.mean([row["per_user"] for row in old], axis=0)
    new_users = np.mean([row["per_user"] for row in new], axis=0)
    p = paired_t_test(old_users, new_users)
    for name, rows in (("old", old), ("new", new)):
        cells = [
            spread([r[key] for r in rows], digits)
            for key, digits in (("valid", 4), ("best_epoch", 1), ("epochs", 1), ("minutes", 1))
        ]
        cells += ["", spread([r["test"] for r in rows]), spread([r["test_hr"] for r in rows])]
        cells.append(f"{p:.3f}" if name == "new" else "")
        lines.append(f"| {name}, mean | | " + " | ".join(cells) + " |")
    valid_ok = statistics.mean(r["valid"] for r in new) >= tolerance * statistics.mean(
        r["valid"] for r in old
    )
    test_ok = p >= 0.05 or new_users.mean() >= old_users.mean()
    lines.append("")
    lines.append(
        f"loses nothing: {'yes' if valid_ok and test_ok else 'NO'} (validation "
        f"{'within' if valid_ok else 'below'} {tolerance:.0%} of the old mean; test NDCG@10 "
        f"{'not significantly lower' if test_ok else 'significantly lower'}, p = {p:.3f} "
        f"on the users' means over {len(new)} seeds, difference "
        f"{new_users.mean() - old_users.mean():+.4f})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", nargs="+", type=Path, required=True, help="run dirs, one a seed")
    parser.add_argument("--new", nargs="+", type=Path, required=True, help="same seeds, same order")
    parser.add_argument("--tolerance", type=float, default=0.99)
    parser.add_argument("--record", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    old, new = [run_row(r) for r in args.old], [run_row(r) for r in args.new]
    if [r["seed"] for r in old] != [r["seed"] for r in new]:
        parser.error("--old and --new must list the same seeds in the same order")
    text = table(old, new, args.tolerance)
    print(text)
    if args.record:
        args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
