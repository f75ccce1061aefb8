"""Full-ranking evaluation: every user's target ranked against the whole item set."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from famerec.data.batching import EvalBatches
from famerec.evaluation.metrics import CUTOFFS, metric_sums, target_ranks
from famerec.models.base import SequentialRecommender


class Shard(Protocol):
    """One of `world_size` processes that evaluate together (`famerec.training.distributed`)."""

    rank: int
    world_size: int

    def sum_(self, tensor: torch.Tensor) -> None:
        """Add up `tensor` over the processes, in place, on every process."""


@torch.inference_mode()
def evaluate(
    model: SequentialRecommender,
    batches: EvalBatches,
    exclude_seen: bool = True,
    cutoffs: tuple[int, ...] = CUTOFFS,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "evaluating",
    return_ranks: bool = False,
    shard: Shard | None = None,
) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """HR@k and NDCG@k averaged over all users of `batches`.

    With `exclude_seen`, items of the user's whole input history get score -inf before ranking.
    `progress` shows a bar with users per second and the time left (callers ask for it only
    when stderr is a terminal: a full ranking of a large dataset takes a while).
    With `return_ranks`, also the 0-based rank of every user's target (int64, in the order of
    the users of the PrefixSet; a huge value where the target was excluded), for per-user
    statistics such as paired significance tests.

    With `shard`, this process scores only batches shard.rank, shard.rank + world_size, ...
    (whole batches, so each user's scores are computed exactly as by one process), and the
    per-user ranks are summed over the processes (each rank is nonzero on one process only).
    Every process then adds up the metrics batch by batch, in the single-process order, so all
    of them return exactly what one process evaluating every batch returns.
    """
    was_training = model.training
    model.eval()
    ranks = torch.zeros(batches.num_users, dtype=torch.int64, device=batches.device)
    first, step = (0, 1) if shard is None else (shard.rank, shard.world_size)
    mine = range(first, len(batches), step)
    device_type = batches.device.type
    bar = tqdm(
        total=sum(batches.rows(index).stop - batches.rows(index).start for index in mine),
        desc=desc,
        unit="user",
        unit_scale=True,
        leave=False,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for index in mine:
            batch = batches.batch(index)
            with torch.autocast(
                device_type,
                dtype=autocast_dtype or torch.bfloat16,
                enabled=autocast_dtype is not None,
            ):
                scores = model.score(batch.inputs)  # (B, V + 1), float32
            if exclude_seen:
                scores[batch.seen_rows, batch.seen_items] = float("-inf")
            ranks[batches.rows(index)] = target_ranks(scores, batch.targets)
            bar.update(len(batch.targets))
    finally:
        bar.close()
        model.train(was_training)
    if shard is not None and shard.world_size > 1:
        shard.sum_(ranks)
    totals = dict.fromkeys([f"{m}@{k}" for m in ("HR", "NDCG") for k in cutoffs], 0.0)
    for index in range(len(batches)):
        for name, value in metric_sums(ranks[batches.rows(index)], cutoffs).items():
            totals[name] += value
    metrics = {name: value / max(batches.num_users, 1) for name, value in totals.items()}
    if not return_ranks:
        return metrics
    by_user = np.zeros(batches.num_users, dtype=np.int64)
    by_user[batches.users] = ranks.cpu().numpy()
    return metrics, by_user
