import math

import pytest
import torch

from famerec.evaluation import metrics_from_ranks, target_ranks

NEG_INF = float("-inf")


def test_rank_one_is_a_hit_everywhere():
    scores = torch.tensor([[NEG_INF, 0.1, 0.9, 0.3]])
    ranks = target_ranks(scores, torch.tensor([2]))
    assert ranks.tolist() == [0]
    metrics = metrics_from_ranks(ranks)
    assert metrics["HR@5"] == metrics["HR@10"] == metrics["HR@20"] == 1.0
    assert metrics["NDCG@5"] == metrics["NDCG@10"] == metrics["NDCG@20"] == 1.0


def test_hand_computed_ranks_and_ndcg():
    # target scores: 0.5 ranked behind 2 items (rank 2); 0.2 behind 3 (rank 3)
    scores = torch.tensor(
        [
            [NEG_INF, 0.9, 0.8, 0.5, 0.1],
            [NEG_INF, 0.9, 0.8, 0.7, 0.2],
        ]
    )
    ranks = target_ranks(scores, torch.tensor([3, 4]))
    assert ranks.tolist() == [2, 3]
    metrics = metrics_from_ranks(ranks)
    assert metrics["HR@5"] == 1.0
    expected = (1 / math.log2(4) + 1 / math.log2(5)) / 2
    assert metrics["NDCG@5"] == pytest.approx(expected)


def test_ties_count_against_the_target():
    # two other items tie with the target: pessimistic rank 2
    scores = torch.tensor([[NEG_INF, 0.5, 0.5, 0.5, 0.1]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [2]
    # a model that scores everything alike gets no credit at k=5 among 30 items
    flat = torch.zeros(1, 31)
    flat[0, 0] = NEG_INF
    ranks = target_ranks(flat, torch.tensor([7]))
    assert ranks.tolist() == [29]
    assert metrics_from_ranks(ranks)["HR@20"] == 0.0


def test_target_beyond_20_is_a_miss_and_between_cutoffs():
    scores = torch.cat([torch.tensor([NEG_INF]), torch.linspace(1.0, 0.0, 40)]).unsqueeze(0)
    # item i+1 has the i-th highest score; item 26 has rank 25; item 8 has rank 7
    ranks = target_ranks(scores.repeat(2, 1), torch.tensor([26, 8]))
    assert ranks.tolist() == [25, 7]
    metrics = metrics_from_ranks(ranks)
    assert metrics["HR@5"] == 0.0
    assert metrics["HR@10"] == 0.5 and metrics["HR@20"] == 0.5
    assert metrics["NDCG@10"] == pytest.approx(0.5 / math.log2(9))


def test_excluded_target_is_never_a_hit():
    scores = torch.tensor([[NEG_INF, NEG_INF, 0.3]])
    ranks = target_ranks(scores, torch.tensor([1]))
    assert metrics_from_ranks(ranks)["HR@20"] == 0.0


@pytest.mark.parametrize(
    "row, target",
    [
        ([NEG_INF, 0.1, math.nan, 0.3], 2),  # the target's own score is NaN
        ([NEG_INF, math.nan, 0.9, 0.3], 2),  # another item is NaN: no order to speak of
        ([NEG_INF, math.inf, 0.9, 0.3], 2),  # +inf elsewhere: infinitely far above
        ([NEG_INF, 0.1, math.inf, 0.3], 2),  # +inf target: inf - inf is NaN
        ([math.nan] * 4, 1),  # a diverged model scores everything NaN
    ],
)
def test_non_finite_scores_are_a_miss(row, target):
    ranks = target_ranks(torch.tensor([row, [NEG_INF, 0.1, 0.9, 0.3]]), torch.tensor([target, 2]))
    assert ranks[0] > 1000 and ranks[1] == 0
    metrics = metrics_from_ranks(ranks)
    assert metrics["HR@10"] == 0.5 and metrics["NDCG@10"] == 0.5
    assert all(math.isfinite(value) for value in metrics.values())
