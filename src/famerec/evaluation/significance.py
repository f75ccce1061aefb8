"""Is one model better than another on the same test users? Paired tests on per-user metrics.

Both runs rank the held-out item of the same users, so per-user NDCG@k (or HR@k) differences
are paired; the paired t-test asks whether their mean differs from zero.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from famerec.errors import FamerecError
from famerec.runs.dir import RANKS


def per_user(ranks: np.ndarray, metric: str = "NDCG@10") -> np.ndarray:
    """0-based ranks -> each user's HR@k or NDCG@k (float64)."""
    name, k = metric.split("@")
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks < int(k)
    if name == "HR":
        return hit.astype(np.float64)
    if name == "NDCG":
        return np.where(hit, 1.0 / np.log2(np.minimum(ranks, int(k)) + 2.0), 0.0)
    raise ValueError(f"unknown metric '{metric}'")


def paired_t_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test of mean(b - a) = 0 (1.0 when a equals b)."""
    difference = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    n = len(difference)
    if n < 2:
        raise FamerecError("a paired test needs at least two users")
    spread = difference.std(ddof=1)
    if spread == 0:
        return 1.0 if difference.mean() == 0 else 0.0
    t = difference.mean() / (spread / math.sqrt(n))
    try:
        from scipy import stats

        return float(2 * stats.t.sf(abs(t), df=n - 1))
    except ImportError:  # normal approximation: exact enough for thousands of users
        return math.erfc(abs(t) / math.sqrt(2))


def saved_test_ranks(run: str | Path) -> np.ndarray:
    """The per-user test ranks a finished run saved (in user order)."""
    path = Path(run) / RANKS
    if not path.is_file():
        raise FamerecError(f"{run} has no {RANKS} (runs before per-user ranks were saved)")
    with np.load(path, allow_pickle=False) as arrays:
        order = np.argsort(arrays["test_users"], kind="stable")
        return arrays["test_ranks"][order]


def paired_test_for_runs(run_a: str | Path, run_b: str | Path, metric: str = "NDCG@10"):
    """p-value of the paired t-test on per-user `metric` of two runs on the same test users;
    None when either run lacks per-user ranks or their users differ."""
    try:
        a, b = saved_test_ranks(run_a), saved_test_ranks(run_b)
    except FamerecError:
        return None
    if len(a) != len(b):
        return None
    return paired_t_test(per_user(a, metric), per_user(b, metric))


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0, chunk: int = 100
) -> float:
    """Two-sided p-value of mean(b - a) = 0 from a paired bootstrap over users: twice the share
    of resampled mean differences on the far side of 0 (1.0 when a equals b; the same result
    for the same seed)."""
    difference = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    if len(difference) < 2:
        raise FamerecError("a paired test needs at least two users")
    if not difference.any():
        return 1.0
    rng = np.random.default_rng(seed)
    below = above = 0
    for start in range(0, samples, chunk):
        count = min(chunk, samples - start)
        means = difference[rng.integers(0, len(difference), size=(count, len(difference)))]
        means = means.mean(axis=1)
        below += int((means <= 0).sum())
        above += int((means >= 0).sum())
    return min(1.0, 2 * min(below, above) / samples)
