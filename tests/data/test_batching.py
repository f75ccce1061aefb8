import numpy as np
import torch

from famerec.data.batching import EvalBatches, TrainBatches, left_padded, train_tensors
from famerec.data.sequences import from_user_sequences
from famerec.data.split import leave_one_out


def split_of(seqs, num_items=20):
    data = from_user_sequences(
        "t", np.arange(len(seqs)), [np.array(s) for s in seqs], np.arange(1, num_items + 1)
    )
    return leave_one_out(data)


def test_left_padding_keeps_most_recent_items():
    items = np.array([1, 2, 3, 4, 5, 6, 7])
    out = left_padded(items, np.array([0, 5]), np.array([5, 7]), width=3)
    assert out.tolist() == [[3, 4, 5], [0, 6, 7]]


def test_train_targets_are_next_items_with_no_loss_at_padding():
    split = split_of([[1, 2, 3, 4, 5, 6], [7, 8, 9]])
    tensors = train_tensors(split.train, max_len=5)
    # user 0 trains on [1, 2, 3, 4]: inputs 1 2 3 -> targets 2 3 4
    assert tensors.inputs[0].tolist() == [0, 0, 1, 2, 3]
    assert tensors.targets[0].tolist() == [0, 0, 2, 3, 4]
    # user 1 trains on [7] alone: no positions, dropped
    assert len(tensors.lengths) == 1 and tensors.num_positions == 3


def test_train_truncates_to_max_len():
    split = split_of([list(range(1, 13))])
    tensors = train_tensors(split.train, max_len=4)  # trains on 1..10
    assert tensors.inputs[0].tolist() == [6, 7, 8, 9]
    assert tensors.targets[0].tolist() == [7, 8, 9, 10]


def test_batches_cover_every_row_once_and_cut_to_longest():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 20, size=rng.integers(3, 30))) for _ in range(300)]
    tensors = train_tensors(split_of(seqs).train, max_len=16)
    for bucketing in (True, False):
        batches = TrainBatches(
            tensors, batch_size=32, generator=torch.Generator().manual_seed(1), bucketing=bucketing
        )
        seen = []
        for inputs, targets in batches:
            assert inputs.shape == targets.shape and inputs.shape[0] <= 32
            real = targets != 0
            # no batch is wider than its longest sequence, and nothing real was cut off
            assert real[:, 0].any()
            assert int(real.sum()) == int((inputs != 0).sum())
            seen.append(inputs.shape[0])
        assert sum(seen) == len(tensors.lengths)
        indices = torch.cat(batches.batch_indices())
        assert sorted(indices.tolist()) == list(range(len(tensors.lengths)))


def test_bucketing_reduces_padding():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 20, size=rng.integers(3, 40))) for _ in range(2000)]
    tensors = train_tensors(split_of(seqs).train, max_len=50)

    def padded_cells(bucketing):
        batches = TrainBatches(tensors, 64, torch.Generator().manual_seed(0), bucketing=bucketing)
        return sum(t.numel() for _, t in batches)

    assert padded_cells(True) < 0.7 * padded_cells(False)


def test_pad_to_max_len_reference_layout():
    tensors = train_tensors(split_of([[1, 2, 3, 4, 5]] * 3).train, max_len=8)
    batches = TrainBatches(tensors, 2, torch.Generator().manual_seed(0), pad_to_max_len=True)
    assert all(inputs.shape[1] == 8 for inputs, _ in batches)


def test_eval_batches_carry_the_whole_history_for_exclusion():
    split = split_of([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]])
    batches = list(EvalBatches(split.test, max_len=3, batch_size=8))
    assert len(batches) == 1
    batch = batches[0]
    by_target = {int(t): i for i, t in enumerate(batch.targets)}
    row = by_target[7]
    assert batch.inputs[row].tolist() == [4, 5, 6]
    seen = batch.seen_items[batch.seen_rows == row].tolist()
    assert seen == [1, 2, 3, 4, 5, 6]
    short = by_target[10]
    assert batch.inputs[short].tolist() == [0, 8, 9]
