"""The batched sequence augmentations of CL4SRec (crop, mask, reorder) and view helpers."""

import pytest
import torch

from famerec.data.batching import TrainBatch
from famerec.models.augment import (
    CROP,
    MASK,
    REORDER,
    augment,
    batch_sequences,
    crop,
    encode_by_length,
    mask,
    reorder,
    sequence_lengths,
)
from tests.models.contrastive_checks import NUM_ITEMS, tiny_batch

MASK_ID = NUM_ITEMS + 1


def items_of(row: torch.Tensor) -> list[int]:
    """A left-padded row's items from its first one on (inner zeros kept)."""
    nonzero = (row != 0).nonzero()
    return row[int(nonzero[0]) :].tolist() if len(nonzero) else []


@pytest.fixture
def sequences() -> torch.Tensor:
    torch.manual_seed(0)
    inputs, _ = tiny_batch(rows=200, width=12)
    return inputs


def test_lengths_count_from_the_first_item():
    seq = torch.tensor([[0, 0, 3, 0, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 7]])
    assert sequence_lengths(seq).tolist() == [3, 5, 1]


@pytest.mark.parametrize("ratio", [0.2, 0.6, 1.0])
def test_crop_keeps_a_contiguous_run_of_the_right_length(sequences, ratio):
    views = crop(sequences, ratio)
    for row, view in zip(sequences, views):
        items, kept = items_of(row), items_of(view)
        assert len(kept) == max(1, int(ratio * len(items)))
        starts = [i for i in range(len(items)) if items[i : i + len(kept)] == kept]
        assert starts, (items, kept)
    assert (views[:, -1] != 0).all()  # left-padded again: the last column is real


def test_crop_start_is_uniform_over_valid_starts():
    torch.manual_seed(0)
    seq = torch.arange(1, 11).repeat(3000, 1)  # 10 items, keep 6: starts 0..4
    firsts = crop(seq, 0.6)[:, -6]
    counts = torch.bincount(firsts - 1, minlength=5)
    assert len(counts) == 5 and counts.min() > 500


@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_mask_replaces_the_right_number_of_items(sequences, ratio):
    views = mask(sequences, ratio, MASK_ID)
    for row, view in zip(sequences, views):
        items, masked = items_of(row), items_of(view)
        assert len(masked) == len(items)
        assert sum(m == MASK_ID for m in masked) == int(ratio * len(items))
        assert all(m in (a, MASK_ID) for a, m in zip(items, masked))
    assert ((sequences == 0) == (views == 0)).all()  # padding stays padding


def test_mask_with_padding_keeps_a_real_item(sequences):
    views = mask(sequences, 0.7, 0)
    for row, view in zip(sequences, views):
        length = len(items_of(row))
        assert int((view != 0).sum()) == length - int(0.7 * length) >= 1


def test_reorder_shuffles_one_window_in_place(sequences):
    views = reorder(sequences, 0.6)
    for row, view in zip(sequences, views):
        items, shuffled = items_of(row), items_of(view)
        assert sorted(items) == sorted(shuffled) and len(items) == len(shuffled)
        changed = [i for i, (a, b) in enumerate(zip(items, shuffled)) if a != b]
        if changed:  # every moved item lies inside one window of floor(0.6 n) items
            assert changed[-1] - changed[0] < int(0.6 * len(items))
    assert ((sequences == 0) == (views == 0)).all()
    assert not torch.equal(views, sequences)


def test_augment_applies_the_chosen_operation_per_row(sequences):
    choice = torch.tensor([CROP, MASK, REORDER]).repeat(len(sequences) // 3 + 1)[: len(sequences)]
    torch.manual_seed(3)
    views = augment(sequences, choice, 0.6, 0.3, 0.6, MASK_ID)
    torch.manual_seed(3)
    expected = [crop(sequences, 0.6), mask(sequences, 0.3, MASK_ID), reorder(sequences, 0.6)]
    for row, op in enumerate(choice.tolist()):
        assert torch.equal(views[row], expected[op][row])
    ids = views[views != 0]
    assert ((ids >= 1) & (ids <= MASK_ID)).all()


def test_augmentations_repeat_under_the_same_seed(sequences):
    def draw():
        torch.manual_seed(7)
        return crop(sequences, 0.6), mask(sequences, 0.3, MASK_ID), reorder(sequences, 0.6)

    assert all(torch.equal(a, b) for a, b in zip(draw(), draw()))


def test_single_items_are_left_as_they_are():
    seq = torch.tensor([[0, 0, 0, 4], [0, 0, 0, 9]])
    for view in (crop(seq, 0.6), mask(seq, 0.3, MASK_ID), reorder(seq, 0.6)):
        assert torch.equal(view, seq)


def test_batch_sequences_pads_parts_to_one_width():
    short = (torch.tensor([[3]]), torch.tensor([[4]]))
    long = (torch.tensor([[1, 2, 3], [0, 5, 6]]), torch.tensor([[2, 3, 4], [0, 6, 7]]))
    sequences, targets = batch_sequences(TrainBatch((short, long), 5))
    assert sequences.tolist() == [[0, 0, 3], [1, 2, 3], [0, 5, 6]]
    assert targets[:, -1].tolist() == [4, 4, 7]


def test_encode_by_length_keeps_row_order():
    seq = torch.tensor([[0, 0, 0, 1], [5, 6, 7, 8], [0, 0, 2, 3], [0, 9, 9, 9]])
    widths = encode_by_length(lambda s: torch.full((len(s), 1), s.shape[1]), seq)
    assert widths.squeeze(1).tolist() == [1, 4, 2, 4]  # groups 1, 2, 3-4 cut to their longest
    firsts = encode_by_length(lambda s: s[:, -1:], seq)
    assert firsts.squeeze(1).tolist() == [1, 8, 3, 9]
