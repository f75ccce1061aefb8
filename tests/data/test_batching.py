import numpy as np
import torch

from famerec.data.batching import (
    EvalBatches,
    TrainBatches,
    left_padded,
    length_classes,
    train_tensors,
)
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


def random_tensors(users=300, longest=30, max_len=16, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(1, 20, size=rng.integers(3, longest))) for _ in range(users)]
    return train_tensors(split_of(seqs).train, max_len=max_len)


def test_length_classes_double():
    lengths = torch.tensor([1, 2, 3, 4, 5, 8, 9, 16, 17, 50])
    assert length_classes(lengths).tolist() == [0, 1, 2, 2, 3, 3, 4, 4, 5, 6]


def test_batches_cover_every_row_once_in_parts_of_similar_length():
    tensors = random_tensors()
    batches = TrainBatches(tensors, batch_size=32, generator=torch.Generator().manual_seed(1))
    rows_seen = 0
    for batch in batches:
        assert batch.num_sequences <= 32
        assert batch.positions == sum(int((t != 0).sum()) for _, t in batch.parts)
        for inputs, targets in batch.parts:
            assert inputs.shape == targets.shape
            lengths = (targets != 0).sum(1)
            assert lengths.max() == inputs.shape[1]  # cut to the part's longest sequence
            assert len(set(length_classes(lengths).tolist())) == 1
            assert int((inputs != 0).sum()) == int(lengths.sum())  # nothing real was cut off
        rows_seen += batch.num_sequences
    assert rows_seen == len(tensors.lengths)
    indices = torch.cat(batches.batch_indices())
    assert sorted(indices.tolist()) == list(range(len(tensors.lengths)))


def test_batches_are_random_and_repeat_with_the_seed():
    tensors = random_tensors()
    first = TrainBatches(tensors, 32, torch.Generator().manual_seed(3)).batch_indices()
    again = TrainBatches(tensors, 32, torch.Generator().manual_seed(3)).batch_indices()
    other = TrainBatches(tensors, 32, torch.Generator().manual_seed(4)).batch_indices()
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_splitting_by_length_reduces_padding():
    tensors = random_tensors(users=2000, longest=40, max_len=50)

    def cells(**kwargs):
        batches = TrainBatches(tensors, 64, torch.Generator().manual_seed(0), **kwargs)
        return sum(t.numel() for batch in batches for _, t in batch.parts)

    assert cells(split_by_length=True) < 0.7 * cells(split_by_length=False)


def test_every_layout_gives_the_same_loss():
    from famerec.config import ModelConfig
    from famerec.models import build_model

    tensors = random_tensors(max_len=12)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=16, max_len=12, dropout=0.0), 20)
    rows = torch.arange(40)
    losses = []
    for kwargs in ({}, {"split_by_length": False}, {"pad_to_max_len": True}):
        batches = TrainBatches(tensors, 40, torch.Generator(), **kwargs)
        batch = batches.batch(rows)
        losses.append(model.loss(batch))
    assert len(TrainBatches(tensors, 40, torch.Generator()).batch(rows).parts) > 1
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(losses[0], losses[2])


def test_pad_to_max_len_reference_layout():
    tensors = train_tensors(split_of([[1, 2, 3, 4, 5]] * 3).train, max_len=8)
    batches = TrainBatches(tensors, 2, torch.Generator().manual_seed(0), pad_to_max_len=True)
    assert all(len(b.parts) == 1 and b.parts[0][0].shape[1] == 8 for b in batches)


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
