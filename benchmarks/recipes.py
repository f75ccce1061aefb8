"""A model's old recipe against a new one, seed by seed: quality, epochs and minutes, paired test.

Each side is a list of finished run directories (or their records), one per seed. For each
run: the best validation NDCG@10 and its epoch, the epochs run, training plus validation
minutes (the log's), the device and threads, and test NDCG@10 and HR@10. Then mean ± std per
side and paired t-tests of per-user test NDCG@10: each new run against the old run of the same
seed, and the users' means over each side's seeds (new against old; a positive difference
means the new recipe ranks better).

The old side may have fewer seeds than the new one, where the old recipe costs too much to
rerun (MiaSRec's took 505 minutes of one thread): the users' means then average different
numbers of seeds, and the table says so. A run without per-user ranks (`ranks.npz`: records
copied before they were kept) gets no p-value and is left out of the users' means.

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

from famerec.errors import FamerecError  # noqa: E402
from famerec.evaluation.significance import paired_t_test, per_user, saved_test_ranks  # noqa: E402
from famerec.experiments.report import fmt_p  # noqa: E402
from famerec.runs.dir import logged_seconds  # noqa: E402

METRIC = "NDCG@10"


def run_row(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    try:
        users = per_user(saved_test_ranks(run), METRIC)
    except FamerecError:  # a record kept without its ranks
        users = None
    return {
        "seed": config["train"]["seed"],
        "valid": metrics["valid"][METRIC],
        "best_epoch": metrics["best_epoch"],
        "epochs": len(log),
        "minutes": logged_seconds(log) / 60,
        "test": metrics["test"][METRIC],
        "test_hr": metrics["test"]["HR@10"],
        "threads": config["train"]["threads"],
        "device": metrics.get("device", "cpu"),
        "per_user": users,
    }


def spread(values: list[float], digits: int = 4) -> str:
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def users_mean(rows: list[dict]) -> np.ndarray | None:
    """Each user's metric averaged over the runs that kept per-user ranks (None: no run did)."""
    kept = [row["per_user"] for row in rows if row["per_user"] is not None]
    return np.mean(kept, axis=0) if kept else None


def table(old: list[dict], new: list[dict], tolerance: float) -> str:
    lines = [
        "| recipe | seed | best valid NDCG@10 | best epoch | epochs run | minutes "
        "(train + valid) | device, threads | test NDCG@10 | test HR@10 | p (paired, vs old) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    old_by_seed = {row["seed"]: row for row in old}
    for name, rows in (("old", old), ("new", new)):
        for row in rows:
            pair = old_by_seed.get(row["seed"]) if name == "new" else None
            p = None
            if pair is not None and pair["per_user"] is not None and row["per_user"] is not None:
                p = paired_t_test(pair["per_user"], row["per_user"])
            lines.append(
                f"| {name} | {row['seed']} | {row['valid']:.4f} | {row['best_epoch']} | "
                f"{row['epochs']} | {row['minutes']:.1f} | {row['device']}, {row['threads']} | "
                f"{row['test']:.4f} | {row['test_hr']:.4f} | {'' if p is None else fmt_p(p)} |"
            )
    old_users, new_users = users_mean(old), users_mean(new)
    p = None if old_users is None or new_users is None else paired_t_test(old_users, new_users)
    for name, rows in (("old", old), ("new", new)):
        cells = [
            spread([r[key] for r in rows], digits)
            for key, digits in (("valid", 4), ("best_epoch", 1), ("epochs", 1))
        ]
        same_device = len({r["device"] for r in rows}) == 1
        cells.append(spread([r["minutes"] for r in rows], 1) if same_device else "(devices differ)")
        cells += ["", spread([r["test"] for r in rows]), spread([r["test_hr"] for r in rows])]
        cells.append(fmt_p(p) if name == "new" and p is not None else "")
        lines.append(f"| {name}, mean | | " + " | ".join(cells) + " |")
    valid_ok = statistics.mean(r["valid"] for r in new) >= tolerance * statistics.mean(
        r["valid"] for r in old
    )
    lines.append("")
    if p is None:
        lines.append(
            f"loses nothing: not decided (validation {'within' if valid_ok else 'below'} "
            f"{tolerance:.0%} of the old mean; no per-user ranks on one side for a paired test)"
        )
        return "\n".join(lines)
    test_ok = p >= 0.05 or new_users.mean() >= old_users.mean()
    ranked = [[r["seed"] for r in rows if r["per_user"] is not None] for rows in (new, old)]
    seeds = f"over {len(ranked[0])} seed" + ("s" if len(ranked[0]) > 1 else "")
    seeds += " with per-user ranks"
    if sorted(ranked[0]) != sorted(ranked[1]):
        listed = [", ".join(map(str, side)) for side in ranked]
        seeds = (
            f"of new seeds {listed[0]} against old seeds {listed[1]} (the runs with per-user "
            "ranks; not the same seeds)"
        )
    lines.append(
        f"loses nothing: {'yes' if valid_ok and test_ok else 'NO'} (validation "
        f"{'within' if valid_ok else 'below'} {tolerance:.0%} of the old mean; test NDCG@10 "
        f"{'not significantly lower' if test_ok else 'significantly lower'}, p {fmt_p(p)} "
        f"on the users' means {seeds}; difference "
        f"{new_users.mean() - old_users.mean():+.4f})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", nargs="+", type=Path, required=True, help="run dirs, one a seed")
    parser.add_argument("--new", nargs="+", type=Path, required=True, help="run dirs, one a seed")
    parser.add_argument("--tolerance", type=float, default=0.99)
    parser.add_argument("--record", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    old, new = [run_row(r) for r in args.old], [run_row(r) for r in args.new]
    for name, rows in (("--old", old), ("--new", new)):
        if len({r["seed"] for r in rows}) < len(rows):
            parser.error(f"{name} lists a seed twice")
    if not {r["seed"] for r in old} <= {r["seed"] for r in new}:
        parser.error("every --old seed must also be a --new seed")
    text = table(old, new, args.tolerance)
    print(text)
    if args.record:
        args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
