"""Full-ranking evaluation: every user's target ranked against the whole item set."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from famerec.data.batching import EvalBatches
from famerec.evaluation.metrics import CUTOFFS, metric_sums, target_ranks
from famerec.models.base import SequentialRecommender


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
) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """HR@k and NDCG@k averaged over all users of `batches`.

    With `exclude_seen`, items of the user's whole input history get score -inf before ranking.
    `progress` shows a bar with users per second and the time left (callers ask for it only
    when stderr is a terminal: a full ranking of a large dataset takes a while).
    With `return_ranks`, also the 0-based rank of every user's target (int64, in the order of
    the users of the PrefixSet; a huge value where the target was excluded), for per-user
    statistics such as paired significance tests.
    """
    was_training = model.training
    model.eval()
    totals = dict.fromkeys([f"{m}@{k}" for m in ("HR", "NDCG") for k in cutoffs], 0.0)
    device_type = batches.device.type
    bar = tqdm(
        total=batches.num_users,
        desc=desc,
        unit="user",
        unit_scale=True,
        leave=False,
        disable=not progress,
        dynamic_ncols=True,
    )
    batch_ranks = []
    try:
        for batch in batches:
            with torch.autocast(
                device_type,
                dtype=autocast_dtype or torch.bfloat16,
                enabled=autocast_dtype is not None,
            ):
                scores = model.score(batch.inputs)  # (B, V + 1), float32
            if exclude_seen:
                scores[batch.seen_rows, batch.seen_items] = float("-inf")
            ranks = target_ranks(scores, batch.targets)
            if return_ranks:
                batch_ranks.append(ranks.cpu())
            for name, value in metric_sums(ranks, cutoffs).items():
                totals[name] += value
            bar.update(len(batch.targets))
    finally:
        bar.close()
        model.train(was_training)
    metrics = {name: value / max(batches.num_users, 1) for name, value in totals.items()}
    if not return_ranks:
        return metrics
    by_user = np.zeros(batches.num_users, dtype=np.int64)
    if batch_ranks:
        by_user[batches.users] = torch.cat(batch_ranks).numpy()
    return metrics, by_user
