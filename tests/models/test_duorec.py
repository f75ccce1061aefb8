import torch

import famerec
from famerec.data.batching import TrainBatch, TrainBatches, TrainTensors
from famerec.models.augment import batch_sequences
from famerec.models.base import EpochContext
from famerec.models.duorec import DuoRec, PositivePool
from tests.models.contrastive_checks import (
    NUM_ITEMS,
    check_causal,
    check_help,
    check_padding,
    check_scores,
    check_trained_run,
    tiny_batch,
    tiny_model,
    train_tiny,
)


def training_set(rows: int = 200, width: int = 8) -> TrainTensors:
    """Random training rows over few distinct items, so that next items repeat."""
    inputs, targets = tiny_batch(rows=rows, width=width, seed=3)
    inputs, targets = inputs % 7 + (inputs != 0), targets % 7 + (targets != 0)  # items 1..7
    return TrainTensors(inputs, targets, (targets != 0).sum(1))


def test_positives_share_the_next_item_and_differ_from_the_anchor():
    train = training_set()
    pool = PositivePool(train.inputs, train.targets, NUM_ITEMS)
    prefixes = pool.prefix_sequences(torch.arange(len(pool.prefixes)))  # (P, L) all of them
    next_items = train.targets.flatten()[pool.prefixes]  # (P,)
    anchors, anchor_next = train.inputs, train.targets[:, -1]
    torch.manual_seed(0)
    positives = pool.sample(anchors, anchor_next)
    others = 0
    for anchor, positive, item in zip(anchors, positives, anchor_next):
        same = (prefixes == positive).all(1)  # the pool prefixes equal to the positive
        assert (next_items[same] == item).any()  # one of them is followed by the anchor's item
        candidates = prefixes[next_items == item]
        if len(candidates) > 1 and int((candidates == anchor).all(1).sum()) == 1:
            assert not torch.equal(positive, anchor)  # the anchor is drawn only as a last resort
            others += 1
    assert others > len(anchors) // 2


def test_prefixes_are_the_training_rows_cut_before_each_target():
    inputs = torch.tensor([[0, 5, 6, 7], [0, 0, 0, 9]])
    targets = torch.tensor([[0, 6, 7, 8], [0, 0, 0, 6]])
    pool = PositivePool(inputs, targets, 9)
    prefixes = pool.prefix_sequences(torch.arange(4)).tolist()
    assert prefixes[:2] == [[0, 0, 0, 5], [0, 0, 0, 9]]  # next item 6, in row order
    assert prefixes[2:] == [[0, 0, 5, 6], [0, 5, 6, 7]]  # next items 7 and 8
    # 9 never follows anything and 8 only follows the anchor itself: both are their own
    anchors = torch.tensor([[0, 0, 0, 1], [0, 5, 6, 7]])
    assert pool.sample(anchors, torch.tensor([9, 8])).tolist() == anchors.tolist()


def first_batch(model: DuoRec, train: TrainTensors) -> TrainBatch:
    model.on_epoch_start(EpochContext(1, train, torch.device("cpu"), 32))
    return next(iter(TrainBatches(train, 32, torch.Generator().manual_seed(0))))


def test_with_anchor_last_the_views_are_the_whole_sequence_and_its_positive():
    model, train = tiny_model("duorec", anchor="last"), training_set()
    batch = first_batch(model, train)
    views = model.transform_batch(batch)
    assert views.first.shape[0] == views.second.shape[0] == batch.num_sequences
    parts = torch.cat([inputs[:, -1] for inputs, _ in batch.parts])
    assert torch.equal(views.first[:, -1], parts)  # the unsupervised view: the sequence itself
    assert torch.equal(views.last_targets, torch.cat([t[:, -1] for _, t in batch.parts]))


def test_anchors_are_random_prefixes_of_each_sequence_with_their_next_item():
    model, train = tiny_model("duorec"), training_set()
    batch = first_batch(model, train)
    torch.manual_seed(0)
    views = model.transform_batch(batch)
    sequences, targets = batch_sequences(batch)
    width = sequences.shape[1]
    ends = []
    for sequence, target, anchor, item in zip(sequences, targets, views.first, views.last_targets):
        length = int((anchor != 0).sum())
        # the anchor is the sequence cut after one of its columns, right-aligned
        end = next(
            e
            for e in range(length - 1, width)
            if torch.equal(sequence[e - length + 1 : e + 1], anchor[width - length :])
        )
        assert target[end] == item != 0  # its next item is the target at that column
        ends.append(width - 1 - end)
    assert len(set(ends)) > 2  # not always the whole sequence: spread over the prefixes


def test_sequences_with_the_same_next_item_are_not_negatives():
    inputs, targets = tiny_batch(rows=16)
    targets[targets != 0] = 5  # every prefix of the batch is followed by item 5
    torch.manual_seed(0)
    excluded = tiny_model("duorec").train().loss((inputs, targets))
    assert excluded["cl"] == 0  # each view's only candidate is its partner
    torch.manual_seed(0)
    kept = tiny_model("duorec", exclude_same_target=False).train().loss((inputs, targets))
    assert kept["cl"] > 0
    torch.testing.assert_close(kept["next_item"], excluded["next_item"])


def test_causal_padding_and_scores():
    model = tiny_model("duorec")
    check_causal(model)
    check_padding(model, model.last_query_vectors)
    check_scores(model)


def test_trains_serves_and_recommends(seq_file, tmp_path):
    records = train_tiny("duorec", seq_file, tmp_path / "run")
    check_trained_run(tmp_path / "run", records, {"next_item", "cl"})
    assert isinstance(famerec.load(tmp_path / "run").model, DuoRec)


def test_help_shows_its_flags(capsys):
    check_help("duorec", ["--cl-weight", "--temperature", "--no-exclude-same-target"], capsys)


def test_single_part_batches_work_without_a_training_pool():
    model = tiny_model("duorec").train()
    inputs, targets = tiny_batch()
    losses = model.loss(TrainBatch(((inputs, targets),), int((targets != 0).sum())))
    assert set(losses) == {"next_item", "cl"} and torch.isfinite(losses["cl"])
