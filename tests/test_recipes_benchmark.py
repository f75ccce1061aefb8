"""benchmarks/recipes.py: old against new recipe, seed by seed, with fewer old seeds or runs
whose per-user ranks were not kept."""

import json
from pathlib import Path

import numpy as np

from benchmarks.recipes import run_row, table
from famerec.evaluation.significance import paired_t_test, per_user
from famerec.experiments.report import fmt_p
from famerec.runs.dir import RANKS


def write_run(folder: Path, seed: int, valid: float, test_ranks: list[int] | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": {"seed": seed, "threads": 1}}))
    metrics = {
        "valid": {"NDCG@10": valid},
        "test": {"NDCG@10": 0.05, "HR@10": 0.09},
        "best_epoch": 2,
        "device": "cpu",
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    epochs = [{"epoch": n, "train_seconds": 60.0, "eval_seconds": 6.0} for n in (1, 2, 3)]
    (folder / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    if test_ranks is not None:
        users = np.arange(len(test_ranks))[::-1]  # saved in another order than the users'
        np.savez(folder / RANKS, test_users=users, test_ranks=np.array(test_ranks)[::-1])
    return folder


def test_fewer_old_seeds_and_runs_without_ranks(tmp_path):
    worse, better = [0, 12, 3, 40, 1, 30, 8, 2], [0, 2, 1, 9, 0, 4, 3, 1]
    old = [run_row(write_run(tmp_path / "old42", 42, 0.060, worse))]
    new = [
        run_row(write_run(tmp_path / "new42", 42, 0.066, None)),  # a record without ranks
        run_row(write_run(tmp_path / "new1", 1, 0.070, better)),
        run_row(write_run(tmp_path / "new2", 2, 0.068, better[::-1])),
    ]
    assert new[0]["per_user"] is None and new[1]["minutes"] == 3.3
    text = table(old, new, 0.99)
    rows = [line for line in text.splitlines() if line.startswith("| new | ")]
    assert all(row.endswith("|  |") for row in rows)  # no ranks, or no old run of that seed
    assert "of new seeds 1, 2 against old seeds 42 (the runs with per-user ranks" in text
    assert text.splitlines()[-1].startswith("loses nothing: yes")


def test_no_ranks_on_one_side_decides_nothing(tmp_path):
    old = [run_row(write_run(tmp_path / "old", 42, 0.060, None))]
    new = [run_row(write_run(tmp_path / "new", 42, 0.070, [0, 1, 2, 3]))]
    assert "loses nothing: not decided" in table(old, new, 0.99)
    both = [run_row(write_run(tmp_path / "old2", 42, 0.060, [5, 1, 2, 30]))]
    assert "over 1 seed with per-user ranks" in table(both, new, 0.99)


def test_runs_pair_by_seed_not_by_order(tmp_path):
    ranks = {1: [0, 3, 9, 1, 20, 2], 2: [5, 0, 1, 30, 2, 7]}
    old = [run_row(write_run(tmp_path / f"old{seed}", seed, 0.06, ranks[seed])) for seed in (2, 1)]
    better = {1: [0, 1, 2, 0, 4, 1], 2: [1, 0, 0, 9, 1, 2]}
    new = [run_row(write_run(tmp_path / f"new{seed}", seed, 0.07, better[seed])) for seed in (1, 2)]
    rows = [line for line in table(old, new, 0.99).splitlines() if line.startswith("| new | ")]
    for row, seed in zip(rows, (1, 2), strict=True):
        expected = paired_t_test(per_user(ranks[seed]), per_user(better[seed]))
        assert row.endswith(f"| {fmt_p(expected)} |")
    assert "over 2 seeds with per-user ranks" in table(old, new, 0.99)
