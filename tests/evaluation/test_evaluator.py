import numpy as np
import pytest
import torch

from famerec.data.batching import EvalBatches
from famerec.data.split import PrefixSet
from famerec.evaluation import evaluate


class FixedScores(torch.nn.Module):
    """Scores item i as i (higher id = better), whatever the sequence."""

    def __init__(self, num_items):
        super().__init__()
        self.num_items = num_items

    def score(self, item_seq):
        scores = torch.arange(self.num_items + 1, dtype=torch.float32).repeat(len(item_seq), 1)
        scores[:, 0] = float("-inf")
        return scores


def prefixes(histories, targets):
    items = np.concatenate([np.asarray(h) for h in histories])
    lengths = np.array([len(h) for h in histories])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return PrefixSet(items, starts, starts + lengths, np.asarray(targets))


def test_seen_items_are_excluded_by_default():
    # 10 items; user history holds the two best items 10 and 9, target 8
    data = prefixes([[10, 9]], [8])
    batches = EvalBatches(data, max_len=5, batch_size=4)
    excluded = evaluate(FixedScores(10), batches, exclude_seen=True)
    kept = evaluate(FixedScores(10), batches, exclude_seen=False)
    assert excluded["NDCG@5"] == pytest.approx(1.0)  # rank 0 once 10 and 9 are gone
    assert kept["NDCG@5"] == pytest.approx(1 / np.log2(4))  # rank 2


def test_whole_history_is_excluded_not_only_max_len():
    # history longer than max_len: item 10 is older than the last 2 items but still seen
    batches = EvalBatches(prefixes([[10, 1, 2]], [9]), max_len=2, batch_size=4)
    assert evaluate(FixedScores(10), batches)["NDCG@5"] == pytest.approx(1.0)
    kept = evaluate(FixedScores(10), batches, exclude_seen=False)
    assert kept["NDCG@5"] == pytest.approx(1 / np.log2(3))  # rank 1, behind item 10


def test_averages_over_batches_and_users():
    histories = [[1], [2, 3], [4, 5, 6], [1, 2]]
    targets = [10, 10, 1, 9]
    metrics = evaluate(
        FixedScores(10),
        EvalBatches(prefixes(histories, targets), 4, batch_size=3),
        exclude_seen=False,
    )
    # ranks: 0, 0, 9 (ten items, target is the worst: 9 above it), 1
    assert metrics["HR@5"] == pytest.approx(3 / 4)
    assert metrics["HR@10"] == pytest.approx(1.0)


def test_progress_bar_only_when_asked(capsys):
    batches = EvalBatches(prefixes([[1], [2, 3], [4, 5, 6], [1, 2]], [10, 10, 1, 9]), 4, 3)
    quiet = evaluate(FixedScores(10), batches)
    assert capsys.readouterr().err == ""
    shown = evaluate(FixedScores(10), batches, progress=True, desc="validation")
    err = capsys.readouterr().err
    assert shown == quiet
    assert "validation" in err and "user/s" in err and "<" in err  # rate and time left


def test_return_ranks_gives_each_users_rank_in_user_order():
    # batches are sorted by history length, the ranks come back in the users' own order
    histories = [[1, 2, 3], [4], [2, 6]]
    targets = [10, 8, 2]
    batches = EvalBatches(prefixes(histories, targets), 4, batch_size=2)
    metrics, ranks = evaluate(FixedScores(10), batches, exclude_seen=False, return_ranks=True)
    assert ranks.tolist() == [0, 2, 8]
    assert metrics == evaluate(FixedScores(10), batches, exclude_seen=False)
    _, excluded = evaluate(FixedScores(10), batches, return_ranks=True)
    assert excluded[2] == np.iinfo(np.int64).max  # target 2 is in user 3's history
