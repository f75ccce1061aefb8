import numpy as np

from famerec.data.sequences import from_user_sequences
from famerec.data.split import leave_one_out


def make(seqs):
    return from_user_sequences(
        "t", np.arange(len(seqs)), [np.array(s) for s in seqs], np.arange(1, 11)
    )


def test_leave_one_out_prefixes_and_targets():
    data = make([[1, 2, 3, 4, 5], [6, 7, 8]])
    split = leave_one_out(data)
    hist = lambda p, u: p.items[p.starts[u] : p.ends[u]].tolist()  # noqa: E731
    assert hist(split.train, 0) == [1, 2, 3] and hist(split.train, 1) == [6]
    assert hist(split.valid, 0) == [1, 2, 3] and split.valid.targets.tolist() == [4, 7]
    assert hist(split.test, 0) == [1, 2, 3, 4] and split.test.targets.tolist() == [5, 8]
    assert hist(split.test, 1) == [6, 7]


def test_every_item_used_once_as_a_target_outside_training():
    data = make([[1, 2, 3, 4], [5, 6, 7, 8, 9, 10]])
    split = leave_one_out(data)
    train_items = sum(int(e - s) for s, e in zip(split.train.starts, split.train.ends))
    assert train_items + len(split.valid) + len(split.test) == data.num_actions
