"""Paired significance tests on per-user metrics of the same test users."""

from __future__ import annotations

import math

import numpy as np
import torch

from famerec.evaluation import user_gains


def user_ndcg(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Each user's NDCG@k from 0-based target ranks."""
    return user_gains(torch.from_numpy(np.asarray(ranks, dtype=np.int64)), k)[1].numpy()


def paired_t_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of a paired t-test of mean(a - b) = 0 (nan when a == b everywhere)."""
    from scipy import stats

    if len(a) < 2 or np.array_equal(a, b):
        return math.nan
    return float(stats.ttest_rel(a, b).pvalue)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0, chunk: int = 100
) -> float:
    """Two-sided p-value of mean(a - b) = 0 from a paired bootstrap over users: twice the share
    of resampled mean differences on the far side of 0 (deterministic for a given seed)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(diff) < 2 or not diff.any():
        return math.nan
    rng = np.random.default_rng(seed)
    below = above = 0
    for start in range(0, samples, chunk):
        count = min(chunk, samples - start)
        means = diff[rng.integers(0, len(diff), size=(count, len(diff)))].mean(axis=1)
        below += int((means <= 0).sum())
        above += int((means >= 0).sum())
    return min(1.0, 2 * min(below, above) / samples)
