"""Evaluation: full-ranking HR@k and NDCG@k under leave-one-out."""

from famerec.evaluation.evaluator import evaluate
from famerec.evaluation.metrics import (
    CUTOFFS,
    METRIC_NAMES,
    metric_sums,
    metrics_from_ranks,
    target_ranks,
)

__all__ = [
    "CUTOFFS",
    "METRIC_NAMES",
    "evaluate",
    "metric_sums",
    "metrics_from_ranks",
    "target_ranks",
]
