"""Ranking metrics from the rank of the held-out item among all items.

Ranks are 0-based and pessimistic about ties: an item scored exactly like the target counts as
ranked above it, so a model that scores everything alike gets no credit. A target that was
excluded from the ranking (score -inf) is never a hit, and neither is a target whose row holds
a NaN or +inf score (a diverged model): such a row has no meaningful order, and without this
rule a NaN target compares below nothing and would get rank -1, a perfect hit.
"""

from __future__ import annotations

import torch

CUTOFFS = (5, 10, 20)
METRIC_NAMES = tuple(f"{m}@{k}" for m in ("HR", "NDCG") for k in CUTOFFS)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, V) scores, (B,) target ids -> (B,) 0-based rank; a huge rank (a miss) if the target
    is -inf or the row holds a NaN or +inf."""
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    # Items scored >= the target, the target itself included: higher-scored and tied items.
    # (s - t >= 0 is exact for IEEE floats and sums faster than a boolean comparison.)
    at_or_above = (scores - target_scores).ge_(0).sum(1, dtype=torch.float32)
    ranks = at_or_above.to(torch.int64) - 1
    # One reduction finds both: the maximum of a row is NaN if any entry is, +inf if any is.
    top = scores.amax(1)
    miss = torch.isneginf(target_scores[:, 0]) | torch.isnan(top) | torch.isposinf(top)
    return ranks.masked_fill(miss, torch.iinfo(torch.int64).max)


def metric_sums(ranks: torch.Tensor, cutoffs: tuple[int, ...] = CUTOFFS) -> dict[str, float]:
    """Sums (not means) of HR@k and NDCG@k over a batch, so batches can be added up."""
    sums = {}
    ranks = ranks.to(torch.float64)
    for k in cutoffs:
        hit = ranks < k
        sums[f"HR@{k}"] = float(hit.sum())
        sums[f"NDCG@{k}"] = float((hit / torch.log2(ranks.clamp(max=k) + 2.0)).sum())
    return sums


def metrics_from_ranks(ranks: torch.Tensor, cutoffs: tuple[int, ...] = CUTOFFS) -> dict[str, float]:
    sums = metric_sums(ranks, cutoffs)
    order = [f"HR@{k}" for k in cutoffs] + [f"NDCG@{k}" for k in cutoffs]
    return {name: sums[name] / max(len(ranks), 1) for name in order}
